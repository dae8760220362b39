//! The canonical event (schema 2.1.0): its JSON Schema, validation, and the index fields
//! taken from it. Schemas live in `src/schema/json/`; older versions and their upcasters
//! slot in beside [`CURRENT_VERSION`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::LazyLock;

pub const CURRENT_VERSION: &str = "2.1.0";
pub const SCHEMA_2_1_0: &str = include_str!("json/event-2.1.0.schema.json");

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
    pub fn new(code: impl Into<String>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Reject { code: code.into(), path: path.into(), message: message.into(), schema_version: CURRENT_VERSION.into() }
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
    pub wrap_up_code: Option<String>,
    pub disposition: Option<String>,
    pub schema_version: String,
}

pub struct Validator {
    v2_1_0: jsonschema::Validator,
}

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_2_1_0).expect("bundled schema is JSON");
    Validator { v2_1_0: jsonschema::validator_for(&schema).expect("bundled schema compiles") }
});

pub fn validator() -> &'static Validator {
    &VALIDATOR
}

impl Validator {
    /// Validates a canonical event and extracts its index fields.
    pub fn check(&self, event: &Value) -> Result<IndexFields, Reject> {
        if !event.is_object() {
            return Err(Reject::new("json.not_object", "", "an event must be a JSON object"));
        }
        let declared = get(event, &["interaction", "schemaVersion"]).and_then(Value::as_str);
        if let Some(v) = declared
            && v != CURRENT_VERSION {
                let mut r = Reject::new("schema.unsupported_version", "/interaction/schemaVersion", format!("schema version {v} has no upcaster to {CURRENT_VERSION}"));
                r.schema_version = v.chars().take(32).collect();
                return Err(r);
            }
        if !self.v2_1_0.is_valid(event) {
            let err = self.v2_1_0.validate(event).expect_err("invalid");
            let keyword = err.kind().keyword().to_string();
            return Err(Reject::new(format!("schema.{keyword}"), err.instance_path().to_string(), err.to_string()));
        }
        extract(event)
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
    let occurred = get(e, &["occurredAt"]).and_then(Value::as_str).unwrap_or_default();
    let occurred_at = DateTime::parse_from_rfc3339(occurred)
        .map_err(|err| Reject::new("event.timestamp", "/occurredAt", format!("occurredAt is not a valid RFC 3339 time: {err}")))?
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
                .filter_map(|p| p.get("address").and_then(Value::as_str).or_else(|| p.get("participantId").and_then(Value::as_str)))
                .map(str::to_string)
                .collect();
            ids.dedup();
            ids
        })
        .unwrap_or_default();
    Ok(IndexFields {
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
        let f = validator().check(&event()).unwrap();
        assert_eq!(f.event_id, "e-1");
        assert_eq!(f.agent_ids, vec!["agent_jdoe@genesys.cloud"]);
        assert_eq!(f.queue_id.as_deref(), Some("q_1"));
        assert_eq!(f.occurred_at.timestamp_millis(), 1715678685800);
        assert_eq!(f.interaction_type, "CALL");
    }

    #[test]
    fn rejects_with_safe_code_and_path() {
        let mut e = event();
        e["interaction"]["participants"][0].as_object_mut().unwrap().remove("participantId");
        let r = validator().check(&e).unwrap_err();
        assert_eq!(r.code, "schema.required");
        assert_eq!(r.path, "/interaction/participants/0");
        let mut e = event();
        e["state"] = json!("DELETED");
        assert_eq!(validator().check(&e).unwrap_err().code, "schema.enum");
        let mut e = event();
        e["interaction"]["schemaVersion"] = json!("1.0");
        let r = validator().check(&e).unwrap_err();
        assert_eq!((r.code.as_str(), r.schema_version.as_str()), ("schema.unsupported_version", "1.0"));
        let mut e = event();
        e["occurredAt"] = json!("2024-13-14T09:24:45Z");
        assert_eq!(validator().check(&e).unwrap_err().code, "event.timestamp");
        assert_eq!(validator().check(&json!([1])).unwrap_err().code, "json.not_object");
    }

    #[test]
    fn other_media_types_are_kept_with_their_own_type() {
        let mut e = event();
        e["interaction"]["interactionType"] = json!("VIDEO");
        assert_eq!(validator().check(&e).unwrap().interaction_type, "VIDEO");
    }
}
