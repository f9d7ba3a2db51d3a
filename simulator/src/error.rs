use std::fmt;

/// Everything that can go wrong in the simulator's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario file is not valid TOML or does not have the expected shape.
    #[error("scenario {name}: {message}")]
    ScenarioSyntax { name: String, message: String },
    /// The scenario parsed, but some values are wrong; every one is named.
    #[error("{0}")]
    ScenarioInvalid(ScenarioProblems),
    #[error("no built-in scenario is called {name:?} and no such file exists (built-in: {known})")]
    UnknownScenario { name: String, known: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ground truth {path}: {message}")]
    GroundTruth { path: String, message: String },
    /// The run cannot go on (e.g. the producer refuses our API key); never retried.
    #[error("{0}")]
    Fatal(String),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoding a transaction: {0}")]
    Encode(#[from] vigil_schemas::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Every problem found in one scenario, each naming its field (`categories[1].merchants[0].ln_sigma`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenarioProblems {
    pub scenario: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ScenarioProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "scenario {} is invalid ({n} problem{}):", self.scenario, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
