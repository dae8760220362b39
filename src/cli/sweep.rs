//! `sweep` and `retention explain`.

use super::*;
use crate::retention::{self, sweep::SweepOutcome};

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
    /// Run one half, as its own principal: `rewrite` (unwraps keys, deletes nothing) or
    /// `delete` (deletes, decrypts nothing)
    #[arg(long, value_enum, default_value = "all")]
    pub step: retention::sweep::SweepStep,
    /// Output format
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
            step,
            format,
        } = self;
        let store = Store::open(&s.store, false)?;
        read_marker(&store).await?;
        let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
        let session = session(&store, clock, &who).await?;
        let as_of = now
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.to_utc())
                    .map_err(|e| Error::Usage(format!("--now: {e}")))
            })
            .transpose()?;
        let notify = NotifyCommand(p.as_ref());
        let ctx = retention::sweep::SweepContext {
            session: &session,
            keys: &Keyring(&s),
            failpoints: crate::hooks::Failpoints::from_env(),
            notify: &notify,
        };
        let req = retention::sweep::SweepRequest {
            dry_run,
            as_of,
            rewrite_min_days: p.as_ref().map_or_else(
                || crate::config::RetentionConfig::default().rewrite_min_days,
                |p| p.retention.rewrite_min_days,
            ),
            step,
        };
        let report = match retention::sweep::run(&ctx, &req).await {
            Ok(SweepOutcome::Planned(plan)) => {
                let plan = serde_json::to_string_pretty(&plan).expect("serializes");
                let _ = writeln!(out, "{plan}");
                return Ok(());
            }
            Ok(SweepOutcome::Swept(report)) => report,
            Err(retention::SweepError::Refused(reason)) => return Err(Error::Refused(reason)),
            Err(retention::SweepError::Invalid(what)) => return Err(Error::Usage(what)),
            // the keyring's own error, as `open` gave it (a keyring inside the store is a
            // usage error)
            Err(retention::SweepError::Keys(e)) => {
                return Err(match e.downcast::<Error>() {
                    Ok(e) => *e,
                    Err(e) => retention::SweepError::Keys(e).into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        output::write_report(format.unwrap_or(Format::Table), &report, out)?;
        if report.refused.is_empty() {
            return Ok(());
        }
        // refusals (notified): fail the run so the scheduler sees it
        Err(Error::Refused(format!(
            "{} file(s) refused by storage locks; see the report and the audit trail",
            report.refused.len()
        )))
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
        /// The event id (event_id of a stored event)
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
        let Some(e) = retention::explain::explain(&store, &policies, &event, clock.now()).await?
        else {
            return Err(Error::NotFound(format!(
                "event {event} is not stored (never, expired on arrival, or swept)"
            )));
        };
        let _ = writeln!(
            out,
            "event {event}: tenant {}, {}, occurred {}",
            e.tenant, e.interaction_type, e.occurred_at
        );
        let _ = writeln!(
            out,
            "stored with policy {}, expires {} (fixed when the record was written)",
            e.stored_policy, e.expires_at
        );
        let _ = writeln!(
            out,
            "the current table gives {} ({} years {} months {} days): {}",
            e.policy, e.period.years, e.period.months, e.period.days, e.why
        );
        if e.table_changed() {
            let _ = writeln!(
                out,
                "note: the table changed since; a policy change applies to new records only"
            );
        }
        let holds = if e.holds.is_empty() {
            "none".to_string()
        } else {
            e.holds.join(", ")
        };
        let _ = writeln!(out, "legal holds: {holds}");
        Ok(())
    }
}

/// The store's keyring, opened when the sweep needs it.
struct Keyring<'a>(&'a StoreArgs);

impl retention::sweep::KeyService for Keyring<'_> {
    fn open(
        &self,
    ) -> futures::future::BoxFuture<'_, std::result::Result<Arc<dyn Kms>, retention::sweep::BoxError>>
    {
        Box::pin(async move { Ok(open(self.0).await?.1) })
    }
}

/// Runs `retention.notify_command` with a refusal as JSON on its standard input (a sweep
/// refused by a storage lock or for want of the retention role). A command that cannot start
/// is a warning: the run fails with exit 1 anyway.
struct NotifyCommand<'a>(Option<&'a Pipeline>);

impl retention::sweep::Notify for NotifyCommand<'_> {
    fn refusal(&self, report: &serde_json::Value) {
        notify_refusal(self.0, report)
    }
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
