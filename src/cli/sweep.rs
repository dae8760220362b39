//! `sweep` and `retention explain`.

use super::*;

/// Retention sweep: delete expired files, rewrite files mixing expired and surviving records (plan from the manifests only)
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Plan as of this time (RFC 3339), to see what a later sweep would do; only with
    /// --dry-run: a sweep that deletes or records anything uses the real clock
    #[arg(long, requires = "dry_run")]
    pub now: Option<String>,
    #[command(flatten)]
    pub who: ActorArg,
    /// Pipeline file: `retention.notify_command` for refusals, `rewrite_min_days`
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pub pipeline: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl SweepArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let SweepArgs {
            s,
            dry_run,
            now,
            who,
            pipeline,
            format,
        } = self;
        let store = Store::open(&s.store, false)?;
        read_marker(&store).await?;
        let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
        // a sweep deletes every tenant's expired records: the retention role, for all tenants
        let session = session(&store, clock.clone(), &who).await?;
        let actor = session.identity.actor.clone();
        if let Err(reason) = session.check(crate::access::Role::Retention, None) {
            let reason = format!("{reason}; sweeps need the retention role");
            session
                .record(
                    None,
                    &crate::audit::SweepRefused {
                        reason: &reason,
                        dry_run,
                    },
                )
                .await?;
            notify_refusal(
                p.as_ref(),
                &serde_json::json!({ "refused": "access_denied", "actor": actor, "os_user": session.identity.os_user, "reason": reason }),
            );
            return Err(Error::Refused(reason));
        }
        let now = match now {
            Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|e| Error::Usage(format!("--now: {e}")))?
                .to_utc(),
            None => clock.now(),
        };
        // a sweep writes lake files (rewrites) and commits manifests: never beside a
        // batch, whose orphan cleanup would take an uncommitted rewrite for debris
        let lease = if dry_run {
            None
        } else {
            let holder = format!(
                "sweep-{}",
                layout::batch_id(clock.now(), rand::RngCore::next_u32(&mut rand::rng()))
            );
            let (lease, _) = crate::job::Lease::acquire(&store, clock.clone(), &holder).await?;
            // a killed batch may have committed files without their locks
            let repaired = async {
                let latest = crate::lake::manifest::load_latest_all(&store).await?;
                Ok::<_, Error>(crate::job::repair_locks(&store, latest.iter()).await?)
            };
            if let Err(e) = repaired.await {
                lease.release(&store).await?;
                return Err(e);
            }
            // and no hold is placed while it decides which records survive
            match crate::job::Lease::acquire_waiting(
                &store,
                clock.clone(),
                layout::HOLDS_LEASE,
                "sweep",
                HOLDS_LEASE_WAIT,
            )
            .await
            {
                Ok((holds_lease, _)) => Some((lease, holds_lease)),
                Err(e) => {
                    lease.release(&store).await?;
                    return Err(e.into());
                }
            }
        };
        let fence = match &lease {
            Some((a, b)) => crate::job::Fence::of(&[a, b]),
            None => crate::job::Fence::none(),
        };
        let result = sweep(
            &store,
            &clock,
            p.as_ref(),
            &s,
            &actor,
            now,
            dry_run,
            format,
            &fence,
            out,
        )
        .await;
        if let Some((lease, holds_lease)) = lease {
            holds_lease.release(&store).await?;
            lease.release(&store).await?;
        }
        result
    }
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Which policy an event has, why, when it expires, and what holds it
    #[command(
        after_help = "Example:\n  holdfast retention explain --store data --event 1fdcee50-50d7-4d5e-96f8-a8fe31707850"
    )]
    Explain {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long)]
        event: String,
        /// Pipeline file with the current policy table (default: the presets)
        #[arg(long, env = "HOLDFAST_PIPELINE")]
        pipeline: Option<PathBuf>,
    },
}

impl RetentionCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let RetentionCommand::Explain { s, event, pipeline } = self;
        let store = Store::open(&s.store, false)?;
        read_marker(&store).await?;
        let policies = match pipeline.as_deref() {
            Some(p) => Pipeline::load(p)?.validate(p)?,
            None => Policies::default(),
        };
        let ctx = crate::query::session(&store).await?;
        let sql = format!(
            "SELECT tenant_id, interaction_id, interaction_type, occurred_at, policy_id, expires_at, queue_id, agent_ids FROM events WHERE event_id = '{}'",
            event.replace('\'', "''")
        );
        let batches = crate::query::run_sql(&ctx, &sql).await?;
        let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(Error::NotFound(format!(
                "event {event} is not stored (never, expired on arrival, or swept)"
            )));
        };
        use arrow::array::{Array, AsArray};
        let text = |i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
                .map(|a| a.as_string::<i32>().value(0).to_string())
                .unwrap_or_default()
        };
        let (tenant, interaction, kind, occurred, stored_policy, expires) =
            (text(0), text(1), text(2), text(3), text(4), text(5));
        let queue = (!b.column(6).is_null(0)).then(|| text(6));
        let agents_list = b.column(7).as_list::<i32>().value(0);
        let agents: Vec<String> = agents_list
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let (policy, period, why) = policies.explain(&tenant, &kind);
        let _ = writeln!(
            out,
            "event {event}: tenant {tenant}, {kind}, occurred {occurred}"
        );
        let _ = writeln!(
            out,
            "stored with policy {stored_policy}, expires {expires} (fixed when the record was written)"
        );
        let _ = writeln!(
            out,
            "the current table gives {policy} ({} years {} months {} days): {why}",
            period.years, period.months, period.days
        );
        if policy.as_ref() != stored_policy {
            let _ = writeln!(
                out,
                "note: the table changed since; a policy change applies to new records only"
            );
        }
        let (registry, _) = crate::retention::hold::load(&store).await?;
        let at = chrono::DateTime::parse_from_rfc3339(&occurred)
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let agent_refs: Vec<&str> = agents.iter().map(String::as_str).collect();
        let holding: Vec<&str> = registry
            .holds
            .iter()
            .filter(|h| {
                h.protecting(clock.now())
                    && h.covers(&tenant, &interaction, queue.as_deref(), &agent_refs, at)
            })
            .map(|h| h.hold_id.as_str())
            .collect();
        let _ = writeln!(
            out,
            "legal holds: {}",
            if holding.is_empty() {
                "none".to_string()
            } else {
                holding.join(", ")
            }
        );
        Ok(())
    }
}

/// How long `hold apply` and a sweep wait for each other (the `holds` lease).
pub(super) const HOLDS_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The sweep proper, under the lease (none for a dry run): lapse dated holds, plan, execute.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sweep(
    store: &Store,
    clock: &Arc<dyn Clock>,
    p: Option<&Pipeline>,
    s: &StoreArgs,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    format: Option<Format>,
    fence: &crate::job::Fence,
    out: &mut dyn Write,
) -> Result<()> {
    // holds past their expiration date lapse first (audited under the sweep's actor)
    if !dry_run {
        fence.check().await.map_err(crate::job::JobError::from)?;
        let lapsed = crate::retention::hold::lapse_due(store, now).await?;
        record_lapses(
            &crate::audit::Audit::new(store.clone(), clock.clone()),
            actor,
            &lapsed,
        )
        .await?;
    }
    let (registry, _) = crate::retention::hold::load(store).await?;
    let mut held: std::collections::HashMap<String, u64> = Default::default();
    for h in registry.holds.iter().filter(|h| h.protecting(now)) {
        for f in &h.files {
            let n = held.entry(f.clone()).or_insert(0);
            *n = (*n).max(h.covered.get(f).copied().unwrap_or(0));
        }
    }
    let min_days = p.map_or_else(
        || crate::config::RetentionConfig::default().rewrite_min_days,
        |p| p.retention.rewrite_min_days,
    );
    let (files, awaiting) = crate::retention::inputs(store).await?;
    let plan = crate::retention::plan(now, files, awaiting, &held, min_days);
    let format = format.unwrap_or(Format::Table);
    if dry_run {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&plan).expect("serializes")
        );
        return Ok(());
    }
    let sweep_id = format!(
        "sweep-{}",
        layout::batch_id(now, rand::RngCore::next_u32(&mut rand::rng()))
    );
    let audit = crate::audit::Audit::new(store.clone(), clock.clone());
    // rewrites move survivors to a new DEK, and every sweep signs the store head
    let kms = open(s).await?.1;
    let failpoints = crate::hooks::Failpoints::from_env();
    let run = crate::retention::SweepRun {
        store,
        audit: &audit,
        actor,
        now,
        sweep_id: &sweep_id,
        failpoints: &failpoints,
        fence,
    };
    let report = crate::retention::execute(&run, kms.as_ref(), &plan).await?;
    output::write_report(format, &report, out)?;
    if report.refused.is_empty() {
        return Ok(());
    }
    // refusals: notify, and fail the run so the scheduler sees it
    notify_refusal(p, &serde_json::to_value(&report).expect("serializes"));
    Err(Error::Refused(format!(
        "{} file(s) refused by storage locks; see the report and the audit trail",
        report.refused.len()
    )))
}

/// Runs `retention.notify_command` with `report` as JSON on its standard input (a sweep
/// refused by a storage lock or for want of the retention role). A command that cannot start
/// is a warning: the run fails with exit 1 anyway.
pub(super) fn notify_refusal(p: Option<&Pipeline>, report: &serde_json::Value) {
    use std::io::Write as _;
    let Some(cmd) = p
        .and_then(|p| p.retention.notify_command.clone())
        .filter(|c| !c.is_empty())
    else {
        return;
    };
    match std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut c) => {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(&serde_json::to_vec(report).expect("serializes"));
            }
            match c.wait() {
                Ok(st) if !st.success() => {
                    eprintln!("warning: notify command {:?} exited with {st}", cmd[0])
                }
                Err(e) => eprintln!("warning: notify command {:?}: {e}", cmd[0]),
                _ => {}
            }
        }
        Err(e) => eprintln!("warning: notify command {:?} failed to start: {e}", cmd[0]),
    }
}
