//! `ingest`, `batch`, `run` and `validate`: the pipeline commands.

use super::*;

/// Append raw events to the landing zone ('-' reads stdin)
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Payload shape of the input (`auto` recognises each line)
    #[arg(long, value_enum, default_value = "canonical")]
    pub source: SourceKind,
    /// Tenant for shapes whose payloads name none (genesys-details, nice-contacts)
    #[arg(long)]
    pub tenant: Option<String>,
    /// NDJSON files (plain, gzip or zstd), s3://BUCKET/KEY objects, s3://BUCKET/PREFIX/
    /// (every object under it), or '-' for stdin
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

impl IngestArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let IngestArgs {
            s,
            source,
            tenant,
            inputs,
        } = self;
        let (store, kms) = open(&s).await?;
        let ctx = context(store, kms, clock);
        ingest_paths(&ctx, source, tenant.as_deref(), &inputs, out).await?;
        Ok(())
    }
}

/// Run one micro-batch: landing zone -> lake; prints a summary
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Pipeline file for the retention policy table and batch limits
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl BatchArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let BatchArgs {
            s,
            pipeline,
            format,
        } = self;
        let kms_cfg = match pipeline.as_deref() {
            Some(p) => Pipeline::load(p)?.kms,
            None => None,
        };
        let (store, kms) = super::kms::open_for(&s, kms_cfg.as_ref()).await?;
        let (p, policies) = crate::store::policies_for(&store, pipeline.as_deref()).await?;
        let ctx = context(store, kms, clock);
        let mut report = job::batch(&ctx, &job::batch_options(p.as_ref(), policies)).await?;
        warn_damaged(&report);
        warn_cryptoperiod(&ctx, kms_cfg.as_ref(), &mut report).await;
        output::write_report(format.unwrap_or(Format::Table), &report, out)
    }
}

/// A KEK past its cryptoperiod, in the report and on stderr; a KEK whose versions cannot be
/// read is said, never fatal (the batch has committed).
async fn warn_cryptoperiod(
    ctx: &Context,
    kms: Option<&crate::config::KmsConfig>,
    report: &mut job::BatchReport,
) {
    let days = kms
        .and_then(|k| k.cryptoperiod_days)
        .unwrap_or(crate::keys::DEFAULT_CRYPTOPERIOD_DAYS);
    let warning = match ctx.kms.info().await {
        Ok(info) => crate::keys::cryptoperiod_warning(&info, ctx.clock.now(), days),
        Err(e) => Some(format!(
            "the KEK's versions could not be read ({e}); `holdfast keys status` checks its age"
        )),
    };
    if let Some(w) = warning {
        eprintln!("warning: {w}");
        report.warnings.push(w);
    }
}

/// Damaged landing segments and partitions, on stderr as well as in the report. The exit code
/// stays 0: the batch committed everything it could and lost nothing (see README).
fn warn_damaged(report: &job::BatchReport) {
    for moved in &report.isolated {
        eprintln!(
            "warning: a landing segment that does not parse or fails authentication was moved to {moved} (audited as landing.isolated)"
        );
    }
    if report.events_blocked > 0 {
        eprintln!(
            "warning: {} event(s) stay in landing: the latest manifest of {} cannot be read; run `holdfast verify`",
            report.events_blocked,
            report.damaged_partitions.join(", ")
        );
    }
}

/// Run a pipeline file: initialise the store if needed, ingest its sources, run a batch
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Pipeline file (TOML): store, sources, retention, batch limits
    pub pipeline: PathBuf,
    /// Overrides the pipeline's store (a path, file:///path or memory://NAME)
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: Option<crate::storage::StoreUrl>,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl RunArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let RunArgs {
            pipeline,
            store,
            keyring,
            format,
        } = self;
        let p = Pipeline::load(&pipeline)?;
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
        // with a machine format, stdout is one JSON document: the prose goes to stderr
        let format = format.unwrap_or(Format::Table);
        let mut stderr = std::io::stderr();
        let prose: &mut dyn Write = if format == Format::Table {
            &mut *out
        } else {
            &mut stderr
        };
        let initialised = crate::store::initialised(&s.store).await?.is_none();
        if initialised {
            init_from_pipeline(&s, &p, clock.clone(), prose).await?;
        }
        let (store, kms) = super::kms::open_for(&s, p.kms.as_ref()).await?;
        let (_, policies) = crate::store::policies_for(&store, Some(&pipeline)).await?;
        let ctx = context(store, kms, clock);
        let mut ingested = Vec::new();
        for src in &p.sources {
            let tenant = src.tenant.as_deref();
            ingested.extend(ingest_paths(&ctx, src.format, tenant, &src.paths, prose).await?);
        }
        let mut report = job::batch(&ctx, &job::batch_options(Some(&p), policies)).await?;
        warn_damaged(&report);
        warn_cryptoperiod(&ctx, p.kms.as_ref(), &mut report).await;
        if format == Format::Table {
            return output::write_report(format, &report, out);
        }
        let doc = serde_json::json!({ "init": initialised, "ingest": ingested, "batch": report });
        output::write_json(format, &doc, out)
    }
}

/// Creates the store as a pipeline file describes it (its floor, its key service): what
/// `run` and `serve` do for a store that does not exist yet.
pub(super) async fn init_from_pipeline(
    s: &StoreArgs,
    p: &Pipeline,
    clock: Arc<dyn Clock>,
    prose: &mut dyn Write,
) -> Result<()> {
    let opts = InitOptions {
        floor_days: p.store.retention_floor_days,
        group_readable: false,
        create_bucket: false,
        object_lock_mode: None,
        remote: p
            .kms
            .as_ref()
            .map(super::kms::remote_of)
            .transpose()?
            .flatten(),
    };
    init(s, &opts, clock, prose).await
}

/// Dry run of the current adapters and schema over the landing zone and quarantine; writes nothing
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Take every event to be of this schema version
    #[arg(long)]
    pub schema_version: Option<String>,
    /// Case reference the landing and quarantined lines are decrypted for (audited)
    #[arg(long = "case")]
    pub case_ref: Option<String>,
    #[command(flatten)]
    pub who: ActorArg,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl ValidateArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let ValidateArgs {
            s,
            schema_version,
            case_ref,
            who,
            format,
        } = self;
        // it decrypts the landing zone and the quarantine: through the gate, audited
        let d = Decrypting { s, case_ref, who };
        let (kms, gate) = d
            .open(crate::access::gate::Purpose::Validate, clock.clone())
            .await?;
        let ctx = context(gate.session().store.clone(), kms, clock);
        let report = job::validate_opened(&gate, &ctx, schema_version.as_deref()).await?;
        output::write_report(format.unwrap_or(Format::Table), &report, out)
    }
}

pub(super) fn context(store: Store, kms: Arc<dyn Kms>, clock: Arc<dyn Clock>) -> Context {
    Context {
        store,
        kms,
        clock,
        failpoints: crate::hooks::Failpoints::from_env(),
    }
}

/// Refuses the whole command, before anything is ingested, when any input is missing,
/// unreadable or a directory; names every one.
fn check_inputs(inputs: &[PathBuf]) -> Result<()> {
    let problems: Vec<String> = inputs
        .iter()
        .filter(|i| i.as_os_str() != "-" && s3_input(i).is_none())
        .filter_map(|i| {
            let problem = match files::metadata(i) {
                Err(e) => e.to_string(),
                Ok(m) if m.is_dir() => "is a directory".into(),
                Ok(_) => files::open(i).err()?.to_string(),
            };
            Some(format!("{}: {problem}", i.display()))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "nothing ingested: {}",
            problems.join("; ")
        )))
    }
}

/// `(bucket, key or prefix)` of an `s3://` input.
fn s3_input(input: &std::path::Path) -> Option<(&str, &str)> {
    input.to_str().and_then(crate::storage::s3::input::parse)
}

/// The line of prose for one input landed.
fn say_ingested(out: &mut dyn Write, input: &str, report: &job::IngestReport) {
    let _ = writeln!(
        out,
        "ingested {} line(s) from {input}{} into {} landing segment(s) ({} bytes, {} source){}",
        report.lines,
        report
            .compression
            .map(|c| format!(" ({c}, {} bytes decompressed)", report.input_bytes))
            .unwrap_or_default(),
        report.segments,
        report.stored_bytes,
        report.source,
        if report.too_large > 0 {
            format!(
                "; {} line(s) over the {} MiB limit quarantined (event.too_large)",
                report.too_large,
                crate::sources::MAX_LINE_BYTES >> 20
            )
        } else {
            String::new()
        }
    );
}

/// What one input of `ingest` or `run` landed.
#[derive(Debug, Serialize)]
pub(super) struct Ingested {
    pub input: String,
    #[serde(flatten)]
    pub report: job::IngestReport,
}

/// Lands every input, a line of prose on `out` for each.
pub(super) async fn ingest_paths(
    ctx: &Context,
    source: SourceKind,
    tenant: Option<&str>,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Vec<Ingested>> {
    check_inputs(inputs)?;
    let mut ingested = Vec::with_capacity(inputs.len());
    for input in inputs {
        if let Some((bucket, key)) = s3_input(input) {
            let objects = crate::storage::s3::input::Inputs::connect(bucket)?;
            for key in objects.keys(key).await? {
                let name = format!("s3://{bucket}/{key}");
                let bytes = objects.get(&key).await?;
                let reader = std::io::Cursor::new(bytes);
                let threads = job::default_threads();
                let report = job::ingest(ctx, source, tenant, &name, reader, threads).await?;
                say_ingested(out, &name, &report);
                ingested.push(Ingested {
                    input: name,
                    report,
                });
            }
            continue;
        }
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
            let f = files::open(input)
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
        say_ingested(out, &input.display().to_string(), &report);
        ingested.push(Ingested {
            input: input.display().to_string(),
            report,
        });
    }
    Ok(ingested)
}
