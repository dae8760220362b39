//! The legal-holds API, the same calls as `holdfast hold`, made as the principal the bearer
//! token maps to (a person's user name in the store's access policy; never a header it
//! chose). Every route needs the compliance role; refusals are audited as on the command line.
//!
//! - `PATCH /api/v2/retention/holds`: places a hold from the design's body (`holdId`,
//!   `tenantId` or `X-Tenant-Id`, `scope`, `retentionOverride`); 200 once every covered file
//!   is pinned at the storage layer.
//! - `GET /api/v2/retention/holds[/{holdId}]`: the holds, or one.
//! - `POST /api/v2/retention/holds/{holdId}/release`, then `/approve` by a second person.

use super::{Answer, State, error, header, json};
use crate::access::Session;
use crate::error::Error;
use crate::retention::hold::{HoldRequest, lifecycle};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Instant;

/// Where the API lives.
pub const PREFIX: &str = "/api/v2/retention/holds";

enum Op {
    Apply(Bytes, Option<String>),
    List(Option<String>),
    Release(String),
    Approve(String),
}

/// Answers a request under [`PREFIX`] (`rest`: what follows it).
pub(super) async fn handle(state: &Arc<State>, req: Request<Incoming>, rest: &str) -> Answer {
    let Some(principal) = state
        .tokens
        .check(header(&req, "authorization"))
        .map(|p| p.principal.clone())
    else {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    let id = rest.trim_start_matches('/');
    let op = match (req.method(), id) {
        (&Method::PATCH, "") => {
            let tenant = header(&req, "x-tenant-id").map(str::to_string);
            match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => Op::Apply(b.to_bytes(), tenant),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
            }
        }
        (&Method::GET, "") => Op::List(None),
        (&Method::GET, id) if !id.contains('/') => Op::List(Some(id.to_string())),
        (&Method::POST, id) if id.ends_with("/release") => {
            Op::Release(id.trim_end_matches("/release").to_string())
        }
        (&Method::POST, id) if id.ends_with("/approve") => {
            Op::Approve(id.trim_end_matches("/approve").to_string())
        }
        _ => return error(StatusCode::NOT_FOUND, "no such route"),
    };
    let started = Instant::now();
    let placing = matches!(op, Op::Apply(..));
    // the hold calls are not `Send` futures: a blocking thread drives them on this runtime
    let (s, rt) = (state.clone(), tokio::runtime::Handle::current());
    let done = tokio::task::spawn_blocking(move || rt.block_on(run(&s, &principal, op))).await;
    match done {
        Ok(Ok(mut v)) => {
            if placing {
                // the answer waits for the pins: this is the hold's whole sync time
                state
                    .metrics
                    .hold_sync
                    .observe(started.elapsed().as_secs_f64());
            }
            if let Some(o) = v.as_object_mut() {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                o.insert("elapsedMs".into(), serde_json::json!(ms));
            }
            json(StatusCode::OK, v)
        }
        Ok(Err(e)) => error(status_of(&e), e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the hold call failed: {e}"),
        ),
    }
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Refused(_) | Error::Access(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Usage(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn run(state: &State, principal: &str, op: Op) -> Result<serde_json::Value, Error> {
    let ctx = &state.ctx;
    let session = Session::open(&ctx.store, ctx.clock.clone(), principal, None).await?;
    let c = lifecycle::Changer {
        session: &session,
        kms: ctx.kms.as_ref(),
    };
    lifecycle::authorize(c, "").await?;
    match op {
        Op::Apply(body, tenant) => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| Error::Usage("the hold body is not UTF-8".into()))?;
            let mut req = HoldRequest::parse(text)
                .map_err(|e| Error::Usage(format!("not a hold body: {e}")))?;
            match (&req.tenant_id, tenant) {
                (Some(a), Some(b)) if *a != b => {
                    return Err(Error::Usage(format!(
                        "X-Tenant-Id {b} and the body's tenantId {a} differ"
                    )));
                }
                (None, Some(b)) => req.tenant_id = Some(b),
                _ => {}
            }
            let placed = lifecycle::apply(c, req, false).await?;
            Ok(
                serde_json::json!({"holdId": placed.hold_id, "status": "ACTIVE", "filesPinned": placed.files_pinned}),
            )
        }
        Op::List(one) => {
            let holds = lifecycle::list(&ctx.store).await?;
            let rows: Vec<serde_json::Value> = holds
                .iter()
                .filter(|h| one.as_deref().is_none_or(|id| h.hold_id == id))
                .map(|h| {
                    let status = serde_json::to_value(&h.status).unwrap_or_default();
                    serde_json::json!({"holdId": h.hold_id, "tenantId": h.tenant_id, "status": status["state"], "files": h.files.len(), "placedBy": h.placed_by, "placedAt": crate::clock::fmt_ts(h.placed_at), "lapsesAt": h.lapses_at.map(crate::clock::fmt_ts)})
                })
                .collect();
            match one {
                Some(id) => rows
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::NotFound(format!("no hold {id}"))),
                None => Ok(serde_json::json!({"holds": rows})),
            }
        }
        Op::Release(id) => {
            let r = lifecycle::request_release(c, &id).await?;
            Ok(serde_json::json!({"holdId": r.hold_id, "status": "RELEASE_REQUESTED"}))
        }
        Op::Approve(id) => {
            let r = lifecycle::approve_release(c, &id).await?;
            Ok(
                serde_json::json!({"holdId": r.hold_id, "status": "RELEASED", "unpinned": r.unpinned, "stillHeld": r.still_held}),
            )
        }
    }
}
