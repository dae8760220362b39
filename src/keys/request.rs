//! What every two-person key change shares (`keys retire`, `keys bind`, `keys migrate`): a
//! request is an audit entry with an id, and its approval is another administrator's (another
//! OS user), within [`REQUEST_DAYS`], once. Refusals are audited (`keys.refused`).

use super::KeysRefused;
use crate::access::Session;
use crate::error::{Error, Result};

/// Days a request may wait for its approval.
pub const REQUEST_DAYS: i64 = 7;

/// Refuses `command` for `reason`, audited.
pub(crate) async fn refuse<T>(session: &Session, command: &str, reason: String) -> Result<T> {
    let event = KeysRefused {
        command,
        reason: &reason,
    };
    session.record(None, &event).await?;
    Err(Error::Refused(reason))
}

/// A new request id: `prefix` and 8 random hex digits.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut r = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut r);
    format!("{prefix}-{}", hex::encode(r))
}

/// The request `id` (its `requested` audit entry's details), when the session's user may
/// approve it now: not approved yet (`approved`), asked by someone else, not lapsed. `what`
/// names the kind of request in messages.
pub(crate) async fn approvable(
    session: &Session,
    id: &str,
    (requested, approved): (&str, &str),
    what: &str,
) -> Result<serde_json::Value> {
    let entries = session.audit.entries().await?;
    let of = |action: &str| {
        entries
            .iter()
            .map(|(e, _)| e)
            .find(|e| e.action == action && e.details["request"].as_str() == Some(id))
    };
    let Some(asked) = of(requested) else {
        return Err(Error::NotFound(format!("no key {what} request {id}")));
    };
    if of(approved).is_some() {
        let done = format!("request {id} was approved already");
        return Err(Error::conflict(done, false));
    }
    let me = &session.identity.os_user;
    if asked.details["requested_by"].as_str() == Some(me.as_str()) {
        let reason = format!(
            "{me} asked for request {id}; a different administrator (another OS user) must approve it"
        );
        return refuse(session, "approve", reason).await;
    }
    if session.clock.now() - asked.at > chrono::Duration::days(REQUEST_DAYS) {
        let reason = format!("request {id} is older than {REQUEST_DAYS} days; ask again");
        return refuse(session, "approve", reason).await;
    }
    Ok(asked.details.clone())
}

/// A text field of a request's details (empty when missing).
pub(crate) fn text(details: &serde_json::Value, key: &str) -> String {
    details[key].as_str().unwrap_or_default().to_string()
}

/// A field of request `id`'s `requested` entry, if there is one (for the caller to open the
/// key service the request concerns before approving it).
pub(crate) async fn field(
    session: &Session,
    id: &str,
    requested: &str,
    key: &str,
) -> Result<Option<String>> {
    let entries = session.audit.entries().await?;
    Ok(entries
        .iter()
        .map(|(e, _)| e)
        .find(|e| e.action == requested && e.details["request"].as_str() == Some(id))
        .and_then(|e| e.details[key].as_str().map(str::to_string)))
}
