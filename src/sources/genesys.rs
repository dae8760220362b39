//! Genesys Cloud CX: analytics conversation detail records and EventBridge detail events.
//!
//! Detail records (`genesys-details`), one conversation per line (or a whole query
//! response with `conversations[]`): interaction id `conversationId` (a transfer adds
//! participants to the same conversation, so the id follows the interaction); idempotency key
//! `genesys-details:<conversationId>:<hash of the record>` (a re-sent snapshot with new content
//! is kept, an exact re-send dropped); state COMPLETED once `conversationEnd` is set, else
//! UPDATED; occurredAt `conversationEnd`, else `conversationStart`.
//!
//! EventBridge events (`genesys-eventbridge`): idempotency key the envelope `id`; interaction id
//! `detail.eventBody.conversationId`; state CREATED for `customer.start`, COMPLETED for
//! `customer.end`, UPDATED for every other topic; occurredAt `eventBody.eventTime`; tenant the
//! organisation id in `source` (`aws.partner/genesys.com/cloud/<orgId>/…`). The customer's
//! address of an outbound e-mail or message event is taken from `addressTo` (an assumption:
//! no public outbound sample was found).

use super::vendor::{self, Canonical, Kind, check_types, missing, participant, path, text};
use crate::schema::Reject;
use serde_json::Value;

const PLATFORM: &str = "GENESYS_CX";

/// The detail-record fields `details` reads, typed as the Genesys SDK models declare them.
const DETAIL_TYPES: &[(&str, Kind)] = &[
    ("conversationId", Kind::Str),
    ("conversationStart", Kind::Str),
    ("conversationEnd", Kind::Str),
    ("originatingDirection", Kind::Str),
    ("participants", Kind::Arr),
    ("participants[].participantId", Kind::Str),
    ("participants[].participantName", Kind::Str),
    ("participants[].purpose", Kind::Str),
    ("participants[].userId", Kind::Str),
    ("participants[].sessions", Kind::Arr),
    ("participants[].sessions[].mediaType", Kind::Str),
    ("participants[].sessions[].messageType", Kind::Str),
    ("participants[].sessions[].direction", Kind::Str),
    ("participants[].sessions[].ani", Kind::Str),
    ("participants[].sessions[].dnis", Kind::Str),
    ("participants[].sessions[].addressFrom", Kind::Str),
    ("participants[].sessions[].addressOther", Kind::Str),
    ("participants[].sessions[].callbackNumbers[]", Kind::Str),
    ("participants[].sessions[].metrics", Kind::Arr),
    ("participants[].sessions[].metrics[].name", Kind::Str),
    ("participants[].sessions[].segments", Kind::Arr),
    (
        "participants[].sessions[].segments[].segmentStart",
        Kind::Str,
    ),
    ("participants[].sessions[].segments[].segmentEnd", Kind::Str),
    (
        "participants[].sessions[].segments[].segmentType",
        Kind::Str,
    ),
    ("participants[].sessions[].segments[].queueId", Kind::Str),
    ("participants[].sessions[].segments[].wrapUpCode", Kind::Str),
    (
        "participants[].sessions[].segments[].disconnectType",
        Kind::Str,
    ),
];

/// The EventBridge fields `eventbridge` reads, typed as the envelope and the detail-event
/// models declare them.
const EVENT_TYPES: &[(&str, Kind)] = &[
    ("id", Kind::Str),
    ("source", Kind::Str),
    ("detail", Kind::Obj),
    ("detail.topicName", Kind::Str),
    ("detail.eventBody", Kind::Obj),
    ("detail.eventBody.eventTime", Kind::Int),
    ("detail.eventBody.conversationId", Kind::Str),
    ("detail.eventBody.participantId", Kind::Str),
    ("detail.eventBody.sessionId", Kind::Str),
    ("detail.eventBody.mediaType", Kind::Str),
    ("detail.eventBody.messageType", Kind::Str),
    ("detail.eventBody.direction", Kind::Str),
    ("detail.eventBody.ani", Kind::Str),
    ("detail.eventBody.dnis", Kind::Str),
    ("detail.eventBody.addressTo", Kind::Str),
    ("detail.eventBody.addressFrom", Kind::Str),
    ("detail.eventBody.callbackNumbers[]", Kind::Str),
    ("detail.eventBody.userId", Kind::Str),
    ("detail.eventBody.queueId", Kind::Str),
    ("detail.eventBody.wrapupCode", Kind::Str),
    ("detail.eventBody.acdOutcome", Kind::Str),
    ("detail.eventBody.disconnectType", Kind::Str),
];

fn media_type(media: &str, message_type: Option<&str>) -> String {
    match (
        media.to_ascii_lowercase().as_str(),
        message_type.map(str::to_ascii_lowercase).as_deref(),
    ) {
        ("voice" | "callback", _) => "CALL".into(),
        ("chat", _) => "CHAT".into(),
        ("message", Some("sms")) => "SMS".into(),
        ("message", _) => "CHAT".into(),
        ("email", _) => "EMAIL".into(),
        (other, _) => vendor::token(other),
    }
}

fn sessions(p: &Value) -> impl Iterator<Item = &Value> {
    p.get("sessions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn segments(p: &Value) -> impl Iterator<Item = &Value> {
    sessions(p).flat_map(|s| {
        s.get("segments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    })
}

fn purpose(p: &Value) -> String {
    p.get("purpose")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// One conversation detail record -> one canonical event.
pub(super) fn details(c: &Value, tenant: Option<&str>) -> Result<Value, Reject> {
    const SHAPE: &str = "genesys-details";
    check_types(SHAPE, c, DETAIL_TYPES)?;
    let id = text(c, "conversationId").ok_or_else(|| missing(SHAPE, "conversationId"))?;
    let start = text(c, "conversationStart").ok_or_else(|| missing(SHAPE, "conversationStart"))?;
    let end = text(c, "conversationEnd");
    let tenant = tenant.map(str::to_string).ok_or_else(|| {
        Reject::new(
            "source.tenant_missing",
            "",
            "genesys-details records carry no organisation id: set the source's tenant (--tenant)",
        )
    })?;
    let parts: Vec<&Value> = c
        .get("participants")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let (media, message_type) = detail_media(&parts);
    let (queue_id, queue_name) = detail_queue(&parts);
    let wrap_up_code = parts
        .iter()
        .flat_map(|p| segments(p))
        .filter(|s| s.get("segmentType").and_then(Value::as_str) == Some("wrapup"))
        .filter_map(|s| text(s, "wrapUpCode"))
        .last();
    let disposition = detail_disposition(&parts);
    let mut people = Vec::new();
    for p in &parts {
        if let Some(person) = detail_participant(&id, people.len(), p) {
            people.push(person);
        }
    }

    let event = Canonical {
        event_id: vendor::snapshot_key(SHAPE, &id, c),
        state: if end.is_some() {
            "COMPLETED"
        } else {
            "UPDATED"
        },
        platform: PLATFORM,
        tenant,
        occurred_at: end.unwrap_or(start),
        interaction_id: id.clone(),
        leg_id: Some(id),
        interaction_type: media_type(&media, message_type.as_deref()),
        direction: text(c, "originatingDirection").map(|d| d.to_ascii_uppercase()),
        queue_id,
        queue_name,
        wrap_up_code,
        disposition,
        participants: people,
        shape: SHAPE,
    };
    Ok(event.into_event(c.clone()))
}

/// The media of a detail record: the customer's first session, else any session.
fn detail_media(parts: &[&Value]) -> (String, Option<String>) {
    let customer_first = parts
        .iter()
        .filter(|p| matches!(purpose(p).as_str(), "customer" | "external"))
        .chain(parts.iter());
    customer_first
        .flat_map(|p| sessions(p))
        .find_map(|s| {
            s.get("mediaType").and_then(Value::as_str).map(|m| {
                (
                    m.to_string(),
                    s.get("messageType")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                )
            })
        })
        .unwrap_or_else(|| ("unknown".into(), None))
}

/// The last queue the interaction was routed to, and its name: the name of the acd
/// participant that routed to that queue (acd participants are named after their queue in
/// practice), else the first acd participant's.
fn detail_queue(parts: &[&Value]) -> (Option<String>, Option<String>) {
    let queue_id = parts
        .iter()
        .filter(|p| matches!(purpose(p).as_str(), "acd" | "agent" | "user"))
        .flat_map(|p| segments(p))
        .filter_map(|s| text(s, "queueId"))
        .last();
    let acd = |p: &&&Value| purpose(p) == "acd";
    let queue_name = parts
        .iter()
        .filter(acd)
        .find(|p| queue_id.is_some() && segments(p).any(|s| text(s, "queueId") == queue_id))
        .or_else(|| parts.iter().find(acd))
        .and_then(|p| text(p, "participantName"));
    (queue_id, queue_name)
}

/// ABANDONED when no agent took part and an acd session counted a `tAbandon`, else the
/// last disconnect type.
fn detail_disposition(parts: &[&Value]) -> Option<String> {
    let has_agent = parts
        .iter()
        .any(|p| matches!(purpose(p).as_str(), "agent" | "user"));
    let abandoned = !has_agent
        && parts
            .iter()
            .filter(|p| purpose(p) == "acd")
            .flat_map(|p| sessions(p))
            .any(|s| {
                s.get("metrics")
                    .and_then(Value::as_array)
                    .is_some_and(|ms| {
                        ms.iter()
                            .any(|m| m.get("name").and_then(Value::as_str) == Some("tAbandon"))
                    })
            });
    if abandoned {
        return Some("ABANDONED".to_string());
    }
    parts
        .iter()
        .flat_map(|p| segments(p))
        .filter_map(|s| text(s, "disconnectType"))
        .last()
}

/// A customer or agent participant of a detail record (`None` for acd, ivr, ...); `index`
/// numbers participants that carry no id.
fn detail_participant(id: &str, index: usize, p: &Value) -> Option<Value> {
    let kind = match purpose(p).as_str() {
        "customer" | "external" => "CUSTOMER",
        "agent" | "user" => "AGENT",
        _ => return None,
    };
    let pid = text(p, "participantId").unwrap_or_else(|| format!("{id}-{index}"));
    let address = if kind == "AGENT" {
        text(p, "userId")
    } else {
        sessions(p).find_map(|s| {
            let media = s.get("mediaType").and_then(Value::as_str).unwrap_or("");
            let outbound = s.get("direction").and_then(Value::as_str) == Some("outbound");
            match media {
                "voice" if outbound => text(s, "dnis").or_else(|| text(s, "ani")),
                "voice" => text(s, "ani").or_else(|| text(s, "dnis")),
                "callback" => s
                    .get("callbackNumbers")
                    .and_then(|v| v.get(0))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                // the customer's own session names the customer in addressFrom, either way
                _ => text(s, "addressFrom").or_else(|| text(s, "addressOther")),
            }
            .map(|a| vendor::strip_uri(&a))
        })
    };
    let joined = segments(p).filter_map(|s| text(s, "segmentStart")).min();
    let open = segments(p).any(|s| s.get("segmentEnd").is_none());
    let left = if open {
        None
    } else {
        segments(p).filter_map(|s| text(s, "segmentEnd")).max()
    };
    Some(participant(pid, kind, address, joined, left))
}

/// One EventBridge detail event -> one canonical event.
pub(super) fn eventbridge(e: &Value, tenant: Option<&str>) -> Result<Value, Reject> {
    const SHAPE: &str = "genesys-eventbridge";
    check_types(SHAPE, e, EVENT_TYPES)?;
    let event_id = text(e, "id").ok_or_else(|| missing(SHAPE, "id"))?;
    let body = path(e, &["detail", "eventBody"])
        .filter(|b| b.is_object())
        .ok_or_else(|| missing(SHAPE, "detail.eventBody"))?;
    let topic = path(e, &["detail", "topicName"])
        .and_then(Value::as_str)
        .ok_or_else(|| missing(SHAPE, "detail.topicName"))?;
    let conversation = text(body, "conversationId")
        .ok_or_else(|| missing(SHAPE, "detail.eventBody.conversationId"))?;
    let at = body
        .get("eventTime")
        .and_then(Value::as_i64)
        .and_then(vendor::millis)
        .ok_or_else(|| missing(SHAPE, "detail.eventBody.eventTime"))?;
    let org = e
        .get("source")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("aws.partner/genesys.com/cloud/"))
        .and_then(|s| s.split('/').next())
        .filter(|s| !s.is_empty());
    let tenant = org.or(tenant).map(str::to_string).ok_or_else(|| {
        Reject::new(
            "source.tenant_missing",
            "/source",
            "no organisation id in source and no tenant configured",
        )
    })?;
    // the suffix after the conversation id: customer.start, acd.end, user.start, acw, wrapup, ...
    let suffix = topic
        .split_once(&format!(".{conversation}."))
        .map(|(_, s)| s)
        .unwrap_or_else(|| topic.rsplit_once('.').map_or(topic, |(_, s)| s));
    let state = match suffix {
        "customer.start" => "CREATED",
        "customer.end" => "COMPLETED",
        _ => "UPDATED",
    };
    let media = body
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    let message_type = body.get("messageType").and_then(Value::as_str);
    let direction = body
        .get("direction")
        .and_then(Value::as_str)
        .filter(|d| *d != "UNKNOWN")
        .map(str::to_string);
    let pid = text(body, "participantId").unwrap_or_else(|| format!("{conversation}-{suffix}"));
    let outbound = direction.as_deref() == Some("OUTBOUND");
    let participants = eventbridge_participant(body, suffix, pid, media, outbound, &at)
        .into_iter()
        .collect();
    let disposition = text(body, "acdOutcome").or_else(|| text(body, "disconnectType"));
    let event = Canonical {
        event_id: format!("{SHAPE}:{event_id}"),
        state,
        platform: PLATFORM,
        tenant,
        occurred_at: at,
        interaction_id: conversation,
        leg_id: text(body, "sessionId"),
        interaction_type: media_type(media, message_type),
        direction,
        queue_id: text(body, "queueId"),
        queue_name: None,
        wrap_up_code: text(body, "wrapupCode"),
        disposition,
        participants,
        shape: SHAPE,
    };
    Ok(event.into_event(e.clone()))
}

/// The participant an EventBridge topic names: the customer for `customer.*`, the agent for
/// `user.*`, `acw` and `wrapup`, none for the rest; joined at a `.start`, left otherwise.
fn eventbridge_participant(
    body: &Value,
    suffix: &str,
    pid: String,
    media: &str,
    outbound: bool,
    at: &str,
) -> Option<Value> {
    let (joined, left) = if suffix.ends_with(".start") {
        (Some(at.to_string()), None)
    } else {
        (None, Some(at.to_string()))
    };
    if suffix.starts_with("customer.") {
        let address = match media {
            "VOICE" if outbound => text(body, "dnis"),
            "VOICE" => text(body, "ani"),
            "CALLBACK" => body
                .get("callbackNumbers")
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ if outbound => text(body, "addressTo").or_else(|| text(body, "addressFrom")),
            _ => text(body, "addressFrom"),
        }
        .map(|a| vendor::strip_uri(&a));
        Some(participant(pid, "CUSTOMER", address, joined, left))
    } else if suffix.starts_with("user.") || suffix == "acw" || suffix == "wrapup" {
        Some(participant(
            pid,
            "AGENT",
            text(body, "userId"),
            joined,
            left,
        ))
    } else {
        None
    }
}
