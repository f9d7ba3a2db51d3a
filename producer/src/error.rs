/// Failures of the producer library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the broker did not acknowledge within {0:?}")]
    AckTimeout(std::time::Duration),
    #[error("the broker refused the event: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error("too many events in flight")]
    Overloaded,
    #[error("encoding failed: {0}")]
    Encode(#[from] vigil_schemas::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
