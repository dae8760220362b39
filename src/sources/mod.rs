//! Sources: pure functions from the bytes of one landed line to canonical events.
//! The set of sources is closed ([`SourceKind`]); each vendor adapter is a variant with a
//! `decode` arm, tested on fixtures against golden canonical output (`fixtures/<shape>/`).

mod connect;
mod genesys;
mod nice;
mod vendor;

use crate::schema::{IndexFields, Reject};
use serde_json::Value;
use std::borrow::Cow;

/// Lines larger than this are quarantined unparsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum SourceKind {
    /// holdfast's canonical envelope, one JSON object per line (schema 2.1.0 or older).
    Canonical,
    /// Genesys Cloud analytics conversation detail records.
    GenesysDetails,
    /// Genesys Cloud detail events delivered through Amazon EventBridge.
    GenesysEventbridge,
    /// NICE CXone Reporting API completed contacts.
    NiceContacts,
    /// Amazon Connect contact trace records.
    ConnectCtr,
    /// Recognise the shape of each line.
    Auto,
}

/// A canonical event decoded from a line, with the bytes to store as its canonical record.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub event: Value,
    /// The exact bytes sealed into the payload and hashed into `record_hash`.
    pub record: Cow<'a, [u8]>,
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Canonical,
        SourceKind::GenesysDetails,
        SourceKind::GenesysEventbridge,
        SourceKind::NiceContacts,
        SourceKind::ConnectCtr,
        SourceKind::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Canonical => "canonical",
            SourceKind::GenesysDetails => "genesys-details",
            SourceKind::GenesysEventbridge => "genesys-eventbridge",
            SourceKind::NiceContacts => "nice-contacts",
            SourceKind::ConnectCtr => "connect-ctr",
            SourceKind::Auto => "auto",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The shape of a parsed line, for `auto`.
    pub fn recognise(v: &Value) -> Option<SourceKind> {
        let has = |k: &str| v.get(k).is_some();
        if has("detail-type") && has("detail") {
            Some(SourceKind::GenesysEventbridge)
        } else if has("conversationId") && has("participants")
            || v.get("conversations").is_some_and(Value::is_array)
        {
            Some(SourceKind::GenesysDetails)
        } else if has("contactId")
            && (has("masterContactId") || has("mediaType") || has("contactStart"))
            || v.get("completedContacts").is_some_and(Value::is_array)
        {
            Some(SourceKind::NiceContacts)
        } else if has("ContactId")
            && (has("Channel")
                || has("InitiationMethod")
                || has("AWSContactTraceRecordFormatVersion"))
        {
            Some(SourceKind::ConnectCtr)
        } else if has("eventId") && has("interaction") {
            Some(SourceKind::Canonical)
        } else {
            None
        }
    }

    /// The index fields of a line the fast path takes ([`crate::schema::fast`]): a valid
    /// canonical event of the current version, whose stored record is the line itself, as
    /// [`SourceKind::decode`] and the validator would make them. `None` sends the line the
    /// slow path, which decides (and names the error when there is one).
    pub(crate) fn decode_fast(self, line: &[u8]) -> Option<IndexFields> {
        let auto = match self {
            SourceKind::Canonical => false,
            SourceKind::Auto => true,
            _ => return None,
        };
        if line.len() > MAX_LINE_BYTES {
            return None;
        }
        crate::schema::fast::check(line, auto)
    }

    /// Decodes one line. `tenant` is the source's configured tenant, for shapes that carry
    /// none. Never panics on any input.
    pub fn decode<'a>(
        self,
        line: &'a [u8],
        tenant: Option<&str>,
    ) -> Result<Vec<Decoded<'a>>, Reject> {
        if line.len() > MAX_LINE_BYTES {
            return Err(Reject::new(
                "event.too_large",
                "",
                format!(
                    "line is {} bytes; the limit is {MAX_LINE_BYTES}",
                    line.len()
                ),
            ));
        }
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| Reject::new("json.parse", "", format!("not JSON: {e}")))?;
        let kind = match self {
            SourceKind::Auto => Self::recognise(&value).ok_or_else(|| {
                Reject::new(
                    "source.unknown_shape",
                    "",
                    "the line matches no known source shape",
                )
            })?,
            k => k,
        };
        if kind == SourceKind::Canonical {
            return Ok(vec![Decoded {
                event: value,
                record: Cow::Borrowed(line),
            }]);
        }
        if !value.is_object() {
            return Err(Reject::new(
                "json.not_object",
                "",
                format!("a {} line must be a JSON object", kind.name()),
            ));
        }
        // whole API responses: one event per element
        let items: Vec<&Value> = match (
            kind,
            value.get("conversations"),
            value.get("completedContacts"),
        ) {
            (SourceKind::GenesysDetails, Some(Value::Array(a)), _)
            | (SourceKind::NiceContacts, _, Some(Value::Array(a))) => a.iter().collect(),
            _ => vec![&value],
        };
        items
            .into_iter()
            .map(|item| {
                let event = match kind {
                    SourceKind::GenesysDetails => genesys::details(item, tenant),
                    SourceKind::GenesysEventbridge => genesys::eventbridge(item, tenant),
                    SourceKind::NiceContacts => nice::contact(item, tenant),
                    SourceKind::ConnectCtr => connect::record(item, tenant),
                    SourceKind::Canonical | SourceKind::Auto => unreachable!("handled above"),
                }?;
                let record = serde_json::to_vec(&event).expect("a JSON value serializes");
                Ok(Decoded {
                    event,
                    record: Cow::Owned(record),
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests read and bless fixture files of the repository
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for k in SourceKind::ALL {
                let _ = k.decode(&bytes, Some("t"));
            }
        }
    }

    /// Runs every vendor fixture through its adapter (and through `auto`) and the schema, and
    /// compares with `fixtures/<shape>/expected.ndjson`. `HOLDFAST_BLESS=1` rewrites the golden
    /// files; review their diff before committing.
    #[test]
    fn adapters_match_golden_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        #[allow(clippy::disallowed_methods)] // a test's own switch to rewrite its golden files
        let bless = std::env::var("HOLDFAST_BLESS").is_ok();
        for kind in [
            SourceKind::GenesysDetails,
            SourceKind::GenesysEventbridge,
            SourceKind::NiceContacts,
            SourceKind::ConnectCtr,
        ] {
            let dir = root.join(kind.name());
            let input = std::fs::read_to_string(dir.join("input.ndjson")).unwrap();
            let mut out = String::new();
            for (n, line) in input.lines().enumerate() {
                let run = |k: SourceKind| -> serde_json::Value {
                    match k.decode(line.as_bytes(), Some("tenant-fixture")) {
                        Err(r) if r.path.is_empty() => {
                            serde_json::json!({"line": n + 1, "reject": r.code})
                        }
                        Err(r) => {
                            serde_json::json!({"line": n + 1, "reject": r.code, "path": r.path})
                        }
                        Ok(decoded) => {
                            let events: Vec<serde_json::Value> = decoded
                                .into_iter()
                                .map(|d| match crate::schema::validator().check(&d.event) {
                                    Err(r) => serde_json::json!({"reject": r.code, "path": r.path}),
                                    Ok(_) => {
                                        let mut e = d.event;
                                        let payload = e["interaction"]
                                            .as_object_mut()
                                            .unwrap()
                                            .remove("vendorPayload")
                                            .unwrap();
                                        assert!(
                                            payload.is_object(),
                                            "the vendor object is kept whole"
                                        );
                                        e
                                    }
                                })
                                .collect();
                            serde_json::json!({"line": n + 1, "events": events})
                        }
                    }
                };
                let direct = run(kind);
                let auto = run(SourceKind::Auto);
                if direct.get("reject").is_none() {
                    assert_eq!(
                        direct,
                        auto,
                        "{} line {}: auto recognises the shape",
                        kind.name(),
                        n + 1
                    );
                }
                out.push_str(&serde_json::to_string(&direct).unwrap());
                out.push('\n');
            }
            let golden = dir.join("expected.ndjson");
            if bless {
                std::fs::write(&golden, &out).unwrap();
            } else {
                let want = std::fs::read_to_string(&golden).unwrap_or_default();
                for (i, (got, want)) in out.lines().zip(want.lines()).enumerate() {
                    assert_eq!(got, want, "{} line {}", kind.name(), i + 1);
                }
                assert_eq!(out.lines().count(), want.lines().count(), "{}", kind.name());
            }
        }
    }

    #[test]
    fn exact_resends_share_a_key_and_updates_do_not() {
        let row = br#"{"contactId": 1, "masterContactId": 1, "contactStart": "2024-11-05T16:00:00.000Z", "mediaType": 4, "agentId": 0}"#;
        let reordered = br#"{"mediaType": 4, "agentId": 0, "contactId": 1, "masterContactId": 1, "contactStart": "2024-11-05T16:00:00.000Z"}"#;
        let updated = br#"{"contactId": 1, "masterContactId": 1, "contactStart": "2024-11-05T16:00:00.000Z", "mediaType": 4, "agentId": 7}"#;
        let id = |b: &[u8]| {
            SourceKind::NiceContacts.decode(b, Some("t")).unwrap()[0].event["eventId"].clone()
        };
        assert_eq!(id(row), id(reordered));
        assert_ne!(id(row), id(updated));
    }

    #[test]
    fn malformed_lines_get_a_code() {
        assert_eq!(
            SourceKind::Canonical
                .decode(b"{\"eventId\":", None)
                .unwrap_err()
                .code,
            "json.parse"
        );
        assert_eq!(
            SourceKind::Canonical
                .decode(&vec![b' '; MAX_LINE_BYTES + 1], None)
                .unwrap_err()
                .code,
            "event.too_large"
        );
        assert_eq!(
            SourceKind::Auto
                .decode(b"{\"hello\": 1}", None)
                .unwrap_err()
                .code,
            "source.unknown_shape"
        );
    }
}
