//! Exports: the committed lake's rows, as Parquet files sized for warehouse loading, with
//! load scripts for Snowflake or BigQuery and a custody record (`custody.json`) that ties
//! every file and row to the store, its signed head and the audit trail.
//!
//! An export reads only committed data (the manifests' latest versions, as queries do).
//! Without `--hold`, records past their expiry that no protecting hold covers are left out:
//! exporting them would extend their life. A hold's export covers exactly the records the
//! hold covers, expired or not. A decrypted export (a production) goes through the
//! decryption gate (case, investigator role, tenant reach; refusals audited).
//!
//! Order of an export: the directory is created (it must be empty); an `export.started`
//! audit entry records who, the case, the selection and the head before any row is read; the
//! rows stream through the selection into `data/part-NNNNN.parquet`, each file synced; the
//! scripts are written; `custody.json` is written aside and synced, an `export.completed`
//! entry records its SHA-256, and only then is it renamed into place. An export stopped at
//! any point leaves no `custody.json`, which `export verify` reports as incomplete.

pub mod columns;
pub mod custody;
mod files;
mod select;
pub mod targets;
pub mod verify;
mod write;

use crate::access::Session;
use crate::access::gate;
use crate::audit::AuditEvent;
use crate::crypto::kms::Kms;
use crate::query::QueryError;
use chrono::NaiveDate;
use custody::{Header, Position};
use files::Modes;
use futures::StreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use targets::Target;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Usage(String),
    #[error("export directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Columns(#[from] columns::ColumnError),
    /// A failure while decrypted rows were read: its text is withheld.
    #[error("{0}")]
    Withheld(String),
}

impl ExportError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// What the audit trail records of a failure.
    fn code(&self) -> &'static str {
        match self {
            ExportError::Usage(_) => "usage",
            ExportError::Io { .. } => "output",
            ExportError::Access(_) => "access",
            ExportError::Lake(_) | ExportError::Audit(_) => "storage",
            ExportError::Kms(_) => "kms",
            ExportError::Query(_) => "query",
            ExportError::Parquet(_) => "output",
            ExportError::Columns(_) => "record",
            ExportError::Withheld(_) => "withheld",
        }
    }
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// The rows asked for, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// First day (UTC) of `occurred_at`, inclusive.
    pub from: Option<NaiveDate>,
    /// Last day (UTC) of `occurred_at`, inclusive.
    pub until: Option<NaiveDate>,
    pub tenant: Option<String>,
    /// A SQL predicate over the selection's table.
    pub predicate: Option<String>,
    /// A query (a named query, bound) whose `event_id`s are the rows.
    pub query: Option<String>,
    /// Exactly the records a legal hold covers.
    pub hold: Option<String>,
}

/// One export.
pub struct Request<'a> {
    pub target: Target,
    pub out: &'a Path,
    /// The warehouse table the scripts load.
    pub table: &'a str,
    pub given: Given,
    /// Decrypt (a production): the key service and the case.
    pub decrypt: Option<(Arc<dyn Kms>, &'a str)>,
    /// Whether the caller named who acts (`--actor`): a production needs it.
    pub actor_named: bool,
    /// A data file is closed once it reaches this many bytes.
    pub file_bytes: u64,
    /// The store as the user named it (recorded in the custody record).
    pub store_url: String,
    /// Crash points of test builds (`export.files_written`, `export.completed_audited`).
    pub failpoints: crate::hooks::Failpoints,
}

/// How far an export has come (for a progress line).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows: u64,
    pub files: u64,
}

/// A finished export.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub export_id: String,
    pub out: PathBuf,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub custody_sha256: String,
    pub decrypted: bool,
}

/// The export is authorised and about to read rows.
#[derive(Debug, Serialize)]
struct Started<'a> {
    export_id: &'a str,
    target: &'a str,
    decrypted: bool,
    out: &'a str,
    /// The statement as the trail records statements (literals of a decrypting one keyed).
    selection: &'a str,
    /// SHA-256 of the statement as it ran (the custody record holds it in full).
    selection_sha256: String,
    store_head: Option<&'a Position>,
}
impl AuditEvent for Started<'_> {
    const ACTION: &'static str = "export.started";
}

/// The export is complete: its custody record's hash, and what it holds.
#[derive(Debug, Serialize)]
struct Completed<'a> {
    export_id: &'a str,
    custody_sha256: &'a str,
    files: u64,
    rows: u64,
    bytes: u64,
    /// The decrypted events (their ids, or their count and a hash over them).
    #[serde(skip_serializing_if = "Option::is_none")]
    event_ids: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deks_unwrapped: Option<Vec<String>>,
}
impl AuditEvent for Completed<'_> {
    const ACTION: &'static str = "export.completed";
}

/// The export stopped after it started (its directory is incomplete).
#[derive(Debug, Serialize)]
struct Failed<'a> {
    export_id: &'a str,
    error: &'a str,
    rows_written: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_ids: Option<serde_json::Value>,
}
impl AuditEvent for Failed<'_> {
    const ACTION: &'static str = "export.failed";
}

fn new_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let tag: u32 = rand::random();
    format!("exp-{}-{tag:08x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// Runs one export for the session's identity.
pub async fn run(
    session: &Session,
    req: &Request<'_>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report> {
    let decrypted = req.decrypt.is_some();
    let modes = Modes::for_export(decrypted);
    let started_at = session.clock.now();
    let export_id = new_id(started_at);
    let plan = select::plan(session, req, started_at).await?;
    // the gate first: a refused production leaves nothing behind but its audit entry
    let gate = match &req.decrypt {
        Some((kms, case)) => {
            let redactor = crate::query::redact::Redactor::from_kms(kms.as_ref()).await?;
            let opened = plan
                .open_gate(session, &redactor, case, req.actor_named)
                .await?;
            Some((opened, redactor))
        }
        None => None,
    };
    files::prepare(req.out, modes).map_err(|e| ExportError::io(req.out, e))?;
    let statement = plan.statement(gate.as_ref().map(|(o, _)| o));
    let recorded = match &gate {
        Some((_, redactor)) => redactor.statement(&statement),
        None => statement.clone(),
    };
    let opened = gate.map(|(o, _)| o);
    let case = req.decrypt.as_ref().map(|(_, c)| *c);
    let entry = session
        .audit
        .record(
            &session.identity.actor,
            case,
            &Started {
                export_id: &export_id,
                target: req.target.as_str(),
                decrypted,
                out: &req.out.display().to_string(),
                selection: &recorded,
                selection_sha256: crate::lake::manifest::sha256_hex(statement.as_bytes()),
                store_head: plan.head.as_ref(),
            },
        )
        .await?;
    let authorised_by = Position {
        sequence: entry.sequence,
        sha256: entry.sha256(),
    };
    let mut job = Job {
        session,
        req,
        plan: &plan,
        modes,
        export_id: &export_id,
        statement: &statement,
        rows: 0,
        opened: None,
    };
    let result = job.write_all(opened, progress).await;
    let (data, decryptor) = match result {
        Ok(v) => v,
        Err(e) => return Err(job.failed(e, case).await),
    };
    let header = job.header(started_at, authorised_by, &data);
    job.finish(header, data, decryptor.as_deref(), case).await
}

/// One export under way.
struct Job<'a> {
    session: &'a Session,
    req: &'a Request<'a>,
    plan: &'a select::Plan,
    modes: Modes,
    export_id: &'a str,
    statement: &'a str,
    rows: u64,
    /// The decryptor of a production, to learn what was opened should it fail.
    opened: Option<Arc<crate::query::decrypt::Decryptor>>,
}

type Written = (
    Vec<write::DataFile>,
    Option<Arc<crate::query::decrypt::Decryptor>>,
);

impl Job<'_> {
    /// The custody record's header, once the files are written.
    fn header(
        &self,
        started_at: chrono::DateTime<chrono::Utc>,
        authorised_by: Position,
        data: &[write::DataFile],
    ) -> Header {
        let (req, plan, session) = (self.req, self.plan, self.session);
        Header {
            format: custody::FORMAT.into(),
            version: custody::VERSION.into(),
            holdfast_version: env!("CARGO_PKG_VERSION").into(),
            export_id: self.export_id.to_string(),
            target: req.target.as_str().into(),
            decrypted: req.decrypt.is_some(),
            store_id: plan.store_id.clone(),
            store_url: req.store_url.clone(),
            actor: session.identity.actor.clone(),
            os_user: session.identity.os_user.clone(),
            case: req.decrypt.as_ref().map(|(_, c)| c.to_string()),
            started_at: started_at.to_rfc3339(),
            completed_at: session.clock.now().to_rfc3339(),
            selection: plan.selection(self.statement),
            store_head: plan.head.clone(),
            manifests: plan.manifests.clone(),
            authorised_by,
            totals: custody::Totals {
                files: data.len() as u64,
                rows: data.iter().map(|d| d.rows).sum(),
                bytes: data.iter().map(|d| d.bytes).sum(),
            },
        }
    }

    /// Streams the selection into the data files.
    async fn write_all(
        &mut self,
        gate: Option<gate::Opened>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Written> {
        let kms = self
            .req
            .decrypt
            .as_ref()
            .map(|(k, _)| (k.clone(), self.req.given.tenant.clone()));
        let (ctx, decryptor) =
            crate::query::session_on(&self.session.store, self.plan.latest.clone(), kms, false)
                .await?;
        if let (Some(d), Some(g)) = (&decryptor, &gate) {
            d.restrict(g.reach().tenants().cloned());
        }
        self.opened = decryptor.clone();
        crate::query::statement::check_read_only(self.statement)?;
        let sql_plan = ctx
            .state()
            .create_logical_plan(self.statement)
            .await
            .map_err(QueryError::from)?;
        crate::query::statement::read_only_options()
            .verify_plan(&sql_plan)
            .map_err(QueryError::from)?;
        let streamed = self.stream(&ctx, &sql_plan, progress).await;
        let data = match (streamed, &decryptor) {
            (Ok(d), _) => d,
            (Err(ExportError::Query(e)), Some(_)) => {
                return Err(ExportError::Withheld(gate::withheld(&e, &sql_plan).1));
            }
            (Err(e), _) => return Err(e),
        };
        Ok((data, decryptor))
    }

    async fn stream(
        &mut self,
        ctx: &datafusion::prelude::SessionContext,
        sql_plan: &datafusion::logical_expr::LogicalPlan,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Vec<write::DataFile>> {
        let schema = if self.req.decrypt.is_some() {
            columns::PRODUCTION.clone()
        } else {
            columns::INDEX.clone()
        };
        let mut out = write::Rolling::new(self.req.out, self.modes, schema, self.req.file_bytes)
            .map_err(|e| ExportError::io(self.req.out, e))?;
        let df = ctx
            .execute_logical_plan(sql_plan.clone())
            .await
            .map_err(QueryError::from)?;
        let mut batches = df.execute_stream().await.map_err(QueryError::from)?;
        while let Some(b) = batches.next().await {
            let b = b.map_err(QueryError::from)?;
            let b = if self.req.decrypt.is_some() {
                columns::production_batch(&b)?
            } else {
                columns::index_batch(&b)?
            };
            out.write(&b, columns::record_hashes(&b)?)?;
            self.rows += b.num_rows() as u64;
            progress(Progress {
                rows: self.rows,
                files: out.files.len() as u64 + 1,
            });
        }
        Ok(out.finish()?)
    }

    /// Records the failure (the directory stays incomplete: no custody record).
    async fn failed(&self, e: ExportError, case: Option<&str>) -> ExportError {
        let event_ids = self
            .opened
            .as_ref()
            .map(|d| crate::audit::id_list(d.opened().0));
        let event = Failed {
            export_id: self.export_id,
            error: e.code(),
            rows_written: self.rows,
            event_ids,
        };
        match self
            .session
            .audit
            .record(&self.session.identity.actor, case, &event)
            .await
        {
            Ok(_) => e,
            Err(audit) => audit.into(),
        }
    }

    /// Scripts, the custody record, the closing audit entry, then the record in place.
    async fn finish(
        &self,
        header: Header,
        data: Vec<write::DataFile>,
        decryptor: Option<&crate::query::decrypt::Decryptor>,
        case: Option<&str>,
    ) -> Result<Report> {
        let out = self.req.out;
        let io = |e| ExportError::io(out, e);
        let schema = if decryptor.is_some() {
            columns::PRODUCTION.clone()
        } else {
            columns::INDEX.clone()
        };
        let names = targets::Names {
            table: self.req.table,
            export_id: self.export_id,
        };
        let mut scripts = Vec::new();
        for (path, text) in targets::scripts(self.req.target, &schema, &names) {
            let full = out.join(&path);
            if let Some(dir) = full.parent() {
                files::subdir(dir, self.modes).map_err(io)?;
            }
            let sha256 = files::write_synced(&full, text.as_bytes(), self.modes).map_err(io)?;
            scripts.push(custody::Script {
                path,
                sha256,
                bytes: text.len() as u64,
            });
        }
        for dir in ["snowflake", "bigquery"] {
            if out.join(dir).exists() {
                files::sync_dir(&out.join(dir)).map_err(io)?;
            }
        }
        self.req.failpoints.hit("export.files_written");
        let custody_sha256 =
            custody::write_pending(out, &header, &data, &scripts, self.modes).map_err(io)?;
        let (event_ids, deks) = match decryptor {
            Some(d) => {
                let (events, deks) = d.opened();
                (Some(crate::audit::id_list(events)), Some(deks))
            }
            None => (None, None),
        };
        let t = &header.totals;
        let event = Completed {
            export_id: self.export_id,
            custody_sha256: &custody_sha256,
            files: t.files,
            rows: t.rows,
            bytes: t.bytes,
            event_ids,
            deks_unwrapped: deks,
        };
        self.session
            .audit
            .record(&self.session.identity.actor, case, &event)
            .await?;
        self.req.failpoints.hit("export.completed_audited");
        let pending = out.join(format!("{}.tmp", custody::FILE));
        files::rename(&pending, &out.join(custody::FILE)).map_err(io)?;
        for d in &data {
            files::remove(&d.hashes).map_err(io)?;
        }
        files::remove_dir(&out.join(write::SPOOL_DIR)).map_err(io)?;
        files::sync_dir(out).map_err(io)?;
        Ok(Report {
            export_id: self.export_id.to_string(),
            out: out.to_path_buf(),
            files: t.files,
            rows: t.rows,
            bytes: t.bytes,
            custody_sha256,
            decrypted: decryptor.is_some(),
        })
    }
}

/// What the audit trail says of an export: problems, if any (the started entry must be the
/// one the custody record names, and a completed entry must record the custody record's
/// hash).
pub async fn check_trail(
    store: &crate::storage::Store,
    c: &custody::Custody,
    custody_sha256: &str,
) -> Result<Vec<String>> {
    let audit = crate::audit::Audit::new(store.clone(), Arc::new(crate::clock::SystemClock));
    let entries = audit.entries().await?;
    let id = &c.header.export_id;
    let of_export = |action: &str| {
        entries
            .iter()
            .filter(|(e, _)| e.action == action && e.details["export_id"] == id.as_str())
            .collect::<Vec<_>>()
    };
    let mut problems = Vec::new();
    let a = &c.header.authorised_by;
    match of_export(Started::ACTION).first() {
        Some((e, sha)) if e.sequence == a.sequence && *sha == a.sha256 => {}
        Some((e, sha)) => problems.push(format!(
            "the custody record names audit entry {} ({}) as its authorisation; the trail has export {id} started at entry {} ({sha})",
            a.sequence, a.sha256, e.sequence
        )),
        None => problems.push(format!("the audit trail has no {} entry for export {id}", Started::ACTION)),
    }
    let completed = of_export(Completed::ACTION);
    match completed.first() {
        Some((e, _)) if e.details["custody_sha256"] == custody_sha256 => {}
        Some((e, _)) => problems.push(format!(
            "custody.json hashes to {custody_sha256}; audit entry {} recorded {} when export {id} completed (custody.json was changed)",
            e.sequence, e.details["custody_sha256"]
        )),
        None => problems.push(format!("the audit trail has no {} entry for export {id}", Completed::ACTION)),
    }
    Ok(problems)
}

/// The store a custody record names, when it is a local directory that exists.
pub fn recorded_store(c: &custody::Custody) -> Option<crate::storage::StoreUrl> {
    c.header
        .store_url
        .parse::<crate::storage::StoreUrl>()
        .ok()
        .filter(|u| u.local_dir().is_some_and(|d| d.exists()))
}
