use std::fmt;

/// Everything that can go wrong turning events into bytes and back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("message is empty")]
    Empty,
    #[error("message is {len} bytes, too short for its {framing} header")]
    Truncated { framing: &'static str, len: usize },
    #[error("unknown framing: first byte {0:#04x} is neither 0x00 (Confluent) nor 0xC3 (Avro single-object)")]
    UnknownFraming(u8),
    #[error("unknown schema fingerprint {0}")]
    UnknownFingerprint(Hex),
    #[error("unknown schema id {0} and no schema registry to ask")]
    UnknownSchemaId(u32),
    #[error("message holds a {found}, expected a {expected}")]
    WrongType { expected: &'static str, found: &'static str },
    #[error("Avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
    #[error("{0} trailing bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("schema registry: {0}")]
    Registry(String),
}

impl From<apache_avro::Error> for Error {
    fn from(e: apache_avro::Error) -> Self {
        Error::Avro(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes shown as hex in messages.
#[derive(Debug)]
pub struct Hex(pub Vec<u8>);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
