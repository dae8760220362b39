//! `hold`: legal holds.

use super::*;

/// Store and actor of a hold change (the compliance role comes from the store's policy).
#[derive(Debug, clap::Args, Clone)]
pub struct HoldActor {
    #[command(flatten)]
    s: StoreArgs,
    #[command(flatten)]
    who: ActorArg,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold (body: holdId, tenantId, scope, retentionOverride); pins covered files before returning
    #[command(after_help = "Example:\n  holdfast hold apply --store data --file hold.json")]
    Apply {
        #[command(flatten)]
        who: HoldActor,
        /// Hold body (JSON): holdId, tenantId, scope, retentionOverride
        #[arg(long)]
        file: PathBuf,
        /// Place it even though it covers no stored record (for records still to come)
        #[arg(long)]
        allow_empty: bool,
    },
    /// Ask for a hold's release (a second actor must approve)
    #[command(after_help = "Example:\n  holdfast hold release --store data --hold LIT-2025-001")]
    Release {
        #[command(flatten)]
        who: HoldActor,
        /// The hold id (holdId of its body)
        #[arg(long)]
        hold: String,
    },
    /// Approve a requested release (must be another actor); unpins files no other hold needs
    #[command(after_help = "Example:\n  holdfast hold approve --store data --hold LIT-2025-001")]
    Approve {
        #[command(flatten)]
        who: HoldActor,
        /// The hold id (holdId of its body)
        #[arg(long)]
        hold: String,
    },
    /// What a hold body would cover: records per partition, and the files (changes nothing)
    #[command(after_help = "Example:\n  holdfast hold preview --store data --file hold.json")]
    Preview {
        #[command(flatten)]
        s: StoreArgs,
        /// Hold body (JSON): holdId, tenantId, scope, retentionOverride
        #[arg(long)]
        file: PathBuf,
    },
    /// Reconcile active holds with the data and the storage flags; report and repair drift
    #[command(after_help = "Example:\n  holdfast hold sync --store data")]
    Sync {
        #[command(flatten)]
        s: StoreArgs,
    },
    /// List holds
    #[command(after_help = "Example:\n  holdfast hold list --store data")]
    List {
        #[command(flatten)]
        s: StoreArgs,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

/// Reads a hold body (`--file`).
fn read_body(file: &Path) -> Result<crate::retention::hold::HoldRequest> {
    let text = files::read_to_string(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    crate::retention::hold::HoldRequest::parse(&text)
        .map_err(|e| Error::Usage(format!("{}: not a hold body: {e}", file.display())))
}

impl HoldCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        use crate::retention::hold::lifecycle;
        let who = match self {
            HoldCommand::Preview { s, file } => {
                let store = crate::store::open_unkeyed(&s.store).await?;
                let p = lifecycle::preview_request(&store, read_body(&file)?, clock.now()).await?;
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&p).expect("serializes")
                );
                return Ok(());
            }
            HoldCommand::Sync { s } => {
                crate::store::open_unkeyed(&s.store).await?;
                let (store, kms) = open(&s).await?;
                let audit = crate::audit::Audit::new(store.clone(), clock.clone());
                let actor = crate::access::identity::os_user();
                let now = clock.now();
                let synced =
                    lifecycle::reconcile(&store, &audit, &actor, kms.as_ref(), now).await?;
                // the report first: a store that no longer matches its head fails the commit
                let report = serde_json::to_string_pretty(&synced.report).expect("serializes");
                let _ = writeln!(out, "{report}");
                return synced.head;
            }
            HoldCommand::List { s, format } => {
                let store = crate::store::open_unkeyed(&s.store).await?;
                return list(&lifecycle::list(&store).await?, format, out);
            }
            HoldCommand::Apply { ref who, .. }
            | HoldCommand::Release { ref who, .. }
            | HoldCommand::Approve { ref who, .. } => who.clone(),
        };
        // changes need the compliance role, for the hold's tenant, from the store's policy;
        // every change is recorded in the signed store head: the keyring is needed up front
        let store = crate::store::open_unkeyed(&who.s.store).await?;
        let session = session(&store, clock, &who.who).await?;
        let kms = open(&who.s).await?.1;
        let c = lifecycle::Changer {
            session: &session,
            kms: kms.as_ref(),
        };
        match self {
            HoldCommand::Apply {
                file, allow_empty, ..
            } => {
                // no compliance role at all: refused before the body is read
                lifecycle::authorize(c, "").await?;
                let placed = lifecycle::apply(c, read_body(&file)?, allow_empty).await?;
                let (id, n) = (placed.hold_id, placed.files_pinned);
                let _ = writeln!(out, "hold {id} placed: {n} file(s) pinned");
            }
            HoldCommand::Release { hold, .. } => {
                let r = lifecycle::request_release(c, &hold).await?;
                let _ = writeln!(
                    out,
                    "release of {} requested; a second actor must approve it",
                    r.hold_id
                );
            }
            HoldCommand::Approve { hold, .. } => {
                let r = lifecycle::approve_release(c, &hold).await?;
                let _ = writeln!(
                    out,
                    "hold {} released; {} file(s) unpinned ({} still held by other holds)",
                    r.hold_id, r.unpinned, r.still_held
                );
            }
            _ => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// `hold list`: one line per hold, or one JSON object per line.
fn list(
    holds: &[crate::retention::hold::Hold],
    format: Option<Format>,
    out: &mut dyn Write,
) -> Result<()> {
    let rows: Vec<serde_json::Value> = holds
        .iter()
        .map(|h| serde_json::json!({"hold_id": h.hold_id, "tenant_id": h.tenant_id, "status": serde_json::to_value(&h.status).unwrap()["state"], "files": h.files.len(), "placed_by": h.placed_by, "placed_at": crate::clock::fmt_ts(h.placed_at), "lapses_at": h.lapses_at.map(crate::clock::fmt_ts)}))
        .collect();
    if format.unwrap_or(Format::Table) != Format::Table {
        for r in &rows {
            let _ = writeln!(out, "{r}");
        }
        return Ok(());
    }
    for r in &rows {
        let lapses = r["lapses_at"]
            .as_str()
            .map(|t| format!(" lapses={t}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {} {} files={} by={} at={}{lapses}",
            r["hold_id"].as_str().unwrap_or(""),
            r["tenant_id"].as_str().unwrap_or("*"),
            r["status"].as_str().unwrap_or(""),
            r["files"],
            r["placed_by"].as_str().unwrap_or(""),
            r["placed_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
