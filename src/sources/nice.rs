//! NICE CXone: Reporting API completed contacts (`nice-contacts`), one `completedContacts[]`
//! row per line (or a whole response with `completedContacts[]`).
//!
//! Interaction id `masterContactId` (a transfer makes a new `contactId` under the same master),
//! falling back to `contactId`; the leg id is `contactId`. Ids may be numbers or strings.
//! Idempotency key `nice-contacts:<contactId>:<hash of the row>`. State COMPLETED. occurredAt
//! `contactStart` (or `contactStartDate`). `agentId` 0 or null means no agent. The tenant is the
//! source's configured tenant (rows carry no business unit).

use super::vendor::{self, Canonical, Kind, check_types, missing, participant, text};
use crate::schema::Reject;
use serde_json::Value;

/// The fields `contact` reads, typed as the Reporting API's consumers declare them (ids and
/// `mediaType` arrive as integers or strings).
const TYPES: &[(&str, Kind)] = &[
    ("contactId", Kind::Id),
    ("masterContactId", Kind::Id),
    ("contactStart", Kind::Str),
    ("contactStartDate", Kind::Str),
    ("isOutbound", Kind::Bool),
    ("totalDurationSeconds", Kind::Num),
    ("fromAddr", Kind::Str),
    ("toAddr", Kind::Str),
    ("agentId", Kind::Id),
    ("abandoned", Kind::Bool),
    ("transferIndicatorName", Kind::Str),
    ("mediaType", Kind::Id),
    ("mediaSubTypeName", Kind::Str),
    ("skillId", Kind::Id),
    ("skillName", Kind::Str),
    ("primaryDispositionId", Kind::Id),
];

fn media_type(code: Option<&str>, subtype: Option<&str>) -> String {
    match code {
        Some("4") => "CALL".into(),
        Some("3") => "CHAT".into(),
        Some("9") if subtype.is_some_and(|s| s.eq_ignore_ascii_case("sms")) => "SMS".into(),
        Some("9") => "CHAT".into(),
        Some("1") => "EMAIL".into(),
        Some("5") => "VOICEMAIL".into(),
        Some("6") => "WORK_ITEM".into(),
        Some(other) => vendor::token(&format!("MEDIA_{other}")),
        None => "UNKNOWN".into(),
    }
}

pub(super) fn contact(r: &Value, tenant: Option<&str>) -> Result<Value, Reject> {
    const SHAPE: &str = "nice-contacts";
    check_types(SHAPE, r, TYPES)?;
    let contact = text(r, "contactId").ok_or_else(|| missing(SHAPE, "contactId"))?;
    let master = text(r, "masterContactId")
        .filter(|m| m != "0")
        .unwrap_or_else(|| contact.clone());
    let start = text(r, "contactStart")
        .or_else(|| text(r, "contactStartDate"))
        .ok_or_else(|| missing(SHAPE, "contactStart"))?;
    let tenant = tenant.map(str::to_string).ok_or_else(|| {
        Reject::new(
            "source.tenant_missing",
            "",
            "nice-contacts rows carry no business unit: set the source's tenant (--tenant)",
        )
    })?;
    let outbound = r
        .get("isOutbound")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let left = r
        .get("totalDurationSeconds")
        .and_then(Value::as_f64)
        .and_then(|secs| {
            let t = chrono::DateTime::parse_from_rfc3339(&start).ok()?;
            Some(
                (t + chrono::Duration::milliseconds((secs * 1000.0) as i64))
                    .to_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        });
    let customer_address = if outbound {
        text(r, "toAddr")
    } else {
        text(r, "fromAddr")
    };
    let mut people = vec![participant(
        format!("{master}-customer"),
        "CUSTOMER",
        customer_address,
        Some(start.clone()),
        left.clone(),
    )];
    if let Some(agent) = text(r, "agentId").filter(|a| a != "0") {
        people.push(participant(
            agent.clone(),
            "AGENT",
            Some(agent),
            Some(start.clone()),
            left,
        ));
    }
    let abandoned = r.get("abandoned").and_then(Value::as_bool).unwrap_or(false);
    let disposition = if abandoned {
        Some("ABANDONED".to_string())
    } else {
        text(r, "transferIndicatorName")
    };
    let event = Canonical {
        event_id: vendor::snapshot_key(SHAPE, &contact, r),
        state: "COMPLETED",
        platform: "NICE_CXONE",
        tenant,
        occurred_at: start,
        interaction_id: master,
        leg_id: Some(contact),
        interaction_type: media_type(
            text(r, "mediaType").as_deref(),
            r.get("mediaSubTypeName").and_then(Value::as_str),
        ),
        direction: Some(if outbound { "OUTBOUND" } else { "INBOUND" }.into()),
        queue_id: text(r, "skillId"),
        queue_name: text(r, "skillName"),
        wrap_up_code: text(r, "primaryDispositionId"),
        disposition,
        participants: people,
        shape: SHAPE,
    };
    Ok(event.into_event(r.clone()))
}
