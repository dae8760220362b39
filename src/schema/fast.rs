//! The fast path for events of the current schema version: a canonical line is parsed once,
//! into borrowed strings, and checked by hand against the rules of
//! `json/event-2.1.0.schema.json`, giving the same [`IndexFields`] as `extract`.
//!
//! It only ever accepts. Whatever it does not take goes the slow path unchanged (a `Value`,
//! the JSON Schema, the upcast), which decides and names the error: invalid events, other
//! versions, duplicate keys (the slow path keeps the last), a vendor key under `auto`.
//! The parse is as strict as `serde_json::Value`'s: every value it does not read is still
//! visited through `deserialize_any` (UTF-8, escapes, number range, depth), never skipped
//! unchecked. `fast/tests.rs` holds its verdict to the JSON Schema's on generated events.

use super::{CURRENT_VERSION, IndexFields};
use chrono::DateTime;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

#[cfg(test)]
mod lines_tests;
#[cfg(test)]
mod tests;

/// The version whose JSON Schema the checks below restate. When the current version moves
/// on, the fast path stands aside (every line goes the slow path) until it is restated.
const VERSION: &str = "2.1.0";

/// The index fields of `line` when the slow path would take it, unchanged, as a valid event
/// of the current version, else `None`. With `auto`, also only when `SourceKind::recognise`
/// would take it for a canonical event (no top-level key of a vendor shape).
pub(crate) fn check(line: &[u8], auto: bool) -> Option<IndexFields> {
    if VERSION != CURRENT_VERSION {
        return None;
    }
    let event: Event<'_> = serde_json::from_slice(line).ok()?;
    if auto && event.vendor_key {
        return None;
    }
    event.fields()
}

/// A string as parsed: borrowed from the line unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, visited as strictly as a `Value` is built (through `deserialize_any`) and
/// dropped.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A key of an object, as its index in `names` (`None` for a key not read here), compared
/// after unescaping, as the slow path compares it.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == s))
    }
}

/// Sets a field once: a second occurrence of a key fails the fast parse (the slow path, where
/// the last one wins, decides).
fn put<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom("duplicate key"));
    }
    *slot = Some(value);
    Ok(())
}

/// Implements `Deserialize` for a struct through `visit_map` only: an array where the schema
/// wants an object fails (serde's derive would accept one for a struct).
macro_rules! object {
    ($ty:ident, $expecting:literal, |$map:ident, $out:ident, $key:ident| $body:block) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<$ty<'de>, A::Error> {
                        let mut $out = $ty::default();
                        while let Some($key) = $map.next_key_seed(Key($ty::KEYS))? {
                            $body
                        }
                        Ok($out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

/// `Option<Option<T>>` fields: absent, or present as null or a value.
type Nullable<'a> = Option<Option<Str<'a>>>;

#[derive(Default)]
struct Event<'a> {
    event_id: Option<Str<'a>>,
    event_type: Option<Str<'a>>,
    state: Option<Str<'a>>,
    source_platform: Option<Str<'a>>,
    tenant_id: Option<Str<'a>>,
    occurred_at: Option<Str<'a>>,
    interaction: Option<Interaction<'a>>,
    /// A top-level key by which `SourceKind::recognise` would see a vendor shape.
    vendor_key: bool,
}

impl Event<'_> {
    const KEYS: &'static [&'static str] = &[
        "eventId",
        "eventType",
        "state",
        "sourcePlatform",
        "tenantId",
        "occurredAt",
        "interaction",
        // every key one of recognise's vendor conditions needs
        "detail-type",
        "detail",
        "conversationId",
        "conversations",
        "contactId",
        "completedContacts",
        "ContactId",
    ];
}

object!(Event, "an event object", |map, e, key| {
    match key {
        Some(0) => put(&mut e.event_id, map.next_value()?)?,
        Some(1) => put(&mut e.event_type, map.next_value()?)?,
        Some(2) => put(&mut e.state, map.next_value()?)?,
        Some(3) => put(&mut e.source_platform, map.next_value()?)?,
        Some(4) => put(&mut e.tenant_id, map.next_value()?)?,
        Some(5) => put(&mut e.occurred_at, map.next_value()?)?,
        Some(6) => put(&mut e.interaction, map.next_value()?)?,
        Some(_) => {
            e.vendor_key = true;
            map.next_value::<Skip>()?;
        }
        None => {
            map.next_value::<Skip>()?;
        }
    }
});

#[derive(Default)]
struct Interaction<'a> {
    schema_version: Option<Str<'a>>,
    interaction_id: Option<Str<'a>>,
    interaction_type: Option<Str<'a>>,
    direction: Nullable<'a>,
    routing: Option<Option<Routing<'a>>>,
    participants: Option<Vec<Participant<'a>>>,
}

impl Interaction<'_> {
    const KEYS: &'static [&'static str] = &[
        "schemaVersion",
        "interactionId",
        "interactionType",
        "direction",
        "routingMetadata",
        "participants",
    ];
}

object!(Interaction, "an interaction object", |map, i, key| {
    match key {
        Some(0) => put(&mut i.schema_version, map.next_value()?)?,
        Some(1) => put(&mut i.interaction_id, map.next_value()?)?,
        Some(2) => put(&mut i.interaction_type, map.next_value()?)?,
        Some(3) => put(&mut i.direction, map.next_value()?)?,
        Some(4) => put(&mut i.routing, map.next_value()?)?,
        Some(_) => put(&mut i.participants, map.next_value()?)?,
        None => {
            map.next_value::<Skip>()?;
        }
    }
});

#[derive(Default)]
struct Routing<'a> {
    queue_id: Nullable<'a>,
    queue_name: Nullable<'a>,
    wrap_up_code: Nullable<'a>,
    disposition: Nullable<'a>,
}

impl Routing<'_> {
    const KEYS: &'static [&'static str] = &["queueId", "queueName", "wrapUpCode", "disposition"];
}

object!(Routing, "a routing object", |map, r, key| {
    match key {
        Some(0) => put(&mut r.queue_id, map.next_value()?)?,
        Some(1) => put(&mut r.queue_name, map.next_value()?)?,
        Some(2) => put(&mut r.wrap_up_code, map.next_value()?)?,
        Some(_) => put(&mut r.disposition, map.next_value()?)?,
        None => {
            map.next_value::<Skip>()?;
        }
    }
});

#[derive(Default)]
struct Participant<'a> {
    participant_id: Option<Str<'a>>,
    kind: Option<Str<'a>>,
    address: Nullable<'a>,
    joined: Nullable<'a>,
    left: Nullable<'a>,
}

impl Participant<'_> {
    const KEYS: &'static [&'static str] = &[
        "participantId",
        "type",
        "address",
        "joinedTimestamp",
        "leftTimestamp",
    ];
}

object!(Participant, "a participant object", |map, p, key| {
    match key {
        Some(0) => put(&mut p.participant_id, map.next_value()?)?,
        Some(1) => put(&mut p.kind, map.next_value()?)?,
        Some(2) => put(&mut p.address, map.next_value()?)?,
        Some(3) => put(&mut p.joined, map.next_value()?)?,
        Some(_) => put(&mut p.left, map.next_value()?)?,
        None => {
            map.next_value::<Skip>()?;
        }
    }
});

// ---- the schema's rules, by hand (each names the `$defs` or keyword it stands for)

/// `minLength`/`maxLength`: counted in code points, as the validator counts them.
fn chars_within(s: &str, min: usize, max: usize) -> bool {
    if s.len() < min {
        return false; // never fewer bytes than code points
    }
    s.len() <= max || (min..=max).contains(&s.chars().count())
}

/// `$defs/id`: a string of 1 to 256 code points.
fn id(s: &str) -> bool {
    chars_within(s, 1, 256)
}

/// `$defs/token`: 1 to 64 of `^[A-Za-z0-9_.:-]+$` (ASCII, so bytes are code points).
fn token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `^[A-Z][A-Z0-9_]{0,31}$` (interactionType, direction).
fn upper(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// `$defs/timestamp`:
/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$`.
fn timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    let date_time = digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && b[10] == b'T'
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19);
    if !date_time {
        return false;
    }
    let mut rest = &b[19..];
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &tail[n..];
    }
    match rest {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// `{"type": ["string", "null"], "maxLength": max}` (absent is fine too).
fn nullable_within(v: &Nullable<'_>, max: usize) -> bool {
    match v {
        Some(Some(s)) => chars_within(s, 0, max),
        _ => true,
    }
}

/// `{"oneOf": [{"$ref": "#/$defs/timestamp"}, {"type": "null"}]}` (absent is fine too).
fn nullable_timestamp(v: &Nullable<'_>) -> bool {
    match v {
        Some(Some(s)) => timestamp(s),
        _ => true,
    }
}

impl Participant<'_> {
    /// `interaction.participants.items`.
    fn valid(&self) -> bool {
        self.participant_id.as_deref().is_some_and(id)
            && self.kind.as_deref().is_some_and(|t| chars_within(t, 1, 64))
            && nullable_within(&self.address, 1024)
            && nullable_timestamp(&self.joined)
            && nullable_timestamp(&self.left)
    }

    fn is_agent(&self) -> bool {
        self.kind.as_deref() == Some("AGENT")
    }

    /// The address, when given and not blank (as `extract` takes it).
    fn address(&self) -> Option<&str> {
        match &self.address {
            Some(Some(a)) if !a.trim().is_empty() => Some(a),
            _ => None,
        }
    }
}

impl Interaction<'_> {
    /// `properties.interaction`.
    fn valid(&self) -> bool {
        let routing = match &self.routing {
            Some(Some(r)) => {
                nullable_within(&r.queue_id, 256)
                    && nullable_within(&r.wrap_up_code, 256)
                    && nullable_within(&r.disposition, 256)
            }
            _ => true, // queueName: a string or null, which its parse already required
        };
        self.schema_version.as_deref() == Some(VERSION)
            && self.interaction_id.as_deref().is_some_and(id)
            && self.interaction_type.as_deref().is_some_and(upper)
            && (matches!(&self.direction, None | Some(None)) || self.direction().is_some_and(upper))
            && routing
            && self
                .participants
                .as_ref()
                .is_some_and(|ps| ps.len() <= 1000 && ps.iter().all(Participant::valid))
    }

    fn direction(&self) -> Option<&str> {
        self.direction.as_ref().and_then(|d| d.as_deref())
    }
}

/// A string-or-null field's string, owned.
fn text(v: &Nullable<'_>) -> Option<String> {
    v.as_ref().and_then(|v| v.as_deref()).map(str::to_string)
}

fn owned(s: Option<Str<'_>>) -> String {
    s.map(|s| s.0.into_owned()).unwrap_or_default()
}

impl Event<'_> {
    /// The event's index fields when it is valid, as `extract` makes them; `None` when not.
    fn fields(self) -> Option<IndexFields> {
        let i = self.interaction.as_ref()?;
        let valid = self.event_id.as_deref().is_some_and(id)
            && self.event_type.as_deref() == Some("INTERACTION")
            && matches!(
                self.state.as_deref(),
                Some("CREATED" | "UPDATED" | "COMPLETED")
            )
            && self.source_platform.as_deref().is_some_and(token)
            && self.tenant_id.as_deref().is_some_and(id)
            && self.occurred_at.as_deref().is_some_and(timestamp)
            && i.valid();
        if !valid {
            return None;
        }
        // `extract`'s own check, beyond the pattern (a month 13, say)
        let occurred_at = DateTime::parse_from_rfc3339(self.occurred_at.as_deref()?)
            .ok()?
            .to_utc();
        let participants = i.participants.as_deref().unwrap_or_default();
        let mut agent_ids: Vec<String> = participants
            .iter()
            .filter(|p| p.is_agent())
            .filter_map(|p| {
                p.address()
                    .or_else(|| p.participant_id.as_deref().filter(|s| !s.trim().is_empty()))
            })
            .map(str::to_string)
            .collect();
        agent_ids.dedup();
        let addresses = participants
            .iter()
            .filter(|p| !p.is_agent())
            .filter_map(Participant::address)
            .map(str::to_string)
            .collect();
        let i = self.interaction?;
        let routing = match &i.routing {
            Some(Some(r)) => Some(r),
            _ => None,
        };
        Some(IndexFields {
            direction: i.direction().map(str::to_string),
            queue_id: routing.and_then(|r| text(&r.queue_id)),
            wrap_up_code: routing.and_then(|r| text(&r.wrap_up_code)),
            disposition: routing.and_then(|r| text(&r.disposition)),
            interaction_id: owned(i.interaction_id),
            interaction_type: owned(i.interaction_type),
            schema_version: owned(i.schema_version),
            event_id: owned(self.event_id),
            tenant_id: owned(self.tenant_id),
            source_platform: owned(self.source_platform),
            state: owned(self.state),
            occurred_at,
            agent_ids,
            addresses,
        })
    }
}
