//! The `holdfast` command line. The only module that reads the environment, prints, or
//! chooses exit codes (0 success, 1 failure, 2 usage).

pub mod output;

use crate::clock::{Clock, FakeClock, SystemClock};
use crate::config::{Pipeline, Policies};
use crate::crypto::kms::{Kms, LocalKeyring};
use crate::error::{Error, Result};
use crate::job::{self, BatchOptions, Context};
use crate::lake::layout;
use crate::lake::storage::{Put, Store};
use crate::landing::quarantine;
use crate::sources::SourceKind;
use clap::{Parser, Subcommand};
use output::Format;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Encrypted, tamper-evident retention store for contact-center interaction metadata"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args, Clone)]
pub struct StoreArgs {
    /// Store directory
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: PathBuf,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store and, if missing, the local keyring (outside the store)
    Init {
        #[command(flatten)]
        s: StoreArgs,
    },
    /// Append raw events to the landing zone ('-' reads stdin)
    Ingest {
        #[command(flatten)]
        s: StoreArgs,
        /// Payload shape of the input (`auto` recognises each line)
        #[arg(long, value_enum, default_value = "canonical")]
        source: SourceKind,
        /// Tenant for shapes whose payloads name none (genesys-details, nice-contacts)
        #[arg(long)]
        tenant: Option<String>,
        /// NDJSON files, or '-' for stdin
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Run one micro-batch: landing zone -> lake; prints a summary
    Batch {
        #[command(flatten)]
        s: StoreArgs,
        /// Pipeline file for the retention policy table and batch limits
        #[arg(long, env = "HOLDFAST_PIPELINE")]
        pipeline: Option<PathBuf>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Check manifests and data files (hashes, sizes, counts, chains) without a key; exit 1 on mismatch
    Verify {
        #[command(flatten)]
        s: StoreArgs,
        /// Also decrypt every record and check its AAD and record_hash (needs the keyring; audited)
        #[arg(long)]
        deep: bool,
        /// Who runs the deep check (recorded in the audit trail)
        #[arg(long, env = "HOLDFAST_ACTOR", default_value = "holdfast-verify")]
        actor: String,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Run SQL over `events`, `interactions`, `manifests` and `audit` (and, with --decrypt, `decrypted`)
    Query {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Write the result here instead of stdout
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// A named query from sql/ (its header comment lists its parameters)
        #[arg(long, conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// name=value for a --file query's {{name}} placeholders (bound as SQL string literals)
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        gate: Gate,
        #[arg(required_unless_present = "file")]
        sql: Option<String>,
    },
    /// Dry run of the current adapters and schema over the landing zone and quarantine; writes nothing
    Validate {
        #[command(flatten)]
        s: StoreArgs,
        /// Take every event to be of this schema version
        #[arg(long)]
        schema_version: Option<String>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Interactive SQL shell with history; statements end with `;`, `\q` quits. Reads
    /// statements from stdin when it is not a terminal.
    Sql {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        gate: Gate,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Retention sweep: delete expired files, rewrite files mixing expired and surviving records (plan from the manifests only)
    Sweep {
        #[command(flatten)]
        s: StoreArgs,
        /// Print the plan; change nothing
        #[arg(long)]
        dry_run: bool,
        /// The sweep's notion of now (RFC 3339); default: the clock
        #[arg(long)]
        now: Option<String>,
        /// Who runs the sweep (recorded with every deletion and refusal)
        #[arg(long, env = "HOLDFAST_ACTOR", default_value = "holdfast-sweep")]
        actor: String,
        /// Pipeline file: roles, and `retention.notify_command` for refusals
        #[arg(long, env = "HOLDFAST_PIPELINE")]
        pipeline: Option<PathBuf>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Retention questions
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Legal holds: place, release (two people), list
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// The tamper-evident audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect and replay quarantined events
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Run a pipeline file: initialise the store if needed, ingest its sources, run a batch
    Run {
        pipeline: PathBuf,
        /// Overrides the pipeline's store path
        #[arg(long, env = "HOLDFAST_STORE")]
        store: Option<PathBuf>,
        #[arg(long, env = "HOLDFAST_KEYRING")]
        keyring: Option<PathBuf>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Which policy an event has, why, when it expires, and what holds it
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

/// Store, actor and (for roles) pipeline of a hold change.
#[derive(Debug, clap::Args, Clone)]
pub struct HoldActor {
    #[command(flatten)]
    s: StoreArgs,
    /// Who changes the hold (recorded in the audit trail)
    #[arg(long, env = "HOLDFAST_ACTOR")]
    actor: String,
    /// Pipeline file with the [access] roles
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pipeline: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold (body: holdId, tenantId, scope, retentionOverride); pins covered files before returning
    Apply {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        file: PathBuf,
    },
    /// Ask for a hold's release (a second actor must approve)
    Release {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        hold: String,
    },
    /// Approve a requested release (must be another actor); unpins files no other hold needs
    Approve {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        hold: String,
    },
    /// What a hold body would cover: records per partition, and the files (changes nothing)
    Preview {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long)]
        file: PathBuf,
    },
    /// Reconcile active holds with the data and the storage flags; report and repair drift
    Sync {
        #[command(flatten)]
        s: StoreArgs,
    },
    /// List holds
    List {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole chain; exit 1 at the first broken link, naming it
    Verify {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List entries
    List {
        #[command(flatten)]
        s: StoreArgs,
        /// Only entries at or after this time (RFC 3339)
        #[arg(long)]
        since: Option<String>,
        /// Only this action (decrypt, decrypt.refused, quarantine.show, …)
        #[arg(long)]
        action: Option<String>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print the sequence and hash of the newest entry, to record outside the system
    Head {
        #[command(flatten)]
        s: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List entries: id, arrival, source, error code and path (no key needed)
    List {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Decrypt one entry and print its error and original bytes (audited)
    Show {
        #[command(flatten)]
        s: StoreArgs,
        id: String,
        /// Who is looking (recorded in the audit trail)
        #[arg(long, env = "HOLDFAST_ACTOR")]
        actor: String,
    },
    /// Run quarantined lines through the pipeline again (after a fix); those stored leave quarantine
    Replay {
        #[command(flatten)]
        s: StoreArgs,
        /// Entry ids to replay
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every entry
        #[arg(long)]
        all: bool,
        /// Tenant for entries whose source had none (fixes `source.tenant_missing`)
        #[arg(long)]
        tenant: Option<String>,
        /// Who replays (recorded in the audit trail)
        #[arg(long, env = "HOLDFAST_ACTOR")]
        actor: String,
        /// Pipeline file for the retention policy table and batch limits
        #[arg(long, env = "HOLDFAST_PIPELINE")]
        pipeline: Option<PathBuf>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreMarker {
    format: String,
    version: u32,
    created_at: String,
    kek_id: String,
}

fn parse_param(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

fn default_keyring() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| Error::Usage("set HOME, XDG_CONFIG_HOME or --keyring".into()))?,
        )
        .join(".config"),
    };
    Ok(base.join("holdfast").join("keyring.json"))
}

fn clock() -> Result<Arc<dyn Clock>> {
    match std::env::var("HOLDFAST_NOW") {
        Ok(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(&s)
                .map_err(|e| Error::Usage(format!("HOLDFAST_NOW: {e}")))?;
            Ok(Arc::new(FakeClock::new(t.to_utc())))
        }
        Err(_) => Ok(Arc::new(SystemClock)),
    }
}

/// Absolute path without requiring it to exist (for the keyring-inside-store check).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // resolve the deepest existing ancestor so that symlinks cannot hide containment
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|f| f.to_os_string()),
            existing.parent(),
        ) {
            (Some(f), Some(parent)) => {
                rest.push(f);
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for f in rest.into_iter().rev() {
        out.push(f);
    }
    out
}

fn keyring_path(s: &StoreArgs) -> Result<PathBuf> {
    let k = match &s.keyring {
        Some(k) => k.clone(),
        None => default_keyring()?,
    };
    let (k_abs, s_abs) = (absolute(&k), absolute(&s.store));
    if k_abs.starts_with(&s_abs) {
        return Err(Error::Usage(format!(
            "the keyring {} is inside the store {}; keep keys apart from the data they protect",
            k.display(),
            s.store.display()
        )));
    }
    Ok(k)
}

async fn init(s: &StoreArgs, clock: &dyn Clock, out: &mut dyn Write) -> Result<()> {
    let kpath = keyring_path(s)?;
    let now = crate::clock::fmt_ts(clock.now());
    let (ring, created) = if kpath.exists() {
        (LocalKeyring::load(&kpath)?, false)
    } else {
        (LocalKeyring::create(&kpath, &now)?, true)
    };
    let store = Store::open_local(&s.store, true)?;
    let marker = StoreMarker {
        format: "holdfast.store".into(),
        version: 1,
        created_at: now,
        kek_id: ring.kek_id().to_string(),
    };
    let path = object_store::path::Path::from(layout::STORE_MARKER);
    match store
        .put_new(
            &path,
            serde_json::to_vec_pretty(&marker).expect("serializes"),
        )
        .await?
    {
        Put::Created => {
            let _ = writeln!(
                out,
                "initialised store {} (KEK {} in {}{})",
                store.root().display(),
                ring.kek_id(),
                kpath.display(),
                if created { ", new keyring" } else { "" }
            );
        }
        Put::AlreadyExists => {
            let existing = read_marker(&store).await?;
            if existing.kek_id != ring.kek_id() {
                return Err(Error::Usage(format!(
                    "store {} is bound to KEK {}, but keyring {} holds {}",
                    store.root().display(),
                    existing.kek_id,
                    kpath.display(),
                    ring.kek_id()
                )));
            }
            let _ = writeln!(
                out,
                "store {} is already initialised (KEK {})",
                store.root().display(),
                ring.kek_id()
            );
        }
    }
    Ok(())
}

async fn read_marker(store: &Store) -> Result<StoreMarker> {
    let path = object_store::path::Path::from(layout::STORE_MARKER);
    let bytes = store.get_opt(&path).await?.ok_or_else(|| {
        Error::Usage(format!(
            "{} is not a holdfast store; run `holdfast init --store {}` first",
            store.root().display(),
            store.root().display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: unreadable store marker: {e}",
            store.root().display()
        ))
    })
}

/// Opens an initialised store and its keyring, checking that they belong together.
async fn open(s: &StoreArgs) -> Result<(Store, Arc<dyn Kms>)> {
    if !s.store.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a holdfast store; run `holdfast init --store {}` first",
            s.store.display(),
            s.store.display()
        )));
    }
    let store = Store::open_local(&s.store, false)?;
    let marker = read_marker(&store).await?;
    let kpath = keyring_path(s)?;
    let ring = LocalKeyring::load(&kpath)?;
    if ring.kek_id() != marker.kek_id {
        return Err(Error::Usage(format!(
            "store {} needs KEK {}, but keyring {} holds {}",
            store.root().display(),
            marker.kek_id,
            kpath.display(),
            ring.kek_id()
        )));
    }
    Ok((store, Arc::new(ring)))
}

/// Audits holds that lapsed on their expiration date (`legal_hold` / `lapsed`).
async fn record_lapses(
    audit: &crate::audit::Audit,
    actor: &str,
    lapsed: &[crate::retention::hold::Lapse],
) -> Result<()> {
    for l in lapsed {
        let detail = format!("expirationDate {} reached", crate::clock::fmt_ts(l.at));
        audit
            .record(
                actor,
                None,
                &crate::audit::HoldChanged {
                    hold: &l.hold_id,
                    change: "lapsed",
                    files: l.unpinned.len(),
                    detail: &detail,
                },
            )
            .await?;
    }
    Ok(())
}

/// How long `hold apply` and a sweep wait for each other (`_holds.lease`).
const HOLDS_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The sweep proper, under the lease (none for a dry run): lapse dated holds, plan, execute.
#[allow(clippy::too_many_arguments)]
async fn sweep(
    store: &Store,
    clock: &Arc<dyn Clock>,
    p: Option<&Pipeline>,
    s: &StoreArgs,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    format: Option<Format>,
    out: &mut dyn Write,
) -> Result<()> {
    // holds past their expiration date lapse first (audited under the sweep's actor)
    if !dry_run {
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
    // rewrites move survivors to a new DEK: only then is the keyring needed
    let kms = if plan.rewrite.is_empty() {
        None
    } else {
        Some(open(s).await?.1)
    };
    let report =
        crate::retention::execute(store, &audit, kms.as_deref(), actor, &plan, now, &sweep_id)
            .await?;
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
fn notify_refusal(p: Option<&Pipeline>, report: &serde_json::Value) {
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

fn context(store: Store, kms: Arc<dyn Kms>, clock: Arc<dyn Clock>) -> Context {
    Context {
        store,
        kms,
        clock,
        failpoint: std::env::var("HOLDFAST_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty()),
    }
}

fn batch_options(pipeline: Option<&Pipeline>, policies: Policies) -> BatchOptions {
    let b = pipeline.map(|p| p.batch.clone()).unwrap_or_default();
    BatchOptions {
        policies,
        max_input_bytes: b.max_input_mb << 20,
        memory_bytes: (b.memory_mb as usize) << 20,
        threads: if b.threads == 0 {
            job::default_threads()
        } else {
            b.threads
        },
    }
}

async fn ingest_paths(
    ctx: &Context,
    source: SourceKind,
    tenant: Option<&str>,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<()> {
    for input in inputs {
        let report = if input.as_os_str() == "-" {
            job::ingest(
                ctx,
                source,
                tenant,
                "stdin",
                std::io::stdin().lock(),
                job::default_threads(),
            )
            .await?
        } else {
            let f = std::fs::File::open(input)
                .map_err(|e| Error::io(format!("opening {}", input.display()), e))?;
            job::ingest(
                ctx,
                source,
                tenant,
                &input.display().to_string(),
                f,
                job::default_threads(),
            )
            .await?
        };
        let _ = writeln!(
            out,
            "ingested {} line(s) from {} into {} landing segment(s) ({} bytes, {} source)",
            report.lines,
            input.display(),
            report.segments,
            report.stored_bytes,
            report.source
        );
    }
    Ok(())
}

impl std::fmt::Display for crate::lake::verify::VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verified {} partition(s), {} manifest version(s), {} file(s), {} record(s), {} bytes",
            self.partitions, self.manifest_versions, self.files, self.records, self.bytes
        )?;
        if self.deep_records > 0 {
            writeln!(
                f,
                "deep: {} record(s) decrypted and checked against record_hash and AAD",
                self.deep_records
            )?;
        }
        for o in &self.orphans {
            writeln!(
                f,
                "note: uncommitted file {o} (left by an interrupted batch; the next batch removes it)"
            )?;
        }
        if self.removed_files > 0 {
            writeln!(
                f,
                "history: {} file(s) and {} record(s) removed by retention sweeps (see the removals table)",
                self.removed_files, self.removed_records
            )?;
        }
        for a in &self.awaiting_deletion {
            writeln!(
                f,
                "note: {a} was rewritten by a retention sweep and is deleted once its storage lock runs out"
            )?;
        }
        for p in &self.problems {
            writeln!(f, "MISMATCH {}: {}", p.object, p.problem)?;
        }
        write!(
            f,
            "{}",
            if self.problems.is_empty() {
                "OK"
            } else {
                "FAILED"
            }
        )
    }
}

struct QuarantineRow<'a> {
    id: &'a str,
    arrived_at: String,
    source: &'a str,
    error_code: &'a str,
    error_path: &'a str,
    schema_version: &'a str,
    segment_id: &'a str,
    line_no: u64,
    bytes: u64,
    attempts: u32,
}

impl Command {
    pub async fn run(self, out: &mut dyn Write) -> Result<()> {
        let clock = clock()?;
        match self {
            Command::Init { s } => init(&s, clock.as_ref(), out).await,
            Command::Ingest {
                s,
                source,
                tenant,
                inputs,
            } => {
                let (store, kms) = open(&s).await?;
                let ctx = context(store, kms, clock);
                ingest_paths(&ctx, source, tenant.as_deref(), &inputs, out).await
            }
            Command::Batch {
                s,
                pipeline,
                format,
            } => {
                let (store, kms) = open(&s).await?;
                let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
                let policies = match &p {
                    Some(p) => p.validate(pipeline.as_deref().unwrap_or(Path::new("")))?,
                    None => Policies::default(),
                };
                let ctx = context(store, kms, clock);
                let report = job::batch(&ctx, &batch_options(p.as_ref(), policies)).await?;
                output::write_report(format.unwrap_or(Format::Table), &report, out)
            }
            Command::Verify {
                s,
                deep,
                actor,
                format,
            } => {
                let (store, kms) = if deep {
                    let (st, k) = open(&s).await?;
                    (st, Some(k))
                } else {
                    let st = Store::open_local(&s.store, false)?;
                    read_marker(&st).await?;
                    (st, None)
                };
                let report = crate::lake::verify::verify(&store, kms.as_deref()).await?;
                if deep {
                    let event = crate::audit::DeepVerified {
                        files: report.files,
                        records: report.deep_records,
                        problems: report.problems.len(),
                    };
                    crate::audit::Audit::new(store.clone(), clock.clone())
                        .record(&actor, None, &event)
                        .await?;
                }
                output::write_report(format.unwrap_or(Format::Table), &report, out)?;
                if report.problems.is_empty() {
                    Ok(())
                } else {
                    Err(Error::VerifyFailed(report.problems.len()))
                }
            }
            Command::Query {
                s,
                format,
                output: target,
                file,
                params,
                gate,
                sql,
            } => {
                let sql = match (&file, sql) {
                    (Some(f), _) => crate::query::named::bind(
                        &std::fs::read_to_string(f)
                            .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
                        &params,
                    )
                    .map_err(Error::Usage)?,
                    (None, Some(q)) => q,
                    (None, None) => return Err(Error::Usage("give SQL or --file".into())),
                };
                let format = Format::resolve(format, Format::Csv);
                if format == Format::Parquet
                    && target.is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stdout())
                {
                    return Err(Error::Usage(
                        "Parquet is not for a terminal: add -o FILE".into(),
                    ));
                }
                let batches = execute(&s, &gate, &sql, &clock).await?;
                match target {
                    Some(path) => {
                        let mut f =
                            std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| {
                                Error::io(format!("creating {}", path.display()), e)
                            })?);
                        output::write_batches(format, &batches, &mut f)?;
                        f.flush()
                            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
                    }
                    None => output::write_batches(format, &batches, out),
                }
            }
            Command::Quarantine {
                command: QuarantineCommand::List { s, format },
            } => {
                let store = Store::open_local(&s.store, false)?;
                read_marker(&store).await?;
                let entries = quarantine::list(&store).await?;
                let rows: Vec<QuarantineRow> = entries
                    .iter()
                    .map(|e| QuarantineRow {
                        id: &e.id,
                        arrived_at: crate::clock::fmt_ts(e.arrived_at),
                        source: &e.source,
                        error_code: &e.error_code,
                        error_path: &e.error_path,
                        schema_version: &e.schema_version,
                        segment_id: &e.segment_id,
                        line_no: e.line_no,
                        bytes: e.original_bytes,
                        attempts: e.attempts,
                    })
                    .collect();
                let batch = quarantine_batch(&rows)?;
                output::write_batches(Format::resolve(format, Format::Csv), &[batch], out)
            }
            Command::Audit { command } => audit_command(command, clock, out).await,
            Command::Hold { command } => hold_command(command, clock, out).await,
            Command::Retention {
                command: RetentionCommand::Explain { s, event, pipeline },
            } => {
                let store = Store::open_local(&s.store, false)?;
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
                    return Err(Error::Usage(format!(
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
            Command::Sweep {
                s,
                dry_run,
                now,
                actor,
                pipeline,
                format,
            } => {
                let store = Store::open_local(&s.store, false)?;
                read_marker(&store).await?;
                let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
                if let Err(reason) = p
                    .as_ref()
                    .map(|p| p.access.clone())
                    .unwrap_or_default()
                    .may_sweep(&actor)
                {
                    crate::audit::Audit::new(store.clone(), clock.clone())
                        .record(
                            &actor,
                            None,
                            &crate::audit::Refused {
                                what: "sweep",
                                query: "",
                                reason: &reason,
                            },
                        )
                        .await?;
                    notify_refusal(
                        p.as_ref(),
                        &serde_json::json!({ "refused": "access_denied", "actor": actor, "reason": reason }),
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
                    let started = crate::clock::fmt_ts(clock.now());
                    let (lease, took_over) = crate::job::Lease::acquire(
                        &store,
                        &format!(
                            "sweep-{}",
                            layout::batch_id(
                                clock.now(),
                                rand::RngCore::next_u32(&mut rand::rng())
                            )
                        ),
                        &started,
                    )
                    .await?;
                    if took_over {
                        let latest = crate::lake::manifest::load_latest_all(&store).await?;
                        crate::job::repair_locks(&store, latest.iter()).await?;
                    }
                    // and no hold is placed while it decides which records survive
                    match crate::job::Lease::acquire_waiting(
                        &store,
                        layout::HOLDS_LEASE,
                        "sweep",
                        &started,
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
                let result = sweep(
                    &store,
                    &clock,
                    p.as_ref(),
                    &s,
                    &actor,
                    now,
                    dry_run,
                    format,
                    out,
                )
                .await;
                if let Some((lease, holds_lease)) = lease {
                    holds_lease.release(&store).await?;
                    lease.release(&store).await?;
                }
                result
            }
            Command::Sql { s, gate, format } => {
                shell(&s, &gate, &clock, format.unwrap_or(Format::Table), out).await
            }
            Command::Validate {
                s,
                schema_version,
                format,
            } => {
                let (store, kms) = open(&s).await?;
                let ctx = context(store, kms, clock);
                let report = job::validate(&ctx, schema_version.as_deref()).await?;
                output::write_report(format.unwrap_or(Format::Table), &report, out)
            }
            Command::Quarantine {
                command:
                    QuarantineCommand::Replay {
                        s,
                        ids,
                        all,
                        tenant,
                        actor,
                        pipeline,
                        format,
                    },
            } => {
                let (store, kms) = open(&s).await?;
                let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
                let policies = match &p {
                    Some(p) => p.validate(pipeline.as_deref().unwrap_or(Path::new("")))?,
                    None => Policies::default(),
                };
                let mut entries = quarantine::list(&store).await?;
                if !all {
                    for id in &ids {
                        if !entries.iter().any(|e| &e.id == id) {
                            return Err(Error::Usage(format!("quarantine entry {id} not found")));
                        }
                    }
                    entries.retain(|e| ids.contains(&e.id));
                }
                let replayed = crate::audit::Replayed {
                    entries: entries.iter().map(|e| e.id.clone()).collect(),
                };
                crate::audit::Audit::new(store.clone(), clock.clone())
                    .record(&actor, None, &replayed)
                    .await?;
                let ctx = context(store, kms, clock);
                let queued = job::queue_replay(&ctx, &entries, tenant.as_deref()).await?;
                let _ = writeln!(out, "replaying {queued} quarantine entr(ies)");
                let report = job::batch(&ctx, &batch_options(p.as_ref(), policies)).await?;
                output::write_report(format.unwrap_or(Format::Table), &report, out)
            }
            Command::Quarantine {
                command: QuarantineCommand::Show { s, id, actor },
            } => {
                let (store, kms) = open(&s).await?;
                let e = quarantine::get(&store, &id).await?;
                // recorded before the plaintext is shown
                crate::audit::Audit::new(store.clone(), clock.clone())
                    .record(
                        &actor,
                        None,
                        &crate::audit::QuarantineShown {
                            entry: &e.id,
                            dek: &e.dek_id,
                        },
                    )
                    .await?;
                let secret = quarantine::open(kms.as_ref(), &e).await?;
                let _ = writeln!(out, "id:          {}", e.id);
                let _ = writeln!(
                    out,
                    "source:      {} (segment {}, line {})",
                    e.source, e.segment_id, e.line_no
                );
                let _ = writeln!(out, "arrived:     {}", crate::clock::fmt_ts(e.arrived_at));
                let _ = writeln!(
                    out,
                    "error:       {} at {}",
                    e.error_code,
                    if e.error_path.is_empty() {
                        "/"
                    } else {
                        &e.error_path
                    }
                );
                let _ = writeln!(out, "message:     {}", secret.message);
                let _ = writeln!(out, "original ({} bytes):", secret.original.len());
                let _ = out.write_all(&secret.original);
                let _ = writeln!(out);
                Ok(())
            }
            Command::Run {
                pipeline,
                store,
                keyring,
                format,
            } => {
                let p = Pipeline::load(&pipeline)?;
                let policies = p.validate(&pipeline)?;
                let store_path = store.or_else(|| p.store.path.clone()).ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: no [store] path; pass --store",
                        pipeline.display()
                    ))
                })?;
                let s = StoreArgs {
                    store: store_path,
                    keyring,
                };
                let marker = s.store.join(layout::STORE_MARKER);
                if !marker.exists() {
                    init(&s, clock.as_ref(), out).await?;
                }
                let (store, kms) = open(&s).await?;
                let ctx = context(store, kms, clock);
                for src in &p.sources {
                    ingest_paths(&ctx, src.format, src.tenant.as_deref(), &src.paths, out).await?;
                }
                let report = job::batch(&ctx, &batch_options(Some(&p), policies)).await?;
                output::write_report(format.unwrap_or(Format::Table), &report, out)
            }
        }
    }
}

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("holdfast").join("sql_history"))
}

async fn run_statement(
    s: &StoreArgs,
    gate: &Gate,
    sql: &str,
    clock: &Arc<dyn Clock>,
    format: Format,
    out: &mut dyn Write,
) {
    match execute(s, gate, sql, clock).await {
        Ok(batches) => {
            if let Err(e) = output::write_batches(format, &batches, out) {
                eprintln!("error: {}", e.report());
            }
        }
        Err(e) => eprintln!("error: {}", e.report()),
    }
    let _ = out.flush();
}

/// `holdfast sql`: statements end with `;`. History keeps statements as the audit trail
/// records them (blind-index addresses redacted).
async fn shell(
    s: &StoreArgs,
    gate: &Gate,
    clock: &Arc<dyn Clock>,
    format: Format,
    out: &mut dyn Write,
) -> Result<()> {
    use std::io::{IsTerminal, Read};
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("reading stdin", e))?;
        for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            run_statement(s, gate, stmt, clock, format, out).await;
        }
        return Ok(());
    }
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Usage(format!("cannot start the line editor: {e}")))?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let _ = writeln!(
        out,
        "holdfast SQL on {} (tables: events, interactions, manifests, audit{}); end statements with ;  \\q quits",
        s.store.display(),
        if gate.decrypt { ", decrypted" } else { "" }
    );
    let _ = out.flush();
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "holdfast> "
        } else {
            "       -> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(_) => break,
        };
        if buf.is_empty() && line.trim() == "\\q" {
            break;
        }
        buf.push_str(&line);
        buf.push('\n');
        if let Some(end) = buf.rfind(';') {
            let stmt = buf[..end].trim().to_string();
            buf.clear();
            if stmt.is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(crate::audit::recorded_query(&stmt));
            run_statement(s, gate, &stmt, clock, format, out).await;
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Whether and for whom a query may decrypt (flags shared by `query` and `sql`).
#[derive(Debug, clap::Args, Clone)]
pub struct Gate {
    /// Enable decrypt_payload(), blind_index() and the `decrypted` view; needs --case and --actor; audited
    #[arg(long)]
    decrypt: bool,
    /// Case reference the decryption is for
    #[arg(long = "case")]
    case_ref: Option<String>,
    /// Who decrypts
    #[arg(long, env = "HOLDFAST_ACTOR")]
    actor: Option<String>,
    /// Tenant for the one-argument blind_index(address)
    #[arg(long)]
    tenant: Option<String>,
    /// Pipeline file with the [access] roles
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pipeline: Option<PathBuf>,
}

/// Runs one statement; with the gate open, decryption and blind indexes are enabled, checked
/// against case and role, and audited (refusals too) before any result is returned.
async fn execute(
    s: &StoreArgs,
    gate: &Gate,
    sql: &str,
    clock: &Arc<dyn Clock>,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let Gate {
        decrypt,
        case_ref,
        actor,
        tenant,
        pipeline,
    } = gate;
    let (decrypt, tenant, pipeline) = (*decrypt, tenant.clone(), pipeline.clone());
    let sql = sql.to_string();
    let clock = clock.clone();
    let batches = if decrypt {
        let (store, kms) = open(s).await?;
        let audit = crate::audit::Audit::new(store.clone(), clock.clone());
        let who = actor.clone().unwrap_or_default();
        let access = pipeline
            .as_deref()
            .map(Pipeline::load)
            .transpose()?
            .map(|p| p.access)
            .unwrap_or_default();
        let refusal = match (&case_ref, &actor) {
            (None, _) => Some("a case reference (--case) is required to decrypt".to_string()),
            (_, None) => Some("an actor (--actor) is required to decrypt".to_string()),
            (Some(c), Some(a)) if c.trim().is_empty() || a.trim().is_empty() => {
                Some("case and actor must not be empty".to_string())
            }
            (Some(_), Some(a)) => access.may_decrypt(a).err(),
        };
        let recorded = crate::audit::recorded_query(&sql);
        if let Some(reason) = refusal {
            audit
                .record(
                    if who.is_empty() { "unknown" } else { &who },
                    case_ref.as_deref(),
                    &crate::audit::Refused {
                        what: "decrypt",
                        query: &recorded,
                        reason: &reason,
                    },
                )
                .await?;
            return Err(Error::Refused(reason));
        }
        let (ctx, decryptor) = crate::query::session_with(
            &store,
            Some((kms, tenant)),
            crate::query::mentions_audit(&sql),
        )
        .await?;
        let batches = crate::query::run_sql(&ctx, &sql).await?;
        let decryptor = decryptor.expect("decryption enabled");
        let (events, deks) = decryptor.opened();
        let records = events.len() as u64;
        // recorded before anything is shown
        let event = crate::audit::Decrypted {
            query: &recorded,
            records,
            event_ids: crate::audit::id_list(events),
            deks_unwrapped: deks,
            blind_indexes: decryptor.blind_indexes(),
        };
        audit.record(&who, case_ref.as_deref(), &event).await?;
        batches
    } else {
        let store = Store::open_local(&s.store, false)?;
        read_marker(&store).await?;
        let (ctx, _) =
            crate::query::session_with(&store, None, crate::query::mentions_audit(&sql)).await?;
        crate::query::run_sql(&ctx, &sql).await?
    };
    Ok(batches)
}

async fn hold_command(
    command: HoldCommand,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    use crate::retention::hold::{self, Hold, HoldRequest, Status};
    let (s, actor, pipeline) = match &command {
        HoldCommand::Apply { who, .. }
        | HoldCommand::Release { who, .. }
        | HoldCommand::Approve { who, .. } => {
            (who.s.clone(), who.actor.clone(), who.pipeline.clone())
        }
        HoldCommand::List { s, .. } | HoldCommand::Preview { s, .. } | HoldCommand::Sync { s } => {
            (s.clone(), String::new(), None)
        }
    };
    let store = Store::open_local(&s.store, false)?;
    read_marker(&store).await?;
    let audit = crate::audit::Audit::new(store.clone(), clock.clone());
    let refuse = |hold_id: String, reason: String| {
        let audit = audit.clone();
        let actor = actor.clone();
        async move {
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &hold_id,
                        change: "refused",
                        files: 0,
                        detail: &reason,
                    },
                )
                .await?;
            Err::<(), Error>(Error::Refused(reason))
        }
    };
    if !matches!(
        command,
        HoldCommand::List { .. } | HoldCommand::Preview { .. } | HoldCommand::Sync { .. }
    ) {
        let access = pipeline
            .as_deref()
            .map(Pipeline::load)
            .transpose()?
            .map(|p| p.access)
            .unwrap_or_default();
        if let Err(reason) = access.may_hold(&actor) {
            let id = match &command {
                HoldCommand::Release { hold, .. } | HoldCommand::Approve { hold, .. } => {
                    hold.clone()
                }
                _ => String::new(),
            };
            return refuse(id, reason).await;
        }
    }
    let (registry, sha) = hold::load(&store).await?;
    let now = clock.now();
    match command {
        HoldCommand::Preview { file, .. } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
            let req: HoldRequest = serde_json::from_str(&text)
                .map_err(|e| Error::Usage(format!("{}: not a hold body: {e}", file.display())))?;
            let h = Hold {
                hold_id: req.hold_id,
                tenant_id: req.tenant_id,
                scope: req.scope,
                retention_override: None,
                placed_by: String::new(),
                placed_at: now,
                status: Status::Active,
                lapses_at: None,
                files: Vec::new(),
                covered: Default::default(),
            };
            let p = hold::preview(&store, &h).await?;
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&p).expect("serializes")
            );
            Ok(())
        }
        HoldCommand::Sync { .. } => {
            let r = hold::sync(&store, now).await?;
            record_lapses(&audit, "holdfast-sync", &r.lapsed).await?;
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&r).expect("serializes")
            );
            Ok(())
        }
        HoldCommand::List { format, .. } => {
            let rows: Vec<serde_json::Value> = registry
                .holds
                .iter()
                .map(|h| serde_json::json!({"hold_id": h.hold_id, "tenant_id": h.tenant_id, "status": serde_json::to_value(&h.status).unwrap()["state"], "files": h.files.len(), "placed_by": h.placed_by, "placed_at": crate::clock::fmt_ts(h.placed_at), "lapses_at": h.lapses_at.map(crate::clock::fmt_ts)}))
                .collect();
            match format.unwrap_or(Format::Table) {
                Format::Table => {
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
                }
                _ => {
                    for r in &rows {
                        let _ = writeln!(out, "{r}");
                    }
                }
            }
            Ok(())
        }
        HoldCommand::Apply { file, .. } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
            let req: HoldRequest = serde_json::from_str(&text)
                .map_err(|e| Error::Usage(format!("{}: not a hold body: {e}", file.display())))?;
            let lapses_at = match req.lapse_date(now) {
                Ok(d) => d,
                Err(reason) => {
                    return refuse(
                        req.hold_id.clone(),
                        format!("hold {} not placed: {reason}", req.hold_id),
                    )
                    .await;
                }
            };
            // never while a sweep decides which records survive (it holds this lease briefly)
            let holder = format!("hold-apply-{}", std::process::id());
            let (lease, _) = crate::job::Lease::acquire_waiting(
                &store,
                layout::HOLDS_LEASE,
                &holder,
                &crate::clock::fmt_ts(now),
                HOLDS_LEASE_WAIT,
            )
            .await?;
            let result = async {
                let (registry, sha) = hold::load(&store).await?;
                if registry
                    .holds
                    .iter()
                    .any(|h| h.hold_id == req.hold_id && h.active())
                {
                    return refuse(
                        req.hold_id.clone(),
                        format!("hold {} is already active", req.hold_id),
                    )
                    .await;
                }
                let mut h = Hold {
                    hold_id: req.hold_id,
                    tenant_id: req.tenant_id,
                    scope: req.scope,
                    retention_override: req.retention_override,
                    placed_by: actor.clone(),
                    placed_at: now,
                    status: Status::Active,
                    lapses_at,
                    files: Vec::new(),
                    covered: Default::default(),
                };
                let (found, examined) =
                    hold::covered_files_since(&store, &h, &Default::default()).await?;
                for (f, n) in found {
                    h.covered.insert(f.clone(), n);
                    h.files.push(f);
                }
                // pin at the storage layer before the hold is recorded and before we return
                for f in &h.files {
                    store
                        .legal_hold(&object_store::path::Path::from(f.as_str()), true)
                        .await?;
                }
                let id = h.hold_id.clone();
                let mut holds = registry.holds.clone();
                holds.push(h.clone());
                if !hold::commit(&store, &registry, sha, holds).await? {
                    return Err(Error::Usage(
                        "the hold registry changed meanwhile; run the command again".into(),
                    ));
                }
                // a batch that committed files after our scan but read the registry before our
                // commit did not pin them for this hold: look again now that it is recorded
                let late = hold::covered_files_since(&store, &h, &examined).await?.0;
                for (f, _) in &late {
                    store
                        .legal_hold(&object_store::path::Path::from(f.as_str()), true)
                        .await?;
                }
                if !late.is_empty() {
                    hold::add_files(&store, &id, &late).await?;
                }
                let n = h.files.len() + late.len();
                audit
                    .record(
                        &actor,
                        None,
                        &crate::audit::HoldChanged {
                            hold: &id,
                            change: "placed",
                            files: n,
                            detail: "",
                        },
                    )
                    .await?;
                let _ = writeln!(out, "hold {id} placed: {n} file(s) pinned");
                Ok(())
            }
            .await;
            lease.release(&store).await?;
            result
        }
        HoldCommand::Release { hold: id, .. } => {
            let mut holds = registry.holds.clone();
            let Some(h) = holds
                .iter_mut()
                .find(|h| h.hold_id == id && h.status == Status::Active)
            else {
                return refuse(id.clone(), format!("no active hold {id}")).await;
            };
            h.status = Status::ReleaseRequested {
                by: actor.clone(),
                at: now,
            };
            if !hold::commit(&store, &registry, sha, holds).await? {
                return Err(Error::Usage(
                    "the hold registry changed meanwhile; run the command again".into(),
                ));
            }
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &id,
                        change: "release_requested",
                        files: 0,
                        detail: "",
                    },
                )
                .await?;
            let _ = writeln!(
                out,
                "release of {id} requested; a second actor must approve it"
            );
            Ok(())
        }
        HoldCommand::Approve { hold: id, .. } => {
            let mut holds = registry.holds.clone();
            let Some(i) = holds.iter().position(|h| {
                h.hold_id == id && matches!(h.status, Status::ReleaseRequested { .. })
            }) else {
                return refuse(id.clone(), format!("hold {id} has no release request")).await;
            };
            let Status::ReleaseRequested { by, .. } = holds[i].status.clone() else {
                unreachable!()
            };
            if by == actor {
                return refuse(
                    id.clone(),
                    format!("{actor} requested this release; a different actor must approve it"),
                )
                .await;
            }
            holds[i].status = Status::Released {
                requested_by: by,
                approved_by: actor.clone(),
                at: now,
            };
            let still: std::collections::HashSet<&String> = holds
                .iter()
                .filter(|h| h.active())
                .flat_map(|h| h.files.iter())
                .collect();
            let freed: Vec<String> = holds[i]
                .files
                .iter()
                .filter(|f| !still.contains(f))
                .cloned()
                .collect();
            if !hold::commit(&store, &registry, sha, holds.clone()).await? {
                return Err(Error::Usage(
                    "the hold registry changed meanwhile; run the command again".into(),
                ));
            }
            for f in &freed {
                store
                    .legal_hold(&object_store::path::Path::from(f.as_str()), false)
                    .await?;
            }
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &id,
                        change: "released",
                        files: freed.len(),
                        detail: "",
                    },
                )
                .await?;
            let _ = writeln!(
                out,
                "hold {id} released; {} file(s) unpinned ({} still held by other holds)",
                freed.len(),
                holds[i].files.len() - freed.len()
            );
            Ok(())
        }
    }
}

async fn audit_command(
    command: AuditCommand,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let open_store = |s: &StoreArgs| -> Result<Store> { Ok(Store::open_local(&s.store, false)?) };
    match command {
        AuditCommand::Verify { s, format } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let report = crate::audit::Audit::new(store, clock).verify().await?;
            output::write_report(format.unwrap_or(Format::Table), &report, out)?;
            match report.broken {
                Some(p) => Err(Error::AuditBroken(p.object)),
                None => Ok(()),
            }
        }
        AuditCommand::Head { s } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let head = crate::audit::Audit::new(store, clock).head().await?;
            let _ = writeln!(out, "{head}");
            Ok(())
        }
        AuditCommand::List {
            s,
            since,
            action,
            format,
        } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let since = since
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.to_utc())
                        .map_err(|e| Error::Usage(format!("--since: {e}")))
                })
                .transpose()?;
            let entries = crate::audit::Audit::new(store, clock).entries().await?;
            let rows: Vec<_> = entries
                .into_iter()
                .filter(|(e, _)| {
                    since.is_none_or(|t| e.at >= t)
                        && action.as_ref().is_none_or(|a| &e.action == a)
                })
                .collect();
            let batch = crate::query::audit_batch(&rows)?;
            output::write_batches(Format::resolve(format, Format::Csv), &[batch], out)
        }
    }
}

fn quarantine_batch(rows: &[QuarantineRow]) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    let text = |f: fn(&QuarantineRow) -> String| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let num = |f: fn(&QuarantineRow) -> i64| {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    arrow::array::RecordBatch::try_from_iter(vec![
        ("id", text(|r| r.id.to_string())),
        ("arrived_at", text(|r| r.arrived_at.clone())),
        ("source", text(|r| r.source.to_string())),
        ("error_code", text(|r| r.error_code.to_string())),
        ("error_path", text(|r| r.error_path.to_string())),
        ("schema_version", text(|r| r.schema_version.to_string())),
        ("segment_id", text(|r| r.segment_id.to_string())),
        ("line_no", num(|r| r.line_no as i64)),
        ("bytes", num(|r| r.bytes as i64)),
        ("attempts", num(|r| r.attempts as i64)),
    ])
    .map_err(|e| Error::Query(e.into()))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = rt.block_on(cli.command.run(&mut out));
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}
