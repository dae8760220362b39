//! Reading committed data files: projected columns, the footer, and
//! the one reader of index rows ([`IndexColumns`]) that hold coverage and rewrites share.

use super::SCHEMA;
use crate::lake::LakeError;
use crate::storage::Store;
use arrow::array::{Array, AsArray, GenericListArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use object_store::path::Path;
use std::sync::Arc;

/// Reads the named columns of a committed data file (projection pushdown: only those column
/// chunks are fetched).
#[allow(deprecated)] // ParquetObjectReader: still the shortest correct reader over object_store
pub async fn read_columns(
    store: &Store,
    path: &Path,
    size: u64,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, LakeError> {
    use futures::TryStreamExt;
    use parquet::arrow::{
        ParquetRecordBatchStreamBuilder, ProjectionMask, async_reader::ParquetObjectReader,
    };
    let reader = ParquetObjectReader::new(store.object_store(), path.clone()).with_file_size(size);
    let err = |e| LakeError::parquet(path.as_ref(), e);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(err)?;
    super::footer::check(builder.metadata().file_metadata(), path.as_ref())?;
    let indices: Vec<usize> = columns
        .iter()
        .map(|c| {
            SCHEMA.index_of(c).map_err(|_| LakeError::Corrupt {
                object: path.to_string(),
                problem: format!("no column {c}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let stream = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(err)?;
    stream.try_collect().await.map_err(err)
}

/// The index columns a record's hold coverage and expiry are decided on.
pub const INDEX_COLUMNS: [&str; 6] = [
    "tenant_id",
    "interaction_id",
    "queue_id",
    "agent_ids",
    "occurred_at",
    "expires_at",
];

/// One record's index fields, as a hold matches on them (from a file or from a row in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow<'a> {
    pub tenant: &'a str,
    pub interaction: &'a str,
    pub queue: Option<&'a str>,
    pub agents: Vec<&'a str>,
    /// Microseconds UTC.
    pub occurred_at: i64,
    pub expires_at: i64,
}

/// The [`INDEX_COLUMNS`] of one record batch (a projection, or whole rows: looked up by name).
pub struct IndexColumns<'a> {
    tenant: &'a StringArray,
    interaction: &'a StringArray,
    queue: &'a StringArray,
    agents: &'a GenericListArray<i32>,
    occurred: &'a PrimitiveArray<TimestampMicrosecondType>,
    expires: &'a PrimitiveArray<TimestampMicrosecondType>,
    rows: usize,
}

impl<'a> IndexColumns<'a> {
    /// The index columns of `b`; `object` names the file in the error when one is missing.
    pub fn of(b: &'a RecordBatch, object: &str) -> Result<Self, LakeError> {
        let col = |n: &str| {
            b.column_by_name(n).ok_or_else(|| LakeError::Corrupt {
                object: object.to_string(),
                problem: format!("no column {n}"),
            })
        };
        Ok(IndexColumns {
            tenant: col("tenant_id")?.as_string::<i32>(),
            interaction: col("interaction_id")?.as_string::<i32>(),
            queue: col("queue_id")?.as_string::<i32>(),
            agents: col("agent_ids")?.as_list::<i32>(),
            occurred: col("occurred_at")?.as_primitive::<TimestampMicrosecondType>(),
            expires: col("expires_at")?.as_primitive::<TimestampMicrosecondType>(),
            rows: b.num_rows(),
        })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The index fields of record `r`.
    pub fn row(&self, r: usize) -> IndexRow<'a> {
        // borrowed from the list's child array, which outlives this row
        let child = self.agents.values().as_string::<i32>();
        let offsets = self.agents.value_offsets();
        let (start, end) = (offsets[r] as usize, offsets[r + 1] as usize);
        let names = (start..end).map(|k| child.value(k)).collect();
        IndexRow {
            tenant: self.tenant.value(r),
            interaction: self.interaction.value(r),
            queue: (!self.queue.is_null(r)).then(|| self.queue.value(r)),
            agents: names,
            occurred_at: self.occurred.value(r),
            expires_at: self.expires.value(r),
        }
    }
}

/// The index rows of a committed file (reads only the [`INDEX_COLUMNS`]).
pub async fn read_index(
    store: &Store,
    path: &Path,
    size: u64,
) -> Result<Vec<RecordBatch>, LakeError> {
    read_columns(store, path, size, &INDEX_COLUMNS).await
}

/// The footer of a committed data file (only the footer is fetched).
#[allow(deprecated)] // ParquetObjectReader, as in read_columns
pub async fn footer(
    store: &Store,
    path: &Path,
    size: u64,
) -> Result<Arc<parquet::file::metadata::ParquetMetaData>, LakeError> {
    use parquet::arrow::{ParquetRecordBatchStreamBuilder, async_reader::ParquetObjectReader};
    let reader = ParquetObjectReader::new(store.object_store(), path.clone()).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| LakeError::parquet(path.as_ref(), e))?;
    super::footer::check(builder.metadata().file_metadata(), path.as_ref())?;
    Ok(builder.metadata().clone())
}

/// A footer key/value of a data file.
pub fn footer_value<'a>(
    md: &'a parquet::file::metadata::FileMetaData,
    key: &str,
) -> Option<&'a str> {
    md.key_value_metadata()?
        .iter()
        .find(|k| k.key == key)?
        .value
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::datafile::{Row, to_record_batch};

    fn row(event: &str, queue: Option<&str>, agents: &[&str]) -> Row {
        Row {
            event_id: event.into(),
            interaction_id: format!("i-{event}"),
            tenant_id: "t1".into(),
            source_platform: "genesys".into(),
            state: "COMPLETED".into(),
            direction: None,
            occurred_at: 1_700_000_000_000_000,
            ingested_at: 1_700_000_001_000_000,
            queue_id: queue.map(str::to_string),
            agent_ids: agents.iter().map(|a| a.to_string()).collect(),
            address_hmacs: Vec::new(),
            wrap_up_code: None,
            disposition: None,
            schema_version: "1.0".into(),
            policy_id: "p".into(),
            expires_at: 1_900_000_000_000_000,
            record_hash: [0; 32],
            record: Default::default(),
            payload: vec![1, 2, 3],
        }
    }

    /// The reader gives back, row by row, the index fields the rows in memory have (the same
    /// view a batch decides hold pinning on).
    #[test]
    fn index_rows_read_back_as_the_rows_in_memory_say() {
        let rows = vec![
            row("e1", Some("q1"), &["a1", "a2"]),
            row("e2", None, &[]),
            row("e3", Some("q3"), &["a3"]),
        ];
        let payload = std::sync::Arc::new(arrow::array::BinaryArray::from_iter_values(
            rows.iter().map(|r| &r.payload),
        ));
        let b = to_record_batch(&rows, "dek", payload);
        let cols = IndexColumns::of(&b, "f").unwrap();
        assert_eq!(cols.len(), 3);
        for (r, want) in rows.iter().enumerate() {
            assert_eq!(cols.row(r), want.index());
        }
        let projected = b.project(&[2, 1, 8, 9, 6, 15]).unwrap();
        assert_eq!(
            IndexColumns::of(&projected, "f").unwrap().row(0),
            rows[0].index()
        );
        let missing = b.project(&[0, 1]).unwrap();
        assert!(IndexColumns::of(&missing, "f").is_err());
    }
}
