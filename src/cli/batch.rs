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
    /// NDJSON files, or '-' for stdin
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
        ingest_paths(&ctx, source, tenant.as_deref(), &inputs, out).await
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
}

/// Run a pipeline file: initialise the store if needed, ingest its sources, run a batch
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub pipeline: PathBuf,
    /// Overrides the pipeline's store path
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: Option<PathBuf>,
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
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
            init(&s, clock.clone(), out).await?;
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
        let report = job::validate(&ctx, schema_version.as_deref()).await?;
        let event = crate::access::gate::Validated {
            landing_segments: report.landing_segments,
            quarantine_entries: report.quarantine_entries,
            schema_version,
        };
        gate.record(&event).await?;
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

pub(super) fn batch_options(pipeline: Option<&Pipeline>, policies: Policies) -> BatchOptions {
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

pub(super) async fn ingest_paths(
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
