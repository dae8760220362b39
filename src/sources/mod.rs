//! Sources: pure functions from the bytes of one landed line to canonical events.
//! The set of sources is closed ([`SourceKind`]); a vendor adapter is one more variant with a
//! `decode` arm, tested on fixtures.

use crate::schema::Reject;
use serde_json::Value;
use std::borrow::Cow;

/// Lines larger than this are quarantined unparsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum SourceKind {
    /// holdfast's canonical envelope, one JSON object per line (schema 2.1.0).
    Canonical,
}

/// A canonical event decoded from a line, with the bytes to store as its canonical record.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub event: Value,
    /// The exact bytes sealed into the payload and hashed into `record_hash`.
    pub record: Cow<'a, [u8]>,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Canonical => "canonical",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "canonical" => Some(SourceKind::Canonical),
            _ => None,
        }
    }

    /// Decodes one line. Never panics on any input.
    pub fn decode(self, line: &[u8]) -> Result<Vec<Decoded<'_>>, Reject> {
        if line.len() > MAX_LINE_BYTES {
            return Err(Reject::new("event.too_large", "", format!("line is {} bytes; the limit is {MAX_LINE_BYTES}", line.len())));
        }
        match self {
            SourceKind::Canonical => {
                let event: Value = serde_json::from_slice(line).map_err(|e| Reject::new("json.parse", "", format!("not JSON: {e}")))?;
                Ok(vec![Decoded { event, record: Cow::Borrowed(line) }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SourceKind::Canonical.decode(&bytes);
        }
    }

    #[test]
    fn malformed_lines_get_a_code() {
        assert_eq!(SourceKind::Canonical.decode(b"{\"eventId\":").unwrap_err().code, "json.parse");
        assert_eq!(SourceKind::Canonical.decode(&vec![b' '; MAX_LINE_BYTES + 1]).unwrap_err().code, "event.too_large");
    }
}
