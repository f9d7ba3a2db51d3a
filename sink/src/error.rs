/// Failures of the sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("dead-letter delivery failed: {0}")]
    DeadLetter(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
