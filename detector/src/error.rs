/// Failures of the detector service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("an output was not acknowledged: {0}")]
    Delivery(String),
    #[error("encoding: {0}")]
    Encode(#[from] vigil_schemas::Error),
    #[error("checkpoint of {topic}[{partition}]: {reason}")]
    Checkpoint { topic: String, partition: i32, reason: String },
    #[error("{0}")]
    Fatal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
