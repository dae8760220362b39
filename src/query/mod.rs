//! SQL over the lake with DataFusion. `events` is served from the manifests ([`events`]): a
//! scan keeps the committed files its filters may match (hive keys, time range, tenants,
//! interaction ids, as the manifests state them) before opening any, reads them through a
//! read-only object store view of exactly the committed files (no directory listing), and
//! DataFusion prunes further by row groups and bloom filters. `manifests` has one row per
//! committed data file. The manifests come from the store's catalog when the signed head
//! vouches for it ([`crate::lake::catalog`]).
//!
//! Sessions only read: every statement goes through [`run_sql`], which refuses anything that
//! writes, defines or changes the session ([`statement`]); the session's object stores hold
//! the committed view alone (no `file://`), so no statement reaches a path by URL.

pub mod decrypt;
mod events;
mod key_rows;
pub mod named;
pub mod redact;
pub mod statement;
mod tables;
mod view;

use crate::lake::LakeError;
use crate::lake::manifest::Loaded;
use crate::storage::Store;
use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

pub use tables::{audit_batch, manifests_batch, removals_batch};
pub use view::CommittedView;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Output(String),
    /// A statement that is not a read: its kind (`COPY`, `CREATE EXTERNAL TABLE`, …).
    #[error("{0} is refused: queries only read (results leave through --format and -o)")]
    ReadOnly(String),
    #[error("{failed} of {total} statement(s) failed")]
    StatementsFailed { failed: usize, total: usize },
}

pub const STORE_URL: &str = "holdfast://store";

/// A SQL session over the store's committed data.
pub async fn session(store: &Store) -> Result<SessionContext, QueryError> {
    Ok(session_with(store, None, false).await?.0)
}

/// Whether a statement may read the `audit` table. Loading it reads every audit entry, so a
/// session registers it only for statements that name it.
pub fn mentions_audit(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("audit")
}

/// A session; with a key service, also the audited decryption functions (whose
/// [`decrypt::Decryptor`] is returned, to learn what was opened); with `audit`, the `audit`
/// table.
pub async fn session_with(
    store: &Store,
    kms: Option<(Arc<dyn crate::crypto::kms::Kms>, Option<String>)>,
    audit: bool,
) -> Result<(SessionContext, Option<Arc<decrypt::Decryptor>>), QueryError> {
    let (latest, damaged) = crate::lake::catalog::load_latest_each(store).await?;
    if let Some(d) = damaged.first() {
        return Err(LakeError::Corrupt {
            object: crate::lake::layout::manifest(&d.partition, d.sequence).to_string(),
            problem: d.problem.clone(),
        }
        .into());
    }
    session_on(store, latest, kms, audit).await
}

/// A session over manifests the caller already loaded (the latest version of each partition).
pub async fn session_on(
    store: &Store,
    latest: Vec<Loaded>,
    kms: Option<(Arc<dyn crate::crypto::kms::Kms>, Option<String>)>,
    audit: bool,
) -> Result<(SessionContext, Option<Arc<decrypt::Decryptor>>), QueryError> {
    let ctx = new_context()?;
    // the committed view is the one store a session knows: no local file system behind `file://`
    let local = url::Url::parse("file://").expect("static url");
    ctx.runtime_env().deregister_object_store(&local)?;
    let view = CommittedView::new(store.object_store(), &latest);
    let url = url::Url::parse(STORE_URL).expect("static url");
    ctx.register_object_store(&url, Arc::new(view));
    ctx.register_table("events", Arc::new(events::EventsTable::new(&latest)))?;
    register_batch(&ctx, "manifests", tables::manifests_batch(&latest)?)?;
    register_batch(&ctx, "removals", tables::removals_batch(&latest)?)?;
    if audit {
        let entries = crate::audit::Audit::new(store.clone(), Arc::new(crate::clock::SystemClock))
            .entries()
            .await
            .map_err(|e| QueryError::Output(e.to_string()))?;
        register_batch(&ctx, "audit", tables::audit_batch(&entries)?)?;
    }
    register_interactions(&ctx).await?;
    decrypt::register_json(&ctx);
    let decryptor = match kms {
        Some((kms, tenant)) => {
            let d = Arc::new(decrypt::Decryptor::new(store.clone(), kms, &latest));
            decrypt::enable(&ctx, d.clone(), tenant).await?;
            Some(d)
        }
        None => None,
    };
    Ok((ctx, decryptor))
}

/// A statement over the committed files these manifests list (the latest of each partition),
/// without decryption: the session the `query` command reads through.
pub async fn read(
    store: &Store,
    latest: Vec<Loaded>,
    sql: &str,
) -> Result<Vec<RecordBatch>, QueryError> {
    let (ctx, _) = session_on(store, latest, None, mentions_audit(sql)).await?;
    run_sql(&ctx, sql).await
}

/// An empty session with the settings every query runs under.
fn new_context() -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_str("datafusion.execution.time_zone", "UTC");
    // No list-files cache: it matches partition prefixes as text (`day=2` would miss `day=02`),
    // and listing the committed view costs nothing anyway.
    let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig {
        list_files_cache_limit: 0,
        ..Default::default()
    };
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(caches)
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// A table held in memory.
fn register_batch(ctx: &SessionContext, name: &str, b: RecordBatch) -> Result<(), QueryError> {
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(b.schema(), vec![vec![b]])?),
    )?;
    Ok(())
}

/// `interactions`: latest state per interaction (tenant + interaction id), one row each; a
/// view built here, so that no statement of the session needs DDL.
async fn register_interactions(ctx: &SessionContext) -> Result<(), QueryError> {
    let interactions = ctx
        .sql(
            "SELECT tenant_id, interaction_id, interaction_type, source_platform, state, direction, queue_id, agent_ids, \
                wrap_up_code, disposition, event_id AS latest_event_id, occurred_at AS latest_at, first_at, event_count, policy_id, expires_at \
         FROM (SELECT *, \
                      row_number() OVER (PARTITION BY tenant_id, interaction_id ORDER BY occurred_at DESC, ingested_at DESC, event_id DESC) AS rn, \
                      min(occurred_at) OVER (PARTITION BY tenant_id, interaction_id) AS first_at, \
                      count(*) OVER (PARTITION BY tenant_id, interaction_id) AS event_count \
               FROM events) \
         WHERE rn = 1",
        )
        .await?;
    ctx.register_table("interactions", interactions.into_view())?;
    Ok(())
}

/// Runs one read-only statement (anything else is refused with [`QueryError::ReadOnly`]).
/// The result has at least one batch: an empty result is one empty batch with the result's
/// schema, so that outputs can still write their header.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    statement::check_read_only(sql)?;
    let plan = ctx.state().create_logical_plan(sql).await?;
    statement::read_only_options()
        .verify_plan(&plan)
        .map_err(|e| {
            let msg = e.strip_backtrace();
            QueryError::ReadOnly(msg.rsplit(": ").next().unwrap_or(&msg).to_string())
        })?;
    let df = ctx.execute_logical_plan(plan).await?;
    let schema = df.schema().inner().clone();
    let mut batches = df.collect().await?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}
