//! `retention explain`: which policy a stored event has, why, when it expires, whether the
//! current policy table agrees, and which legal holds cover it.

use super::SweepError;
use crate::config::{Period, Policies};
use crate::storage::Store;
use arrow::array::{Array, AsArray};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What is known about one stored event's retention.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub tenant: String,
    pub interaction_type: String,
    /// As stored (RFC 3339).
    pub occurred_at: String,
    /// The policy and expiry fixed when the record was written.
    pub stored_policy: String,
    pub expires_at: String,
    /// What the current table gives, for how long, and why.
    pub policy: Arc<str>,
    pub period: Period,
    pub why: String,
    /// Active holds covering the event at `now`.
    pub holds: Vec<String>,
}

impl Explanation {
    /// Whether the table changed since the record was written (a change applies to new
    /// records only).
    pub fn table_changed(&self) -> bool {
        self.policy.as_ref() != self.stored_policy
    }
}

/// Explains `event` against `policies` at `now`; `None` when no such event is stored.
pub async fn explain(
    store: &Store,
    policies: &Policies,
    event: &str,
    now: DateTime<Utc>,
) -> Result<Option<Explanation>, SweepError> {
    let ctx = crate::query::session(store).await?;
    let sql = format!(
        "SELECT tenant_id, interaction_id, interaction_type, occurred_at, policy_id, expires_at, queue_id, agent_ids FROM events WHERE event_id = '{}'",
        event.replace('\'', "''")
    );
    let batches = crate::query::run_sql(&ctx, &sql).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let text = |i: usize| {
        arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
            .map(|a| a.as_string::<i32>().value(0).to_string())
            .unwrap_or_default()
    };
    let (tenant, interaction, kind, occurred) = (text(0), text(1), text(2), text(3));
    let queue = (!b.column(6).is_null(0)).then(|| text(6));
    let agents_list = b.column(7).as_list::<i32>().value(0);
    let agents: Vec<&str> = agents_list.as_string::<i32>().iter().flatten().collect();
    let (policy, period, why) = policies.explain(&tenant, &kind);
    let (registry, _) = super::hold::load(store).await?;
    let at = chrono::DateTime::parse_from_rfc3339(&occurred)
        .map(|t| t.to_utc())
        .unwrap_or_default();
    let holds = registry
        .holds
        .iter()
        .filter(|h| {
            h.protecting(now) && h.covers(&tenant, &interaction, queue.as_deref(), &agents, at)
        })
        .map(|h| h.hold_id.clone())
        .collect();
    Ok(Some(Explanation {
        stored_policy: text(4),
        expires_at: text(5),
        tenant,
        interaction_type: kind,
        occurred_at: occurred,
        policy,
        period,
        why,
        holds,
    }))
}
