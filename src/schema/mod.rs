//! The canonical event: the schema registry (one JSON Schema per version in
//! `src/schema/json/`), validation, upcasting of older versions to [`CURRENT_VERSION`]
//! ([`upcast`]), and the index fields taken from a valid current event.

pub(crate) mod fast;
pub mod upcast;

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::LazyLock;

pub const CURRENT_VERSION: &str = "2.1.0";
/// The registry: every version's JSON Schema, oldest first.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("1.0", include_str!("json/event-1.0.schema.json")),
    ("2.0", include_str!("json/event-2.0.schema.json")),
    ("2.1.0", include_str!("json/event-2.1.0.schema.json")),
];

/// A line or event that cannot be stored, and why. `message` may quote the input, so it is
/// only ever kept encrypted (quarantine); `code` and `path` are safe to print and log.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub code: String,
    /// JSON pointer into the event where the problem is (no values).
    pub path: String,
    pub message: String,
    pub schema_version: String,
}

impl Reject {
    pub fn new(
        code: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Reject {
            code: code.into(),
            path: path.into(),
            message: message.into(),
            schema_version: CURRENT_VERSION.into(),
        }
    }
}

/// The plaintext index fields of one valid event.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFields {
    pub event_id: String,
    pub interaction_id: String,
    pub tenant_id: String,
    pub source_platform: String,
    pub state: String,
    pub direction: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub interaction_type: String,
    pub queue_id: Option<String>,
    /// Agent identities (address, else participant id) of AGENT participants. Agents are the
    /// firm's staff; customer addresses never leave the encrypted payload.
    pub agent_ids: Vec<String>,
    /// Addresses of every participant but the agents (whose identities are in `agent_ids`):
    /// input to the blind index only.
    pub addresses: Vec<String>,
    pub wrap_up_code: Option<String>,
    pub disposition: Option<String>,
    pub schema_version: String,
}

pub struct Validator {
    by_version: Vec<(&'static str, jsonschema::Validator)>,
}

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| Validator {
    by_version: SCHEMAS
        .iter()
        .map(|(v, text)| {
            let schema: Value = serde_json::from_str(text).expect("bundled schema is JSON");
            (
                *v,
                jsonschema::validator_for(&schema).expect("bundled schema compiles"),
            )
        })
        .collect(),
});

/// A valid event: its index fields and, when it came in an older version, the event upcast
/// to the current one (whose serialization is then the stored record).
#[derive(Debug)]
pub struct Checked {
    pub fields: IndexFields,
    pub upcast: Option<Value>,
}

pub fn validator() -> &'static Validator {
    &VALIDATOR
}

impl Validator {
    fn get(&self, version: &str) -> Option<&jsonschema::Validator> {
        self.by_version
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, s)| s)
    }

    pub fn is_valid_as(&self, version: &str, event: &Value) -> bool {
        self.get(version).is_some_and(|s| s.is_valid(event))
    }

    fn validate_as(&self, version: &str, event: &Value) -> Result<(), Reject> {
        let schema = self.get(version).expect("known version");
        if schema.is_valid(event) {
            return Ok(());
        }
        let err = schema.validate(event).expect_err("invalid");
        let mut r = Reject::new(
            format!("schema.{}", err.kind().keyword()),
            err.instance_path().to_string(),
            err.to_string(),
        );
        r.schema_version = version.to_string();
        Err(r)
    }

    /// Validates an event against its version's schema, upcasts it to the current version,
    /// and extracts its index fields.
    pub fn check(&self, event: &Value) -> Result<Checked, Reject> {
        self.check_as(event, None)
    }

    /// As [`Validator::check`], but with `version` set every event is taken to be of that
    /// version, whatever it declares (a drift probe: what would version V accept?).
    pub fn check_as(&self, event: &Value, version: Option<&str>) -> Result<Checked, Reject> {
        if !event.is_object() {
            return Err(Reject::new(
                "json.not_object",
                "",
                "an event must be a JSON object",
            ));
        }
        let version = version
            .map(str::to_string)
            .or_else(|| upcast::detect(event))
            .unwrap_or_else(|| CURRENT_VERSION.to_string());
        if self.get(&version).is_none() {
            let mut r = Reject::new(
                "schema.unsupported_version",
                "/interaction/schemaVersion",
                format!(
                    "schema version {version} is not in the registry ({})",
                    upcast::VERSIONS.join(", ")
                ),
            );
            r.schema_version = version_label(&version);
            return Err(r);
        }
        self.validate_as(&version, event)?;
        if version == CURRENT_VERSION {
            return Ok(Checked {
                fields: extract(event)?,
                upcast: None,
            });
        }
        let up = upcast::to_current(event.clone(), &version);
        self.validate_as(CURRENT_VERSION, &up).map_err(|mut r| {
            r.code = "schema.upcast".into();
            r.message = format!(
                "upcast from {version} does not validate as {CURRENT_VERSION}: {}",
                r.message
            );
            r
        })?;
        Ok(Checked {
            fields: extract(&up)?,
            upcast: Some(up),
        })
    }
}

/// A declared schema version as quarantine may record it in plaintext: the value itself when
/// it looks like a version (`1.0`, `2.1.0`: two or three dot-separated numbers of 1 to 4
/// digits, at most 8 digits in all), else `invalid` (the field may hold anything, such as a
/// phone number).
pub fn version_label(declared: &str) -> String {
    let parts: Vec<&str> = declared.split('.').collect();
    let digits: usize = parts.iter().map(|p| p.len()).sum();
    let looks_like_a_version = (2..=3).contains(&parts.len())
        && digits <= 8
        && parts
            .iter()
            .all(|p| (1..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if looks_like_a_version {
        declared.to_string()
    } else {
        "invalid".to_string()
    }
}

/// `v[k0][k1]…` as a string (direct lookups: `Value::pointer` allocates per token).
fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path).and_then(Value::as_str).map(str::to_string)
}

fn extract(e: &Value) -> Result<IndexFields, Reject> {
    let occurred = get(e, &["occurredAt"])
        .and_then(Value::as_str)
        .unwrap_or_default();
    let occurred_at = DateTime::parse_from_rfc3339(occurred)
        .map_err(|err| {
            Reject::new(
                "event.timestamp",
                "/occurredAt",
                format!("occurredAt is not a valid RFC 3339 time: {err}"),
            )
        })?
        .to_utc();
    let i = e.get("interaction").unwrap_or(&Value::Null);
    let routing = i.get("routingMetadata").unwrap_or(&Value::Null);
    let agent_ids = i
        .get("participants")
        .and_then(Value::as_array)
        .map(|ps| {
            let mut ids: Vec<String> = ps
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("AGENT"))
                .filter_map(|p| {
                    // an empty address is no identity: the participant id stands in
                    let given = |k: &str| {
                        p.get(k)
                            .and_then(Value::as_str)
                            .filter(|s| !s.trim().is_empty())
                    };
                    given("address").or_else(|| given("participantId"))
                })
                .map(str::to_string)
                .collect();
            ids.dedup();
            ids
        })
        .unwrap_or_default();
    let addresses = i
        .get("participants")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("type").and_then(Value::as_str) != Some("AGENT"))
                .filter_map(|p| p.get("address").and_then(Value::as_str))
                .filter(|a| !a.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(IndexFields {
        addresses,
        event_id: s(e, &["eventId"]).unwrap_or_default(),
        interaction_id: s(i, &["interactionId"]).unwrap_or_default(),
        tenant_id: s(e, &["tenantId"]).unwrap_or_default(),
        source_platform: s(e, &["sourcePlatform"]).unwrap_or_default(),
        state: s(e, &["state"]).unwrap_or_default(),
        direction: s(i, &["direction"]),
        occurred_at,
        interaction_type: s(i, &["interactionType"]).unwrap_or_default(),
        queue_id: s(routing, &["queueId"]),
        agent_ids,
        wrap_up_code: s(routing, &["wrapUpCode"]),
        disposition: s(routing, &["disposition"]),
        schema_version: s(i, &["schemaVersion"]).unwrap_or_else(|| CURRENT_VERSION.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "eventId": "e-1", "eventType": "INTERACTION", "state": "COMPLETED", "sourcePlatform": "GENESYS_CX",
            "tenantId": "t-1", "occurredAt": "2024-05-14T09:24:45.800Z",
            "interaction": {
                "schemaVersion": "2.1.0", "interactionId": "i-1", "interactionType": "CALL", "direction": "INBOUND",
                "routingMetadata": {"queueId": "q_1", "queueName": "Lending", "wrapUpCode": "CASE_CLOSED", "disposition": "TRANSFERRED"},
                "participants": [
                    {"participantId": "p1", "type": "CUSTOMER", "address": "+15550198765", "joinedTimestamp": "2024-05-14T09:23:05.100Z", "leftTimestamp": null},
                    {"participantId": "p2", "type": "AGENT", "address": "agent_jdoe@genesys.cloud", "joinedTimestamp": "2024-05-14T09:23:10.200Z"}
                ],
                "notes": "kept, not indexed", "vendorExtra": {"x": 1}
            }
        })
    }

    #[test]
    fn extracts_index_fields() {
        let f = validator().check(&event()).unwrap().fields;
        assert_eq!(f.event_id, "e-1");
        assert_eq!(f.agent_ids, vec!["agent_jdoe@genesys.cloud"]);
        assert_eq!(f.queue_id.as_deref(), Some("q_1"));
        assert_eq!(f.occurred_at.timestamp_millis(), 1715678685800);
        assert_eq!(f.interaction_type, "CALL");
    }

    #[test]
    fn rejects_with_safe_code_and_path() {
        let mut e = event();
        e["interaction"]["participants"][0]
            .as_object_mut()
            .unwrap()
            .remove("participantId");
        let r = validator().check(&e).unwrap_err();
        assert_eq!(r.code, "schema.required");
        assert_eq!(r.path, "/interaction/participants/0");
        let mut e = event();
        e["state"] = json!("DELETED");
        assert_eq!(validator().check(&e).unwrap_err().code, "schema.enum");
        let mut e = event();
        e["interaction"]["schemaVersion"] = json!("0.9");
        let r = validator().check(&e).unwrap_err();
        assert_eq!(
            (r.code.as_str(), r.schema_version.as_str()),
            ("schema.unsupported_version", "0.9")
        );
        let mut e = event();
        e["interaction"]["schemaVersion"] = json!("1.0");
        let r = validator().check(&e).unwrap_err();
        assert_eq!(
            r.schema_version, "1.0",
            "a 2.1.0 shape declared as 1.0 fails the 1.0 schema"
        );
        let mut e = event();
        e["occurredAt"] = json!("2024-13-14T09:24:45Z");
        assert_eq!(validator().check(&e).unwrap_err().code, "event.timestamp");
        assert_eq!(
            validator().check(&json!([1])).unwrap_err().code,
            "json.not_object"
        );
    }

    #[test]
    fn an_agent_without_an_address_is_indexed_by_participant_id() {
        let mut e = event();
        e["interaction"]["participants"][1]["address"] = json!("");
        let f = validator().check(&e).unwrap().fields;
        assert_eq!(f.agent_ids, vec!["p2"]);
        e["interaction"]["participants"][1]["address"] = json!("  ");
        assert_eq!(validator().check(&e).unwrap().fields.agent_ids, vec!["p2"]);
        e["interaction"]["participants"][1]["address"] = json!(null);
        assert_eq!(validator().check(&e).unwrap().fields.agent_ids, vec!["p2"]);
    }

    #[test]
    fn only_version_shaped_values_are_kept_in_plaintext() {
        for (declared, kept) in [
            ("0.9", "0.9"),
            ("3.0.1", "3.0.1"),
            ("2024.10", "2024.10"),
            ("+15551234567", "invalid"),
            ("15551234567", "invalid"),
            ("555.123.4567", "invalid"),
            ("1", "invalid"),
            ("1.2.3.4", "invalid"),
            ("v2.0", "invalid"),
            ("", "invalid"),
        ] {
            assert_eq!(version_label(declared), kept, "{declared}");
            let mut e = event();
            e["interaction"]["schemaVersion"] = json!(declared);
            let r = validator().check(&e).unwrap_err();
            assert_eq!(
                (r.code.as_str(), r.schema_version.as_str()),
                ("schema.unsupported_version", kept),
                "{declared}"
            );
        }
    }

    #[test]
    fn other_media_types_are_kept_with_their_own_type() {
        let mut e = event();
        e["interaction"]["interactionType"] = json!("VIDEO");
        assert_eq!(
            validator().check(&e).unwrap().fields.interaction_type,
            "VIDEO"
        );
    }
}
