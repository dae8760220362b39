//! The columns of an export: the index columns every extract carries, and for a decrypted
//! production the canonical record flattened into typed columns. Shaped for warehouse
//! loaders: timestamps as INT64 microseconds adjusted to UTC, list children named `element`,
//! `record_hash` as hex text, and NULL (never `""`) where a value is missing, which
//! Snowflake's `MATCH_BY_COLUMN_NAME` requires. The hive keys (`year`, `month`, `day`) are
//! not exported: `occurred_at` holds them.

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};
use std::sync::{Arc, LazyLock};

/// What the selection reads from `events` (or `decrypted`), in export order.
pub const INDEX_COLUMNS: &[&str] = &[
    "event_id",
    "interaction_id",
    "tenant_id",
    "interaction_type",
    "source_platform",
    "state",
    "direction",
    "occurred_at",
    "ingested_at",
    "queue_id",
    "agent_ids",
    "wrap_up_code",
    "disposition",
    "schema_version",
    "policy_id",
    "expires_at",
    "record_hash",
];

/// Index columns that may be missing (exported NULL, never `""`).
const OPTIONAL: &[&str] = &["direction", "queue_id", "wrap_up_code", "disposition"];

/// Top-level keys of the canonical record that have columns of their own.
const RECORD_KEYS: &[&str] = &[
    "eventId",
    "eventType",
    "state",
    "sourcePlatform",
    "tenantId",
    "occurredAt",
    "interaction",
    "vendorPayload",
];
/// Keys of `interaction` that have columns of their own.
const INTERACTION_KEYS: &[&str] = &[
    "schemaVersion",
    "interactionId",
    "interactionType",
    "direction",
    "routingMetadata",
    "participants",
];

pub fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn index_fields() -> Vec<Field> {
    INDEX_COLUMNS
        .iter()
        .map(|&name| match name {
            "occurred_at" | "ingested_at" | "expires_at" => Field::new(name, ts(), false),
            "agent_ids" => Field::new(
                name,
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                false,
            ),
            n => Field::new(n, DataType::Utf8, OPTIONAL.contains(&n)),
        })
        .collect()
}

/// A participant of a production.
fn participant_fields() -> Fields {
    Fields::from(vec![
        Field::new("participant_id", DataType::Utf8, true),
        Field::new("type", DataType::Utf8, true),
        Field::new("address", DataType::Utf8, true),
        Field::new("joined_at", ts(), true),
        Field::new("left_at", ts(), true),
    ])
}

/// An index extract's schema.
pub static INDEX: LazyLock<SchemaRef> = LazyLock::new(|| Arc::new(Schema::new(index_fields())));

/// A decrypted production's schema: the index columns, then the record's own.
pub static PRODUCTION: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = index_fields();
    fields.extend([
        Field::new("event_type", DataType::Utf8, true),
        Field::new("queue_name", DataType::Utf8, true),
        Field::new(
            "participants",
            DataType::List(Arc::new(Field::new(
                "element",
                DataType::Struct(participant_fields()),
                false,
            ))),
            false,
        ),
        Field::new("vendor_payload", DataType::Utf8, true),
        Field::new("extra_fields", DataType::Utf8, true),
        // the canonical record as stored: its SHA-256 is `record_hash`
        Field::new("record_json", DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
});

#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    #[error("the selection returned no column {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// A decrypted record that is not the canonical JSON object (its event id only).
    #[error("event {0}: its decrypted record is not a canonical JSON object")]
    Record(String),
}

fn column<'a>(b: &'a RecordBatch, name: &'static str) -> Result<&'a ArrayRef, ColumnError> {
    b.column_by_name(name).ok_or(ColumnError::Missing(name))
}

/// NULL where a string is empty.
fn null_if_empty(a: &StringArray) -> StringArray {
    if !a.iter().any(|v| v == Some("")) {
        return a.clone();
    }
    a.iter().map(|v| v.filter(|s| !s.is_empty())).collect()
}

/// The index columns of `b` (a batch of the selection) as exported.
pub fn index_columns(b: &RecordBatch) -> Result<Vec<ArrayRef>, ColumnError> {
    let fields = index_fields();
    let mut out = Vec::with_capacity(fields.len());
    for (&name, field) in INDEX_COLUMNS.iter().zip(&fields) {
        let a = column(b, name)?;
        let a: ArrayRef = match name {
            "record_hash" => {
                let h: &FixedSizeBinaryArray = a.as_fixed_size_binary();
                Arc::new(
                    h.iter()
                        .map(|v| v.map(hex::encode))
                        .collect::<StringArray>(),
                )
            }
            "agent_ids" => {
                let l = a.as_list::<i32>();
                let values = null_if_empty(l.values().as_string::<i32>());
                let child = match field.data_type() {
                    DataType::List(f) => f.clone(),
                    _ => unreachable!("agent_ids is a list"),
                };
                Arc::new(ListArray::try_new(
                    child,
                    l.offsets().clone(),
                    Arc::new(values),
                    l.nulls().cloned(),
                )?)
            }
            _ if field.data_type() == &DataType::Utf8 => {
                Arc::new(null_if_empty(a.as_string::<i32>()))
            }
            _ => a.clone(),
        };
        out.push(a);
    }
    Ok(out)
}

/// An index extract's batch.
pub fn index_batch(b: &RecordBatch) -> Result<RecordBatch, ColumnError> {
    Ok(RecordBatch::try_new(INDEX.clone(), index_columns(b)?)?)
}

/// The `record_hash` column of an exported batch (hex).
pub fn record_hashes(b: &RecordBatch) -> Result<&StringArray, ColumnError> {
    Ok(column(b, "record_hash")?.as_string::<i32>())
}

/// The record's own columns, built row by row.
#[derive(Default)]
struct RecordColumns {
    event_type: Vec<Option<String>>,
    queue_name: Vec<Option<String>>,
    offsets: Vec<i32>,
    participant: [Vec<Option<String>>; 3],
    joined: Vec<Option<i64>>,
    left: Vec<Option<i64>>,
    vendor: Vec<Option<String>>,
    extra: Vec<Option<String>>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn micros(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| crate::clock::micros(t.to_utc()))
}

impl RecordColumns {
    fn push(&mut self, record: &str, event: &str) -> Result<(), ColumnError> {
        let bad = || ColumnError::Record(event.to_string());
        let mut top: Map<String, Value> = serde_json::from_str(record).map_err(|_| bad())?;
        let mut interaction = match top.remove("interaction") {
            Some(Value::Object(m)) => m,
            _ => return Err(bad()),
        };
        self.event_type.push(text(top.get("eventType")));
        let routing = interaction.get("routingMetadata");
        self.queue_name
            .push(text(routing.and_then(|r| r.get("queueName"))));
        if let Some(Value::Array(ps)) = interaction.get("participants") {
            for p in ps {
                self.participant[0].push(text(p.get("participantId")));
                self.participant[1].push(text(p.get("type")));
                self.participant[2].push(text(p.get("address")));
                self.joined.push(micros(p.get("joinedTimestamp")));
                self.left.push(micros(p.get("leftTimestamp")));
            }
        }
        self.offsets.push(self.joined.len() as i32);
        self.vendor.push(text(top.get("vendorPayload")));
        // everything without a column of its own, kept as JSON text
        top.retain(|k, _| !RECORD_KEYS.contains(&k.as_str()));
        interaction.retain(|k, _| !INTERACTION_KEYS.contains(&k.as_str()));
        if !interaction.is_empty() {
            top.insert("interaction".into(), Value::Object(interaction));
        }
        self.extra
            .push((!top.is_empty()).then(|| Value::Object(top).to_string()));
        Ok(())
    }

    fn finish(self, records: &StringArray) -> Result<Vec<ArrayRef>, ColumnError> {
        let strings = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let times = |v: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        let [id, kind, address] = self.participant;
        let structs = StructArray::try_new(
            participant_fields(),
            vec![
                strings(id),
                strings(kind),
                strings(address),
                times(self.joined),
                times(self.left),
            ],
            None,
        )?;
        let mut offsets = vec![0];
        offsets.extend(self.offsets);
        let list = ListArray::try_new(
            Arc::new(Field::new("element", structs.data_type().clone(), false)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(structs),
            None,
        )?;
        Ok(vec![
            strings(self.event_type),
            strings(self.queue_name),
            Arc::new(list),
            strings(self.vendor),
            strings(self.extra),
            Arc::new(records.clone()),
        ])
    }
}

/// A production's batch: the index columns of `b` and its decrypted `record` flattened.
pub fn production_batch(b: &RecordBatch) -> Result<RecordBatch, ColumnError> {
    let mut columns = index_columns(b)?;
    let records = column(b, "record")?.as_string::<i32>();
    let events = column(b, "event_id")?.as_string::<i32>();
    let mut own = RecordColumns::default();
    for r in 0..b.num_rows() {
        if records.is_null(r) {
            return Err(ColumnError::Record(events.value(r).to_string()));
        }
        own.push(records.value(r), events.value(r))?;
    }
    columns.extend(own.finish(records)?);
    Ok(RecordBatch::try_new(PRODUCTION.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, ListBuilder, StringBuilder};

    fn selection(records: &[&str]) -> RecordBatch {
        let n = records.len();
        let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
        let t = || -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; n])
                    .with_timezone("UTC"),
            )
        };
        let mut agents = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "element",
            DataType::Utf8,
            true,
        )));
        for _ in 0..n {
            agents.values().append_value("a1");
            agents.values().append_value("");
            agents.append(true);
        }
        let hashes = FixedSizeBinaryArray::try_from_iter((0..n).map(|i| [i as u8; 32])).unwrap();
        let mut cols: Vec<(&str, ArrayRef)> = INDEX_COLUMNS
            .iter()
            .map(|&c| {
                let a = match c {
                    "occurred_at" | "ingested_at" | "expires_at" => t(),
                    "agent_ids" => Arc::new(agents.finish_cloned()) as ArrayRef,
                    "record_hash" => Arc::new(hashes.clone()) as ArrayRef,
                    "queue_id" => s(""),
                    other => s(other),
                };
                (c, a)
            })
            .collect();
        cols.push(("record", Arc::new(StringArray::from(records.to_vec()))));
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn empty_strings_are_exported_as_null_and_hashes_as_hex() {
        let b = index_batch(&selection(&["{}"])).unwrap();
        let q = b.column_by_name("queue_id").unwrap();
        assert!(q.is_null(0), "an empty queue id is NULL");
        let agents = b.column_by_name("agent_ids").unwrap().as_list::<i32>();
        let values = agents.values().as_string::<i32>();
        assert_eq!(values.value(0), "a1");
        assert!(values.is_null(1));
        assert_eq!(record_hashes(&b).unwrap().value(0), "00".repeat(32));
    }

    #[test]
    fn a_record_is_flattened_and_kept_whole() {
        let record = r#"{"eventId":"e1","eventType":"INTERACTION","state":"CREATED","sourcePlatform":"GENESYS","tenantId":"t","occurredAt":"2024-01-01T00:00:00Z","interaction":{"schemaVersion":"2.1.0","interactionId":"i","interactionType":"CALL","direction":null,"routingMetadata":{"queueName":"Claims","queueId":"q"},"participants":[{"participantId":"p1","type":"CUSTOMER","address":"+15550100","joinedTimestamp":"2024-01-01T00:00:01Z","leftTimestamp":null},{"participantId":"p2","type":"AGENT","address":""}],"custom":1},"vendorPayload":{"k":[1,2]},"notes":"n"}"#;
        let b = production_batch(&selection(&[record, record])).unwrap();
        assert_eq!(b.schema(), *PRODUCTION);
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        assert_eq!(col("queue_name").as_string::<i32>().value(1), "Claims");
        assert_eq!(
            col("vendor_payload").as_string::<i32>().value(0),
            r#"{"k":[1,2]}"#
        );
        assert_eq!(
            col("extra_fields").as_string::<i32>().value(0),
            r#"{"interaction":{"custom":1},"notes":"n"}"#
        );
        assert_eq!(col("record_json").as_string::<i32>().value(0), record);
        let ps = col("participants");
        let ps = ps.as_list::<i32>();
        assert_eq!(ps.value_length(0), 2);
        let first = ps.value(0);
        let first = first.as_struct();
        assert_eq!(first.column(2).as_string::<i32>().value(0), "+15550100");
        assert!(first.column(2).is_null(1), "an empty address is NULL");
        let joined = first
            .column(3)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(joined.value(0), 1_704_067_201_000_000);
        assert!(first.column(4).is_null(0));
    }

    #[test]
    fn a_record_that_is_not_an_object_names_its_event_only() {
        let e = production_batch(&selection(&["[\"secret\"]"])).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("event_id") && !m.contains("secret"), "{m}");
    }
}
