//! `events`: the committed data files as one table, planned from the manifests alone. A scan
//! keeps only the files its filters can match before any file is opened: filters on the hive
//! keys (`year`, `month`, `day`, `interaction_type`) exactly, as the partition values of each
//! file (and are then not applied again), and every other filter through DataFusion's
//! [`PruningPredicateBuilder`] over what each manifest entry states: its `occurred_at` range, its
//! tenants and, when the entry has one, its filter of interaction ids. The scan's row count
//! is exact (the manifests' record counts), so `count(*)` under hive-key filters alone is
//! answered without opening a file. The kept files are read as Parquet through the committed
//! view, where row groups, page indexes and bloom filters prune further.

use super::STORE_URL;
use crate::lake::datafile::SCHEMA;
use crate::lake::manifest::{InteractionFilter, Loaded};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::ObjectMeta;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

/// The hive keys, in the order they follow the file's columns.
const KEYS: [&str; 4] = ["year", "month", "day", "interaction_type"];

fn key_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new("year", DataType::Int32, false)),
        Arc::new(Field::new("month", DataType::Int32, false)),
        Arc::new(Field::new("day", DataType::Int32, false)),
        Arc::new(Field::new("interaction_type", DataType::Utf8, false)),
    ]
}

/// The table's schema: the data file's columns, then the hive keys.
static TABLE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<FieldRef> = SCHEMA.fields().iter().cloned().collect();
    fields.extend(key_fields());
    Arc::new(Schema::new(fields))
});

/// One committed data file, as its manifest entry describes it.
#[derive(Debug)]
struct File {
    meta: ObjectMeta,
    year: i32,
    month: i32,
    day: i32,
    interaction_type: String,
    rows: u64,
    min_occurred: i64,
    max_occurred: i64,
    /// Sorted (as manifests keep them).
    tenants: Vec<String>,
    interactions: Option<InteractionFilter>,
}

#[derive(Debug)]
pub(super) struct EventsTable {
    files: Arc<Vec<File>>,
}

impl EventsTable {
    pub(super) fn new(latest: &[Loaded]) -> Self {
        let mut files: Vec<File> = latest
            .iter()
            .flat_map(|l| l.manifest.files.iter().map(move |f| (l, f)))
            // every entry of a loaded manifest is a data file path (checked when read)
            .filter_map(|(l, f)| {
                let p = &l.manifest.partition;
                Some(File {
                    meta: ObjectMeta {
                        location: f.location().ok()?,
                        last_modified: f.added_at,
                        size: f.size_bytes,
                        e_tag: None,
                        version: None,
                    },
                    year: p.year,
                    month: p.month as i32,
                    day: p.day as i32,
                    interaction_type: p.interaction_type.clone(),
                    rows: f.record_count,
                    min_occurred: f.min_occurred_at.timestamp_micros(),
                    max_occurred: f.max_occurred_at.timestamp_micros(),
                    tenants: f.tenant_ids.clone(),
                    interactions: f.interactions.clone(),
                })
            })
            .collect();
        files.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
        EventsTable {
            files: Arc::new(files),
        }
    }

    /// The hive keys of every file, as a batch (one row per file).
    fn keys(&self) -> Result<RecordBatch> {
        let f = &self.files;
        let int = |g: fn(&File) -> i32| Arc::new(Int32Array::from_iter_values(f.iter().map(g)));
        let columns: Vec<ArrayRef> = vec![
            int(|f| f.year),
            int(|f| f.month),
            int(|f| f.day),
            Arc::new(StringArray::from_iter_values(
                f.iter().map(|f| f.interaction_type.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(key_fields())),
            columns,
        )?)
    }

    /// Which files the hive-key filters keep (exactly: every record of a file has its keys).
    fn keep_by_keys(&self, state: &dyn Session, filters: &[&Expr]) -> Result<Vec<bool>> {
        let mut keep = vec![true; self.files.len()];
        if filters.is_empty() {
            return Ok(keep);
        }
        let batch = self.keys()?;
        let schema = DFSchema::try_from(batch.schema())?;
        for f in filters {
            let expr = state.create_physical_expr((*f).clone(), &schema)?;
            let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
            let result = result
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan("a filter that is not boolean".into())
                })?;
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= result.is_valid(i) && result.value(i);
            }
        }
        Ok(keep)
    }

    /// The files `filters` may match, judged on the manifests alone.
    fn kept(&self, state: &dyn Session, filters: &[Expr]) -> Result<Vec<&File>> {
        let (on_keys, others): (Vec<&Expr>, Vec<&Expr>) = filters
            .iter()
            .partition(|f| expr_applicable_for_cols(&KEYS, f));
        let mut keep = self.keep_by_keys(state, &on_keys)?;
        self.keep_by_stats(state, &others, &mut keep);
        Ok(self
            .files
            .iter()
            .zip(&keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect())
    }

    /// Which of the `keep` files the other filters may match, judged on the manifests alone.
    fn keep_by_stats(&self, state: &dyn Session, filters: &[&Expr], keep: &mut [bool]) {
        let Some(expr) = conjunction(filters.iter().map(|e| (*e).clone())) else {
            return;
        };
        let Ok(schema) = DFSchema::try_from(TABLE_SCHEMA.clone()) else {
            return;
        };
        let Ok(expr) = state.create_physical_expr(expr, &schema) else {
            return;
        };
        let Ok(predicate) = PruningPredicateBuilder::new()
            .with_file_schema(TABLE_SCHEMA.clone())
            .try_build(expr)
        else {
            return;
        };
        let stats = Stats {
            files: self.files.as_slice(),
        };
        if let Ok(may) = predicate.prune(&stats) {
            for (k, m) in keep.iter_mut().zip(may) {
                *k &= m;
            }
        }
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        TABLE_SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&KEYS, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let kept = self.kept(state, filters)?;
        let table = TABLE_SCHEMA.clone();
        if kept.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(table.project(p)?),
                None => table,
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let file_columns = SCHEMA.fields().len();
        if let Some(p) = projection
            && p.iter().all(|i| *i >= file_columns)
        {
            // hive keys only (every filter on them was applied exactly above): the manifests'
            // record counts are the rows, no file is opened
            let files = kept
                .iter()
                .map(|f| super::key_rows::KeyedCount {
                    year: f.year,
                    month: f.month,
                    day: f.day,
                    interaction_type: f.interaction_type.clone(),
                    rows: f.rows,
                })
                .collect();
            let keys = p.iter().map(|i| i - file_columns).collect();
            let schema = Arc::new(table.project(p)?);
            let parts = state.config().target_partitions();
            return Ok(Arc::new(super::key_rows::plan(
                files, keys, schema, limit, parts,
            )?));
        }
        let mut statistics = Statistics::new_unknown(&table);
        statistics.num_rows = Precision::Exact(kept.iter().map(|f| f.rows as usize).sum());
        statistics.total_byte_size =
            Precision::Inexact(kept.iter().map(|f| f.meta.size as usize).sum());
        let format = ParquetFormat::default()
            .with_enable_pruning(true)
            .with_skip_metadata(true);
        let source = format.file_source(
            TableSchemaBuilder::new(SCHEMA.clone())
                .with_table_partition_cols(key_fields())
                .build(),
        );
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, source)
            .with_file_groups(groups(&kept, state.config().target_partitions()))
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// The files in `n` groups of consecutive paths, about equal in count.
fn groups(files: &[&File], n: usize) -> Vec<FileGroup> {
    let size = files.len().div_ceil(n.max(1));
    files
        .chunks(size.max(1))
        .map(|chunk| {
            FileGroup::new(
                chunk
                    .iter()
                    .map(|f| {
                        PartitionedFile::new_from_meta(f.meta.clone()).with_partition_values(vec![
                            ScalarValue::Int32(Some(f.year)),
                            ScalarValue::Int32(Some(f.month)),
                            ScalarValue::Int32(Some(f.day)),
                            ScalarValue::Utf8(Some(f.interaction_type.clone())),
                        ])
                    })
                    .collect(),
            )
        })
        .collect()
}

/// What the manifests say about each file, for [`PruningPredicateBuilder`]: one container per file.
struct Stats<'a> {
    files: &'a [File],
}

impl Stats<'_> {
    fn bound(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        let f = self.files;
        let int = |g: fn(&File) -> i32| -> ArrayRef {
            Arc::new(Int32Array::from_iter_values(f.iter().map(g)))
        };
        Some(match column.name() {
            "year" => int(|f| f.year),
            "month" => int(|f| f.month),
            "day" => int(|f| f.day),
            "interaction_type" => Arc::new(StringArray::from_iter_values(
                f.iter().map(|f| f.interaction_type.as_str()),
            )),
            "occurred_at" => Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    f.iter()
                        .map(|f| if max { f.max_occurred } else { f.min_occurred }),
                )
                .with_timezone("UTC"),
            ),
            "tenant_id" => Arc::new(StringArray::from_iter(f.iter().map(|f| {
                if max {
                    f.tenants.last()
                } else {
                    f.tenants.first()
                }
            }))),
            _ => return None,
        })
    }
}

impl PruningStatistics for Stats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        // these columns are never null
        matches!(
            column.name(),
            "year" | "month" | "day" | "interaction_type" | "occurred_at" | "tenant_id"
        )
        .then(|| Arc::new(UInt64Array::from(vec![0; self.files.len()])) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.files.iter().map(|f| f.rows),
        )))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        let texts: Vec<&str> = values
            .iter()
            .map(|v| match v {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<_>>()?;
        match column.name() {
            "tenant_id" => Some(
                self.files
                    .iter()
                    .map(|f| {
                        if !f.tenants.iter().any(|t| texts.contains(&t.as_str())) {
                            Some(false)
                        } else if f.tenants.iter().all(|t| texts.contains(&t.as_str())) {
                            Some(true)
                        } else {
                            None
                        }
                    })
                    .collect(),
            ),
            "interaction_id" => Some(
                self.files
                    .iter()
                    .map(|f| match &f.interactions {
                        Some(filter) if !texts.iter().any(|t| filter.may_contain(t)) => Some(false),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
