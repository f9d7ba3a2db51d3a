//! Opaque keyset cursors: the position after the last row of a page, `(time, id)`, in a form
//! clients cannot mistake for something to build themselves.
//!
//! Layout: hex of 17 bytes: one byte naming the list (so a cursor of one list is refused by the
//! other), the time in microseconds since the epoch (big-endian i64, PostgreSQL's precision),
//! the row id (big-endian i64).

use chrono::{DateTime, Utc};

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Anomalies,
    ReceivedAlerts,
}

impl List {
    fn tag(self) -> u8 {
        match self {
            List::Anomalies => b'a',
            List::ReceivedAlerts => b'r',
        }
    }
}

/// A position in a list ordered newest first by `(at, id)`; the next page holds the rows
/// strictly before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    pub fn encode(&self, list: List) -> String {
        let mut bytes = Vec::with_capacity(17);
        bytes.push(list.tag());
        bytes.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(&self.id.to_be_bytes());
        hex::encode(bytes)
    }

    pub fn decode(list: List, s: &str) -> Result<Self, &'static str> {
        const BAD: &str = "is not a cursor this list returned; pass next_cursor unchanged";
        let bytes = hex::decode(s.trim()).map_err(|_| BAD)?;
        if bytes.len() != 17 || bytes[0] != list.tag() {
            return Err(BAD);
        }
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&bytes[1..9]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[9..17]);
        let at = DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or(BAD)?;
        Ok(Cursor { at, id: i64::from_be_bytes(id) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_at_microsecond_precision() {
        let at = DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap();
        let c = Cursor { at, id: 42 };
        let s = c.encode(List::Anomalies);
        assert_eq!(s.len(), 34);
        assert_eq!(Cursor::decode(List::Anomalies, &s), Ok(c));
    }

    #[test]
    fn a_cursor_of_the_other_list_or_garbage_is_refused() {
        let c = Cursor { at: DateTime::from_timestamp_micros(0).unwrap(), id: 1 };
        assert!(Cursor::decode(List::ReceivedAlerts, &c.encode(List::Anomalies)).is_err());
        assert!(Cursor::decode(List::Anomalies, "zz").is_err());
        assert!(Cursor::decode(List::Anomalies, "61").is_err());
        assert!(Cursor::decode(List::Anomalies, "").is_err());
    }
}
