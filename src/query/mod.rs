//! SQL over the lake with DataFusion. `events` is served from the manifests: a read-only
//! object store view lists exactly the committed data files (no directory listing), and
//! DataFusion prunes them by partition values, file statistics, row groups and bloom filters.
//! `manifests` has one row per committed data file.
//!
//! Sessions only read: every statement goes through [`run_sql`], which refuses anything that
//! writes, defines or changes the session ([`statement`]); the session's object stores hold
//! the committed view alone (no `file://`), so no statement reaches a path by URL.

pub mod decrypt;
pub mod named;
pub mod redact;
pub mod statement;
mod view;

use crate::lake::LakeError;
use crate::lake::datafile::SCHEMA;
use crate::lake::manifest::{self, Loaded};
use crate::storage::Store;
use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

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
    let latest = manifest::load_latest_all(store).await?;
    session_on(store, latest, kms, audit).await
}

/// A session over manifests the caller already loaded (the latest version of each partition).
pub async fn session_on(
    store: &Store,
    latest: Vec<Loaded>,
    kms: Option<(Arc<dyn crate::crypto::kms::Kms>, Option<String>)>,
    audit: bool,
) -> Result<(SessionContext, Option<Arc<decrypt::Decryptor>>), QueryError> {
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
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    // the committed view is the one store a session knows: no local file system behind `file://`
    let local = url::Url::parse("file://").expect("static url");
    ctx.runtime_env().deregister_object_store(&local)?;
    let view = CommittedView::new(store.object_store(), &latest);
    let url = url::Url::parse(STORE_URL).expect("static url");
    ctx.register_object_store(&url, Arc::new(view));

    let format = ParquetFormat::default()
        .with_enable_pruning(true)
        .with_skip_metadata(true);
    let options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("year".to_string(), DataType::Int32),
            ("month".to_string(), DataType::Int32),
            ("day".to_string(), DataType::Int32),
            ("interaction_type".to_string(), DataType::Utf8),
        ]);
    let table_url = ListingTableUrl::parse(format!("{STORE_URL}/{}/", crate::lake::layout::LAKE))?;
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(SCHEMA.clone());
    ctx.register_table("events", Arc::new(ListingTable::try_new(config)?))?;

    let m = manifests_batch(&latest)?;
    ctx.register_table(
        "manifests",
        Arc::new(MemTable::try_new(m.schema(), vec![vec![m]])?),
    )?;
    let r = removals_batch(&latest)?;
    ctx.register_table(
        "removals",
        Arc::new(MemTable::try_new(r.schema(), vec![vec![r]])?),
    )?;
    if audit {
        let entries = crate::audit::Audit::new(store.clone(), Arc::new(crate::clock::SystemClock))
            .entries()
            .await
            .map_err(|e| QueryError::Output(e.to_string()))?;
        let a = audit_batch(&entries)?;
        ctx.register_table(
            "audit",
            Arc::new(MemTable::try_new(a.schema(), vec![vec![a]])?),
        )?;
    }
    // latest state per interaction (tenant + interaction id), one row each; a view built
    // here, so that no statement of the session needs DDL
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

/// The audit trail as a table: one row per entry.
pub fn audit_batch(entries: &[(crate::audit::Entry, String)]) -> Result<RecordBatch, QueryError> {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    let text = |f: &dyn Fn(&crate::audit::Entry, &str) -> Option<String>| {
        Arc::new(StringArray::from_iter(entries.iter().map(|(e, h)| f(e, h)))) as ArrayRef
    };
    Ok(RecordBatch::try_from_iter(vec![
        (
            "sequence",
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|(e, _)| e.sequence as i64),
            )) as ArrayRef,
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    entries.iter().map(|(e, _)| e.at.timestamp_micros()),
                )
                .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("actor", text(&|e, _| Some(e.actor.clone()))),
        ("os_user", text(&|e, _| e.os_user.clone())),
        ("action", text(&|e, _| Some(e.action.clone()))),
        ("case", text(&|e, _| e.case.clone())),
        ("details", text(&|e, _| Some(e.details.to_string()))),
        ("sha256", text(&|_, h| Some(h.to_string()))),
        ("previous_sha256", text(&|e, _| e.previous_sha256.clone())),
    ])?)
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One row per committed data file, from the latest manifest of each partition.
/// `removals`: one row per data file a retention sweep took out of its partition (the
/// manifests' `removed` history, carried in every later version).
pub fn removals_batch(latest: &[Loaded]) -> Result<RecordBatch, QueryError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Utf8, false),
        Field::new("interaction_type", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("record_count", DataType::Int64, false),
        Field::new("latest_expiry", ts(), false),
        Field::new("removed_at", ts(), false),
        Field::new("sweep_id", DataType::Utf8, false),
        Field::new("replaced_by", DataType::Utf8, true),
        Field::new("records_kept", DataType::Int64, true),
        Field::new("deleted_at", ts(), true),
        Field::new("awaiting_deletion", DataType::Boolean, false),
    ]));
    let (mut part, mut typ, mut path, mut sha, mut sweep, mut by) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut count, mut kept) = (Int64Builder::new(), Int64Builder::new());
    let mut times: Vec<TimestampMicrosecondBuilder> = (0..3)
        .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
        .collect();
    let mut awaiting = arrow::array::BooleanBuilder::new();
    for l in latest {
        let m = &l.manifest;
        for r in &m.removed {
            part.append_value(m.partition.dir());
            typ.append_value(&m.partition.interaction_type);
            path.append_value(&r.path);
            sha.append_value(&r.sha256);
            count.append_value(r.record_count as i64);
            times[0].append_value(r.latest_expiry.timestamp_micros());
            times[1].append_value(r.removed_at.timestamp_micros());
            sweep.append_value(&r.sweep_id);
            by.append_option(r.replaced_by.as_deref());
            kept.append_option(r.records_kept.map(|k| k as i64));
            // an ordinary removal deletes the object at `removed_at`
            let deleted = if r.replaced_by.is_some() {
                r.deleted_at
            } else {
                Some(r.removed_at)
            };
            times[2].append_option(deleted.map(|t| t.timestamp_micros()));
            awaiting.append_value(r.awaiting_deletion());
        }
    }
    let mut t = times
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || t.next().expect("column");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(part.finish()),
        Arc::new(typ.finish()),
        Arc::new(path.finish()),
        Arc::new(sha.finish()),
        Arc::new(count.finish()),
        next(),
        next(),
        Arc::new(sweep.finish()),
        Arc::new(by.finish()),
        Arc::new(kept.finish()),
        next(),
        Arc::new(awaiting.finish()),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

pub fn manifests_batch(latest: &[Loaded]) -> Result<RecordBatch, QueryError> {
    let list = || DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Utf8, false),
        Field::new("year", DataType::Int32, false),
        Field::new("month", DataType::Int32, false),
        Field::new("day", DataType::Int32, false),
        Field::new("interaction_type", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("record_count", DataType::Int64, false),
        Field::new("min_occurred_at", ts(), false),
        Field::new("max_occurred_at", ts(), false),
        Field::new("earliest_expiry", ts(), false),
        Field::new("latest_expiry", ts(), false),
        Field::new("tenant_ids", list(), false),
        Field::new("policy_ids", list(), false),
        Field::new("algorithm", DataType::Utf8, false),
        Field::new("dek_id", DataType::Utf8, false),
        Field::new("kek_id", DataType::Utf8, false),
        Field::new("kek_version", DataType::UInt32, false),
        Field::new("batch_id", DataType::Utf8, false),
        Field::new("added_at", ts(), false),
        Field::new("manifest_sequence", DataType::Int64, false),
        Field::new("manifest_sha256", DataType::Utf8, false),
        Field::new("committed_at", ts(), false),
    ]));
    let mut s: Vec<StringBuilder> = (0..9).map(|_| StringBuilder::new()).collect();
    let mut ints: Vec<Int32Builder> = (0..3).map(|_| Int32Builder::new()).collect();
    let mut longs: Vec<Int64Builder> = (0..3).map(|_| Int64Builder::new()).collect();
    let mut times: Vec<TimestampMicrosecondBuilder> = (0..6)
        .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
        .collect();
    let mut lists: Vec<ListBuilder<StringBuilder>> = (0..2)
        .map(|_| {
            ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "element",
                DataType::Utf8,
                true,
            )))
        })
        .collect();
    let mut kek_version = UInt32Builder::new();
    for l in latest {
        let m = &l.manifest;
        for f in &m.files {
            s[0].append_value(m.partition.dir());
            ints[0].append_value(m.partition.year);
            ints[1].append_value(m.partition.month as i32);
            ints[2].append_value(m.partition.day as i32);
            s[1].append_value(&m.partition.interaction_type);
            s[2].append_value(&f.path);
            s[3].append_value(&f.sha256);
            longs[0].append_value(f.size_bytes as i64);
            longs[1].append_value(f.record_count as i64);
            for (b, t) in times.iter_mut().zip([
                f.min_occurred_at,
                f.max_occurred_at,
                f.earliest_expiry,
                f.latest_expiry,
                f.added_at,
                m.committed_at,
            ]) {
                b.append_value(t.timestamp_micros());
            }
            for (b, v) in lists.iter_mut().zip([&f.tenant_ids, &f.policy_ids]) {
                v.iter().for_each(|x| b.values().append_value(x));
                b.append(true);
            }
            s[4].append_value(&f.encryption.algorithm);
            s[5].append_value(&f.encryption.dek_id);
            s[6].append_value(&f.encryption.wrapped_dek.kek_id);
            kek_version.append_value(f.encryption.wrapped_dek.kek_version);
            s[7].append_value(&f.batch_id);
            longs[2].append_value(m.sequence as i64);
            s[8].append_value(&l.sha256);
        }
    }
    let mut s = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut ints = ints
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut longs = longs
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut times = times
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut lists = lists
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let n = |it: &mut dyn Iterator<Item = ArrayRef>| it.next().expect("column");
    let columns = vec![
        n(&mut s),
        n(&mut ints),
        n(&mut ints),
        n(&mut ints),
        n(&mut s),
        n(&mut s),
        n(&mut s),
        n(&mut longs),
        n(&mut longs),
        n(&mut times),
        n(&mut times),
        n(&mut times),
        n(&mut times),
        n(&mut lists),
        n(&mut lists),
        n(&mut s),
        n(&mut s),
        n(&mut s),
        Arc::new(kek_version.finish()),
        n(&mut s),
        n(&mut times),
        n(&mut longs),
        n(&mut s),
        n(&mut times),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
