//! Helpers shared by the vendor adapters: field access that tolerates the vendors' type
//! drift (ids as numbers or strings), time conversion, idempotency keys and the canonical
//! event builder. Every adapter keeps the vendor's whole object, unmapped fields included,
//! under `interaction.vendorPayload` (inside the encrypted record).

use crate::schema::Reject;
use serde_json::{Map, Value, json};

pub(super) fn missing(shape: &str, field: &str) -> Reject {
    Reject::new(
        "source.missing_field",
        format!("/{}", field.replace('.', "/")),
        format!("{shape}: required field {field} is missing or empty"),
    )
}

/// The JSON type a vendor's schema gives a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Str,
    /// An integer number (epoch milliseconds).
    Int,
    Num,
    Bool,
    /// An id sent as a string or an integer (NICE: the vendor's consumers accept both).
    Id,
    Obj,
    Arr,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::Num => v.is_number(),
            Kind::Bool => v.is_boolean(),
            Kind::Id => v.is_string() || v.is_i64() || v.is_u64(),
            Kind::Obj => v.is_object(),
            Kind::Arr => v.is_array(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Num => "a number",
            Kind::Bool => "a boolean",
            Kind::Id => "a string or an integer",
            Kind::Obj => "an object",
            Kind::Arr => "an array",
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the type of every field an adapter reads against the vendor's schema, so that
/// drift (an id arriving as a number where the schema says string) is quarantined
/// (`source.wrong_type`, with the JSON path) instead of coerced. `spec` names fields by dotted
/// path, `name[]` for each element of an array; an absent or null field is not checked.
pub(super) fn check_types(shape: &str, v: &Value, spec: &[(&str, Kind)]) -> Result<(), Reject> {
    spec.iter()
        .try_for_each(|(path, kind)| walk_types(shape, v, path, String::new(), *kind))
}

fn walk_types(shape: &str, v: &Value, rest: &str, at: String, kind: Kind) -> Result<(), Reject> {
    if rest.is_empty() {
        if v.is_null() || kind.accepts(v) {
            return Ok(());
        }
        return Err(Reject::new(
            "source.wrong_type",
            at.clone(),
            format!(
                "{shape}: {at} is {}; the vendor's schema says {}",
                type_name(v),
                kind.name()
            ),
        ));
    }
    let (head, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let (key, each) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (head, false),
    };
    let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
    match v.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) if each => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| walk_types(shape, x, tail, format!("{here}/{i}"), kind)),
        Some(other) if each => walk_types(shape, other, "", here, Kind::Arr),
        Some(x) => walk_types(shape, x, tail, here, kind),
    }
}

/// A string field, also accepting numbers (NICE sends ids as either); empty is absent.
pub(super) fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn path<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |v, k| v.get(k))
}

/// Epoch milliseconds to RFC 3339 UTC with milliseconds.
pub(super) fn millis(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The last segment of an ARN or path (`arn:…:queue/abc` -> `abc`).
pub(super) fn last_segment(s: &str) -> &str {
    s.rsplit(['/', ':']).next().unwrap_or(s)
}

/// `tel:+15550100` -> `+15550100`; `sip:` and `mailto:` likewise.
pub(super) fn strip_uri(s: &str) -> String {
    for p in ["tel:", "sip:", "mailto:"] {
        if let Some(rest) = s.strip_prefix(p) {
            return rest.to_string();
        }
    }
    s.to_string()
}

/// Idempotency key of a snapshot shape: changes when the vendor re-sends updated content,
/// stays when it re-sends the same content (keys sorted, so field order does not matter).
pub(super) fn snapshot_key(prefix: &str, id: &str, payload: &Value) -> String {
    let normal = serde_json::to_vec(payload).expect("a JSON value serializes");
    format!(
        "{prefix}:{id}:{}",
        &hex::encode(crate::crypto::sha256(&normal))[..24]
    )
}

pub(super) fn participant(
    id: String,
    kind: &str,
    address: Option<String>,
    joined: Option<String>,
    left: Option<String>,
) -> Value {
    json!({"participantId": id, "type": kind, "address": address, "joinedTimestamp": joined, "leftTimestamp": left})
}

pub(super) struct Canonical {
    pub event_id: String,
    pub state: &'static str,
    pub platform: &'static str,
    pub tenant: String,
    pub occurred_at: String,
    pub interaction_id: String,
    pub leg_id: Option<String>,
    pub interaction_type: String,
    pub direction: Option<String>,
    pub queue_id: Option<String>,
    pub queue_name: Option<String>,
    pub wrap_up_code: Option<String>,
    pub disposition: Option<String>,
    pub participants: Vec<Value>,
    pub shape: &'static str,
}

impl Canonical {
    pub(super) fn into_event(self, payload: Value) -> Value {
        let mut interaction = Map::new();
        interaction.insert(
            "schemaVersion".into(),
            json!(crate::schema::CURRENT_VERSION),
        );
        interaction.insert("interactionId".into(), json!(self.interaction_id));
        if let Some(leg) = self.leg_id {
            interaction.insert("legId".into(), json!(leg));
        }
        interaction.insert("interactionType".into(), json!(self.interaction_type));
        interaction.insert("direction".into(), json!(self.direction));
        interaction.insert(
            "routingMetadata".into(),
            json!({"queueId": self.queue_id, "queueName": self.queue_name, "wrapUpCode": self.wrap_up_code, "disposition": self.disposition}),
        );
        interaction.insert("participants".into(), Value::Array(self.participants));
        interaction.insert("vendorShape".into(), json!(self.shape));
        interaction.insert("vendorPayload".into(), payload);
        json!({
            "eventId": self.event_id,
            "eventType": "INTERACTION",
            "state": self.state,
            "sourcePlatform": self.platform,
            "tenantId": self.tenant,
            "occurredAt": self.occurred_at,
            "interaction": Value::Object(interaction),
        })
    }
}

/// Upper-case token for a vendor enum value kept as it is (`screenshare` -> `SCREENSHARE`).
pub(super) fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if t.starts_with(|c: char| c.is_ascii_uppercase()) {
        t
    } else {
        format!("X{}", &t[..t.len().min(31)])
    }
}
