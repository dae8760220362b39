//! Data files: Parquet (zstd) with plaintext index columns and one sealed `payload` column.
//! The Arrow schema here is the single source of column names and types.
//!
//! Interoperability rules (see README): timestamps are int64 microseconds UTC; list children
//! are named `element`; the hive keys (year, month, day, interaction_type) are in the path
//! only; `payload` is plain BYTE_ARRAY, stored without compression (ciphertext does not
//! compress) and without statistics.

mod dicts;
pub mod footer;
mod groups;
mod read;
mod records;
mod writer;
pub use dicts::{Decoder, FileDictionaries};
pub use groups::{Grouper, ToSeal};
pub use read::{
    INDEX_COLUMNS, IndexColumns, IndexRow, footer, footer_value, read_columns, read_index,
};
pub use records::{Records, RowIds};
pub use writer::{Closed, FileStats, FileWriter, FinishedFile, Sealing};

use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::{Arc, LazyLock};

/// One stored event: index columns in plaintext, and its canonical record: in `record`, to be
/// sealed with its group when the row is written (format 3), or already sealed alone in
/// `payload` (formats 1 and 2, which test builds still write).
#[derive(Debug, Clone)]
pub struct Row {
    pub event_id: String,
    pub interaction_id: String,
    pub tenant_id: String,
    pub source_platform: String,
    pub state: String,
    pub direction: Option<String>,
    pub occurred_at: i64,
    pub ingested_at: i64,
    pub queue_id: Option<String>,
    pub agent_ids: Vec<String>,
    /// Blind index of every participant address: HMAC-SHA-256 under the tenant's index key.
    pub address_hmacs: Vec<[u8; crate::crypto::BLIND_INDEX_BYTES]>,
    pub wrap_up_code: Option<String>,
    pub disposition: Option<String>,
    pub schema_version: String,
    pub policy_id: Arc<str>,
    pub expires_at: i64,
    pub record_hash: [u8; 32],
    pub record: crate::crypto::Plaintext,
    pub payload: Vec<u8>,
}

impl Row {
    /// Bytes this row holds in memory (for the batch memory budget).
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.event_id.len()
            + self.interaction_id.len()
            + self.tenant_id.len()
            + self.source_platform.len()
            + self.state.len()
            + self.queue_id.as_ref().map_or(0, String::len)
            + self.agent_ids.iter().map(|a| a.len() + 24).sum::<usize>()
            + self.address_hmacs.len() * crate::crypto::BLIND_INDEX_BYTES
            + self.wrap_up_code.as_ref().map_or(0, String::len)
            + self.disposition.as_ref().map_or(0, String::len)
            + self.record.len()
            + self.payload.capacity()
    }

    /// The fields a legal hold matches on, as a reader of the stored file would see them.
    pub fn index(&self) -> IndexRow<'_> {
        IndexRow {
            tenant: &self.tenant_id,
            interaction: &self.interaction_id,
            queue: self.queue_id.as_deref(),
            agents: self.agent_ids.iter().map(String::as_str).collect(),
            occurred_at: self.occurred_at,
            expires_at: self.expires_at,
        }
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("interaction_id", DataType::Utf8, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("source_platform", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, true),
        Field::new("occurred_at", ts(), false),
        Field::new("ingested_at", ts(), false),
        Field::new("queue_id", DataType::Utf8, true),
        Field::new(
            "agent_ids",
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "address_hmacs",
            DataType::List(Arc::new(Field::new(
                "element",
                DataType::FixedSizeBinary(crate::crypto::BLIND_INDEX_BYTES as i32),
                true,
            ))),
            false,
        ),
        Field::new("wrap_up_code", DataType::Utf8, true),
        Field::new("disposition", DataType::Utf8, true),
        Field::new("schema_version", DataType::Utf8, false),
        Field::new("policy_id", DataType::Utf8, false),
        Field::new("expires_at", ts(), false),
        Field::new("record_hash", DataType::FixedSizeBinary(32), false),
        Field::new("dek_id", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ]))
});

/// The rows as a batch of [`SCHEMA`], with their `payload` column already made.
pub fn to_record_batch(rows: &[Row], dek_id: &str, payload: ArrayRef) -> RecordBatch {
    let n = rows.len();
    let s = |f: fn(&Row) -> &str| {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let event_id = s(|r| &r.event_id);
    let interaction_id = s(|r| &r.interaction_id);
    let tenant_id = s(|r| &r.tenant_id);
    let source_platform = s(|r| &r.source_platform);
    let state = s(|r| &r.state);
    let schema_version = s(|r| &r.schema_version);
    let policy_id = s(|r| &r.policy_id);
    let opt = |f: fn(&Row) -> Option<&str>| {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let direction = opt(|r| r.direction.as_deref());
    let queue_id = opt(|r| r.queue_id.as_deref());
    let wrap_up_code = opt(|r| r.wrap_up_code.as_deref());
    let disposition = opt(|r| r.disposition.as_deref());
    let t = |f: fn(&Row) -> i64| {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let occurred_at = t(|r| r.occurred_at);
    let ingested_at = t(|r| r.ingested_at);
    let expires_at = t(|r| r.expires_at);
    let mut hash = FixedSizeBinaryBuilder::with_capacity(n, 32);
    rows.iter()
        .for_each(|r| hash.append_value(r.record_hash).expect("32 bytes"));
    RecordBatch::try_new(
        SCHEMA.clone(),
        vec![
            event_id,
            interaction_id,
            tenant_id,
            source_platform,
            state,
            direction,
            occurred_at,
            ingested_at,
            queue_id,
            agent_ids(rows),
            address_hmacs(rows),
            wrap_up_code,
            disposition,
            schema_version,
            policy_id,
            expires_at,
            Arc::new(hash.finish()),
            Arc::new(arrow::array::StringArray::from_iter_values(
                std::iter::repeat_n(dek_id, n),
            )),
            payload,
        ],
    )
    .expect("rows match the schema")
}

fn agent_ids(rows: &[Row]) -> ArrayRef {
    let mut agents = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Utf8,
        true,
    )));
    for r in rows {
        for a in &r.agent_ids {
            agents.values().append_value(a);
        }
        agents.append(true);
    }
    Arc::new(agents.finish())
}

fn address_hmacs(rows: &[Row]) -> ArrayRef {
    let width = crate::crypto::BLIND_INDEX_BYTES as i32;
    let mut hmacs = ListBuilder::new(FixedSizeBinaryBuilder::new(width)).with_field(Arc::new(
        Field::new("element", DataType::FixedSizeBinary(width), true),
    ));
    for r in rows {
        for h in &r.address_hmacs {
            hmacs.values().append_value(h).expect("32 bytes");
        }
        hmacs.append(true);
    }
    Arc::new(hmacs.finish())
}

/// Row groups are capped by bytes, not rows: ciphertext makes rows heavy.
pub const ROW_GROUP_BYTES: usize = 64 << 20;
const BLOOM_MAX_NDV: u64 = 160 * 1024;
/// Columns of a handful of values, dictionary-encoded to a few bits a row: stored without
/// zstd, which gained 0.02% of the bytes on 1M events and lost on small files (a frame per
/// page), and cost a compression context per column and row group (a tenth of a backfill's
/// CPU over 4,399 partitions).
const FEW_VALUES: [&str; 10] = [
    "tenant_id",
    "source_platform",
    "state",
    "direction",
    "ingested_at",
    "wrap_up_code",
    "disposition",
    "schema_version",
    "policy_id",
    "dek_id",
];

/// The writer properties of a data file.
pub fn writer_properties(kv: Vec<KeyValue>) -> WriterProperties {
    sized_writer_properties(kv, None)
}

/// The writer properties of a data file; `rows`, when the file's row count is known before
/// it is written, sizes the bloom filters (at most [`BLOOM_MAX_NDV`] values either way).
pub fn sized_writer_properties(kv: Vec<KeyValue>, rows: Option<u64>) -> WriterProperties {
    let c = |n: &str| ColumnPath::from(n);
    let ndv = rows.map_or(BLOOM_MAX_NDV, |r| r.clamp(1, BLOOM_MAX_NDV));
    let mut b = WriterProperties::builder();
    for col in FEW_VALUES {
        b = b.set_column_compression(c(col), Compression::UNCOMPRESSED);
    }
    b.set_created_by(format!("holdfast {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_max_row_group_row_count(None)
        .set_column_dictionary_enabled(c("event_id"), false)
        .set_column_bloom_filter_enabled(c("event_id"), true)
        .set_column_bloom_filter_fpp(c("event_id"), 0.01)
        .set_column_bloom_filter_max_ndv(c("event_id"), ndv)
        .set_column_bloom_filter_enabled(c("interaction_id"), true)
        .set_column_bloom_filter_fpp(c("interaction_id"), 0.01)
        .set_column_bloom_filter_max_ndv(c("interaction_id"), ndv)
        .set_column_dictionary_enabled(
            ColumnPath::from(vec![
                "address_hmacs".to_string(),
                "list".to_string(),
                "element".to_string(),
            ]),
            false,
        )
        .set_column_compression(
            ColumnPath::from(vec![
                "address_hmacs".to_string(),
                "list".to_string(),
                "element".to_string(),
            ]),
            Compression::UNCOMPRESSED,
        )
        .set_column_statistics_enabled(
            ColumnPath::from(vec![
                "address_hmacs".to_string(),
                "list".to_string(),
                "element".to_string(),
            ]),
            EnabledStatistics::None,
        )
        .set_column_dictionary_enabled(c("record_hash"), false)
        .set_column_compression(c("record_hash"), Compression::UNCOMPRESSED)
        .set_column_statistics_enabled(c("record_hash"), EnabledStatistics::None)
        .set_column_dictionary_enabled(c("payload"), false)
        .set_column_encoding(c("payload"), Encoding::PLAIN)
        .set_column_compression(c("payload"), Compression::UNCOMPRESSED)
        .set_column_statistics_enabled(c("payload"), EnabledStatistics::None)
        .set_key_value_metadata(Some(kv))
        .build()
}

/// Key/value metadata holdfast writes into every data file footer (the file describes itself
/// even without its manifest).
pub fn file_metadata(
    batch_id: &str,
    partition: &str,
    dek_id: &str,
    wrapped_dek: &crate::crypto::kms::WrappedKey,
) -> Vec<KeyValue> {
    use footer as k;
    let wrapped = crate::crypto::kms::WrappedKeyV1::from(wrapped_dek);
    vec![
        KeyValue::new(k::FORMAT_KEY.into(), k::FORMAT.to_string()),
        KeyValue::new(k::VERSION_KEY.into(), k::VERSION.to_string()),
        KeyValue::new(k::BATCH_ID.into(), batch_id.to_string()),
        KeyValue::new(k::PARTITION.into(), partition.to_string()),
        KeyValue::new(k::ALGORITHM.into(), crate::crypto::ALGORITHM.to_string()),
        KeyValue::new(k::AAD.into(), crate::crypto::group::GROUP_AAD.to_string()),
        KeyValue::new(k::COMPRESSION.into(), k::GROUP_COMPRESSION.to_string()),
        KeyValue::new(k::DEK_ID.into(), dek_id.to_string()),
        KeyValue::new(
            k::WRAPPED_DEK.into(),
            serde_json::to_string(&wrapped).expect("serializes"),
        ),
    ]
}
