//! The sweep use case, one entry point for the command line and a server alike: the access
//! check (the retention role, for every tenant; a refusal is audited and notified), the
//! leases (the store's, so no batch runs beside it, and the holds', so no hold is placed while
//! it decides), lapsed holds recorded, the plan from the manifests, and its execution.
//! Time comes from the session's clock; only a dry run may plan as of another time.

use super::{SweepError, SweepPlan, SweepReport, SweepRun, execute, hold, inputs, plan};
use crate::access::{Role, Session};
use crate::audit::Audit;
use crate::crypto::kms::Kms;
use crate::job::{Fence, Lease};
use crate::lake::layout;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// How long a hold and a sweep wait for each other (the `holds` lease).
pub const HOLDS_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Told about refusals (for want of the role, or files refused by storage locks), as JSON:
/// `retention.notify_command` on the command line, a webhook in a server.
pub trait Notify: Send + Sync {
    fn refusal(&self, report: &serde_json::Value);
}

/// Tells nobody.
pub struct NoNotify;

impl Notify for NoNotify {
    fn refusal(&self, _: &serde_json::Value) {}
}

/// Opens the key service when a sweep needs it: after the access check, the lapses and the
/// plan, never for a dry run (so a refusal is audited whatever state the keyring is in).
pub trait KeyService: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Result<Arc<dyn Kms>, BoxError>>;
}

/// Why the key service could not be opened.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A key service already at hand.
impl KeyService for Arc<dyn Kms> {
    fn open(&self) -> BoxFuture<'_, Result<Arc<dyn Kms>, BoxError>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// What a sweep runs with: who asks (their session: store, clock, identity, policy), the key
/// service (a sweep that changes anything needs it; a dry run does not), the crash points of
/// test builds, and whom to tell about refusals.
pub struct SweepContext<'a> {
    pub session: &'a Session,
    pub keys: &'a dyn KeyService,
    pub failpoints: crate::hooks::Failpoints,
    pub notify: &'a dyn Notify,
}

/// What is asked for.
#[derive(Debug, Clone, Default)]
pub struct SweepRequest {
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// Plan as of this time (a dry run only: a sweep that changes anything uses the clock).
    pub as_of: Option<DateTime<Utc>>,
    /// Files whose last record expires within this many days are kept whole, not rewritten.
    pub rewrite_min_days: u32,
    /// Which half of the sweep runs (both by default).
    pub step: SweepStep,
}

/// The halves of a sweep, for running them as different principals (separation of duties
/// on S3: the one that unwraps keys never deletes, the one that deletes never decrypts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SweepStep {
    /// Both halves.
    #[default]
    All,
    /// Rewrites of mixed files (unwraps keys, writes new files, releases the legal holds of
    /// files no hold lists any more); deletes nothing.
    Rewrite,
    /// Deletes whole expired files and rewritten files whose lock ran out; decrypts nothing
    /// and releases no legal hold.
    Delete,
}

#[derive(Debug)]
pub enum SweepOutcome {
    /// A dry run's plan.
    Planned(SweepPlan),
    /// What the sweep did; files refused by storage locks are in `refused` (notified).
    Swept(SweepReport),
}

/// Runs a sweep (or plans one): see the module doc.
pub async fn run(ctx: &SweepContext<'_>, req: &SweepRequest) -> Result<SweepOutcome, SweepError> {
    let session = ctx.session;
    // a sweep deletes every tenant's expired records: the retention role, for all tenants
    if let Err(reason) = session.check(Role::Retention, None) {
        let reason = format!("{reason}; sweeps need the retention role");
        let event = crate::audit::SweepRefused {
            reason: &reason,
            dry_run: req.dry_run,
        };
        session.record(None, &event).await?;
        let id = &session.identity;
        ctx.notify.refusal(&serde_json::json!({ "refused": "access_denied", "actor": id.actor, "os_user": id.os_user, "reason": reason }));
        return Err(SweepError::Refused(reason));
    }
    if req.dry_run {
        let now = req.as_of.unwrap_or_else(|| session.clock.now());
        let (plan, _) = make_plan(session, now, req).await?;
        return Ok(SweepOutcome::Planned(plan));
    }
    if req.as_of.is_some() {
        return Err(SweepError::Invalid(
            "a sweep that deletes or records anything uses the clock; --now is for a dry run"
                .into(),
        ));
    }
    let (lease, holds_lease) = take_leases(session).await?;
    let fence = Fence::of(&[&lease, &holds_lease]);
    let result = sweep(ctx, req, &fence).await;
    let store = &session.store;
    holds_lease.release(store).await?;
    lease.release(store).await?;
    let report = result?;
    if !report.refused.is_empty() {
        ctx.notify
            .refusal(&serde_json::to_value(&report).expect("serializes"));
    }
    Ok(SweepOutcome::Swept(report))
}

/// The store's lease (never beside a batch, whose leftover cleanup would take an uncommitted
/// rewrite for debris; missing locks of a killed batch set), then the holds' lease.
async fn take_leases(session: &Session) -> Result<(Lease, Lease), SweepError> {
    let (store, clock) = (&session.store, &session.clock);
    let random = rand::RngCore::next_u32(&mut rand::rng());
    let holder = format!("sweep-{}", layout::batch_id(clock.now(), random));
    let (lease, _) = Lease::acquire(store, clock.clone(), &holder).await?;
    // a killed batch may have committed files without their locks
    let repaired = async {
        let latest = crate::lake::manifest::load_latest_all(store).await?;
        crate::job::repair_locks(store, latest.iter()).await?;
        Ok::<_, SweepError>(())
    };
    if let Err(e) = repaired.await {
        lease.release(store).await?;
        return Err(e);
    }
    // and no hold is placed while it decides which records survive
    let name = layout::HOLDS_LEASE;
    match Lease::acquire_waiting(store, clock.clone(), name, "sweep", HOLDS_LEASE_WAIT).await {
        Ok((holds_lease, _)) => Ok((lease, holds_lease)),
        Err(e) => {
            lease.release(store).await?;
            Err(e.into())
        }
    }
}

/// The sweep proper, under the leases: lapse dated holds, plan, execute.
async fn sweep(
    ctx: &SweepContext<'_>,
    req: &SweepRequest,
    fence: &Fence,
) -> Result<SweepReport, SweepError> {
    let session = ctx.session;
    let (store, clock) = (&session.store, &session.clock);
    let actor = session.identity.actor.as_str();
    let now = clock.now();
    let audit = Audit::new(store.clone(), clock.clone());
    // holds past their expiration date lapse first (audited under the sweep's actor)
    fence.check().await?;
    let lapsed = hold::lapse_due(store, now).await?;
    hold::record_lapses(&audit, actor, &lapsed).await?;
    let (plan, latest) = make_plan(session, now, req).await?;
    // rewrites move survivors to a new DEK, and every sweep signs the store head
    let kms = ctx.keys.open().await.map_err(SweepError::Keys)?;
    let sweep_id = format!(
        "sweep-{}",
        layout::batch_id(now, rand::RngCore::next_u32(&mut rand::rng()))
    );
    let run = SweepRun {
        store,
        audit: &audit,
        actor,
        now,
        sweep_id: &sweep_id,
        failpoints: &ctx.failpoints,
        fence,
        step: req.step,
    };
    execute(&run, kms.as_ref(), &plan, latest).await
}

/// The plan at `now`, and the manifests it was made from.
async fn make_plan(
    session: &Session,
    now: DateTime<Utc>,
    req: &SweepRequest,
) -> Result<(SweepPlan, super::plan::Latest), SweepError> {
    let (registry, _) = hold::load(&session.store).await?;
    let held = held_files(&registry.holds, now);
    let i = inputs(&session.store).await?;
    let mut p = plan(now, i.files, i.awaiting, &held, req.rewrite_min_days);
    match req.step {
        SweepStep::All => {}
        SweepStep::Rewrite => {
            p.delete.clear();
            p.awaiting_deletion.clear();
        }
        SweepStep::Delete => p.rewrite.clear(),
    }
    Ok((p, i.latest))
}

/// The files active holds list, each with the most records one hold is known to cover in
/// it (0: not known).
pub fn held_files(holds: &[hold::Hold], now: DateTime<Utc>) -> HashMap<String, u64> {
    let mut held: HashMap<String, u64> = HashMap::new();
    for h in holds.iter().filter(|h| h.protecting(now)) {
        for f in &h.files {
            let n = held.entry(f.clone()).or_insert(0);
            *n = (*n).max(h.covered.get(f).copied().unwrap_or(0));
        }
    }
    held
}

#[cfg(test)]
mod tests;
