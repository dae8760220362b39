//! Amazon Connect contact trace records (`connect-ctr`), one record per line.
//!
//! Interaction id `InitialContactId`, else `ContactId` (each transfer makes a new contact
//! linked by `InitialContactId`); the leg id is `ContactId`. Idempotency key
//! `connect-ctr:<ContactId>:<hash of the record>` (Connect re-delivers records and updates them
//! with a newer `LastUpdateTimestamp`: updates are kept, exact re-sends dropped). State
//! COMPLETED once `DisconnectTimestamp` is set, else UPDATED. occurredAt
//! `InitiationTimestamp`. Tenant: the instance id of `InstanceARN`, else the configured
//! tenant. SMS is `Channel` CHAT with the `connect:SMS` subtype.

use super::vendor::{self, Canonical, Kind, check_types, missing, participant, path, text};
use crate::schema::Reject;
use serde_json::Value;

/// The CTR fields `record` reads, typed as the contact record data model declares them.
const TYPES: &[(&str, Kind)] = &[
    ("ContactId", Kind::Str),
    ("InitialContactId", Kind::Str),
    ("InstanceARN", Kind::Str),
    ("Channel", Kind::Str),
    ("InitiationMethod", Kind::Str),
    ("InitiationTimestamp", Kind::Str),
    ("ConnectedToSystemTimestamp", Kind::Str),
    ("DisconnectTimestamp", Kind::Str),
    ("DisconnectReason", Kind::Str),
    ("CustomerEndpoint", Kind::Obj),
    ("CustomerEndpoint.Address", Kind::Str),
    ("Queue", Kind::Obj),
    ("Queue.ARN", Kind::Str),
    ("Queue.Name", Kind::Str),
    ("Agent", Kind::Obj),
    ("Agent.ARN", Kind::Str),
    ("Agent.Username", Kind::Str),
    ("Agent.ConnectedToAgentTimestamp", Kind::Str),
    ("Agent.AfterContactWorkEndTimestamp", Kind::Str),
    ("SegmentAttributes", Kind::Obj),
    ("SegmentAttributes.connect:Subtype", Kind::Obj),
    ("SegmentAttributes.connect:Subtype.ValueString", Kind::Str),
    ("SegmentAttributes.connect:Direction", Kind::Obj),
    ("SegmentAttributes.connect:Direction.ValueString", Kind::Str),
];

fn segment_attr(r: &Value, name: &str) -> Option<String> {
    path(r, &["SegmentAttributes", name, "ValueString"])
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn interaction_type(r: &Value, channel: &str) -> String {
    let subtype = segment_attr(r, "connect:Subtype");
    match channel {
        "VOICE" => "CALL".to_string(),
        "CHAT" if subtype.as_deref() == Some("connect:SMS") => "SMS".into(),
        "CHAT" => "CHAT".into(),
        "EMAIL" => "EMAIL".into(),
        other => vendor::token(other),
    }
}

fn direction(r: &Value, channel: &str) -> Option<String> {
    match text(r, "InitiationMethod").as_deref() {
        Some("INBOUND") => Some("INBOUND".to_string()),
        Some("OUTBOUND" | "EXTERNAL_OUTBOUND" | "CALLBACK") => Some("OUTBOUND".into()),
        Some("API") => segment_attr(r, "connect:Direction")
            .or_else(|| (channel == "CHAT").then(|| "INBOUND".into())),
        // TRANSFER, QUEUE_TRANSFER: the direction is the initial contact's, not in this record
        _ => None,
    }
}

/// The customer (from `CustomerEndpoint`) and the agent (from `Agent`) of a contact record.
fn participants(
    r: &Value,
    contact: &str,
    initiated: &str,
    disconnected: Option<&str>,
) -> Vec<Value> {
    let mut people = Vec::new();
    let disconnected = disconnected.map(str::to_string);
    if let Some(ep) = r.get("CustomerEndpoint").filter(|e| e.is_object()) {
        let joined = text(r, "ConnectedToSystemTimestamp").or_else(|| Some(initiated.to_string()));
        people.push(participant(
            format!("{contact}-customer"),
            "CUSTOMER",
            text(ep, "Address"),
            joined,
            disconnected.clone(),
        ));
    }
    if let Some(a) = r.get("Agent").filter(|a| a.is_object()) {
        let id = text(a, "ARN")
            .map(|arn| vendor::last_segment(&arn).to_string())
            .or_else(|| text(a, "Username"))
            .unwrap_or_else(|| format!("{contact}-agent"));
        let left = text(a, "AfterContactWorkEndTimestamp").or(disconnected);
        people.push(participant(
            id,
            "AGENT",
            text(a, "Username"),
            text(a, "ConnectedToAgentTimestamp"),
            left,
        ));
    }
    people
}

pub(super) fn record(r: &Value, tenant: Option<&str>) -> Result<Value, Reject> {
    const SHAPE: &str = "connect-ctr";
    check_types(SHAPE, r, TYPES)?;
    let contact = text(r, "ContactId").ok_or_else(|| missing(SHAPE, "ContactId"))?;
    let initiated =
        text(r, "InitiationTimestamp").ok_or_else(|| missing(SHAPE, "InitiationTimestamp"))?;
    let instance = text(r, "InstanceARN").map(|a| vendor::last_segment(&a).to_string());
    let tenant = instance.or(tenant.map(str::to_string)).ok_or_else(|| {
        Reject::new(
            "source.tenant_missing",
            "/InstanceARN",
            "no InstanceARN and no tenant configured",
        )
    })?;
    let channel = text(r, "Channel").unwrap_or_else(|| "UNKNOWN".into());
    let interaction_type = interaction_type(r, &channel);
    let direction = direction(r, &channel);
    let queue = r.get("Queue").filter(|q| q.is_object());
    let agent = r.get("Agent").filter(|a| a.is_object());
    let disconnected = text(r, "DisconnectTimestamp");
    let people = participants(r, &contact, &initiated, disconnected.as_deref());
    let disposition = if queue.is_some() && agent.is_none() {
        Some("ABANDONED".to_string())
    } else {
        text(r, "DisconnectReason")
    };
    let event = Canonical {
        event_id: vendor::snapshot_key(SHAPE, &contact, r),
        state: if disconnected.is_some() {
            "COMPLETED"
        } else {
            "UPDATED"
        },
        platform: "AMAZON_CONNECT",
        tenant,
        occurred_at: initiated,
        interaction_id: text(r, "InitialContactId").unwrap_or_else(|| contact.clone()),
        leg_id: Some(contact),
        interaction_type,
        direction,
        queue_id: queue
            .and_then(|q| text(q, "ARN"))
            .map(|a| vendor::last_segment(&a).to_string()),
        queue_name: queue.and_then(|q| text(q, "Name")),
        wrap_up_code: None,
        disposition,
        participants: people,
        shape: SHAPE,
    };
    Ok(event.into_event(r.clone()))
}
