//! `quarantine list|show|replay`.

use super::*;

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List entries: id, arrival, source, error code and path (no key needed)
    #[command(after_help = "Example:\n  holdfast quarantine list --store data")]
    List {
        #[command(flatten)]
        s: StoreArgs,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Decrypt one entry and print its error and original bytes (audited)
    #[command(
        after_help = "Example:\n  holdfast quarantine show --store data --case DEMO-1 \"$(holdfast quarantine list --store data | sed -n 2p | cut -d, -f1)\""
    )]
    Show {
        #[command(flatten)]
        s: StoreArgs,
        /// The entry id (`holdfast quarantine list` shows them)
        id: String,
        /// Case reference the entry is opened for (audited)
        #[arg(long = "case")]
        case_ref: Option<String>,
        #[command(flatten)]
        who: ActorArg,
    },
    /// Run quarantined lines through the pipeline again (after a fix); those stored leave quarantine
    #[command(
        after_help = "Example:\n  holdfast quarantine replay --store data --case DEMO-1 --all"
    )]
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
        /// Case reference the lines are decrypted for (audited)
        #[arg(long = "case")]
        case_ref: Option<String>,
        #[command(flatten)]
        who: ActorArg,
        /// Pipeline file for the retention policy table and batch limits
        #[arg(long, env = "HOLDFAST_PIPELINE")]
        pipeline: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

impl QuarantineCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        match self {
            QuarantineCommand::List { s, format } => list(s, format, out).await,
            QuarantineCommand::Replay {
                s,
                ids,
                all,
                tenant,
                case_ref,
                who,
                pipeline,
                format,
            } => {
                let d = Decrypting { s, case_ref, who };
                replay(d, ids, all, tenant, pipeline, format, clock, out).await
            }
            QuarantineCommand::Show {
                s,
                id,
                case_ref,
                who,
            } => show(Decrypting { s, case_ref, who }, id, clock, out).await,
        }
    }
}

pub(super) async fn list(s: StoreArgs, format: Option<Format>, out: &mut dyn Write) -> Result<()> {
    let store = crate::store::open_unkeyed(&s.store).await?;
    let entries = crate::landing::quarantine::list(&store).await?;
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

/// The store, case and actor of a command that decrypts.
pub(super) struct Decrypting {
    pub s: StoreArgs,
    pub case_ref: Option<String>,
    pub who: ActorArg,
}

impl Decrypting {
    /// Opens the store and keyring, authenticates, and passes the decryption gate for
    /// `purpose` (a refusal is audited).
    pub(super) async fn open(
        &self,
        purpose: crate::access::gate::Purpose,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<dyn Kms>, crate::access::gate::Opened)> {
        let (store, kms) = open(&self.s).await?;
        let session = session(&store, clock, &self.who).await?;
        let req = crate::access::gate::Request {
            purpose,
            case: self.case_ref.as_deref(),
            tenant: None,
            statement: "",
        };
        Ok((kms, crate::access::gate::open(&session, &req).await?))
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn replay(
    d: Decrypting,
    ids: Vec<String>,
    all: bool,
    tenant: Option<String>,
    pipeline: Option<PathBuf>,
    format: Option<Format>,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let (kms, gate) = d
        .open(
            crate::access::gate::Purpose::QuarantineReplay,
            clock.clone(),
        )
        .await?;
    let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
    let policies = match &p {
        Some(p) => p.validate(pipeline.as_deref().unwrap_or(Path::new("")))?,
        None => Policies::default(),
    };
    let which = if all {
        job::replay::Selection::All
    } else {
        job::replay::Selection::Ids(ids)
    };
    let ctx = context(gate.session().store.clone(), kms, clock);
    let opts = job::batch_options(p.as_ref(), policies);
    let r = job::replay::replay(&gate, &ctx, &which, tenant.as_deref(), &opts).await?;
    let format = format.unwrap_or(Format::Table);
    if format == Format::Table {
        let _ = writeln!(out, "replaying {} quarantine entr(ies)", r.queued);
        return output::write_report(format, &r.batch, out);
    }
    // with a machine format, stdout is one JSON document
    let doc = serde_json::json!({ "queued": r.queued, "batch": r.batch });
    output::write_json(format, &doc, out)
}

pub(super) async fn show(
    d: Decrypting,
    id: String,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let (kms, gate) = d
        .open(crate::access::gate::Purpose::QuarantineShow, clock)
        .await?;
    let job::replay::Shown { entry: e, secret } =
        job::replay::show(&gate, kms.as_ref(), &id).await?;
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

pub(super) struct QuarantineRow<'a> {
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

pub(super) fn quarantine_batch(rows: &[QuarantineRow]) -> Result<arrow::array::RecordBatch> {
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
