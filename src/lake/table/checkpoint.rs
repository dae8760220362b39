//! Checkpoints of the table log: every [`EVERY`] versions, `_delta_log/<v>.checkpoint.parquet`
//! holds the table's whole state at version `v` (protocol, metadata, one `add` per live file),
//! so that a reader loads one Parquet file and the few versions after it instead of every
//! JSON version since 0. Like the log, a checkpoint is derived from the head it describes
//! (the files its manifests list, with the same `add` as the log), written create-only, and
//! rebuilt and compared by `table rebuild` and `verify`. Tombstones (`remove`) are left out:
//! readers do not need them, and holdfast's own manifests keep the removal history.

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, ListBuilder, MapBuilder, MapFieldNames,
    RecordBatch, StringArray, StringBuilder, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use serde_json::Value;
use std::sync::Arc;

/// A checkpoint every this many versions.
pub const EVERY: u64 = 100;

fn string_map() -> DataType {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// Appends a JSON object of strings as a map (an absent object: a null map).
fn push_map(b: &mut MapBuilder<StringBuilder, StringBuilder>, v: Option<&Value>) {
    match v.and_then(Value::as_object) {
        Some(m) => {
            for (k, x) in m {
                b.keys().append_value(k);
                b.values().append_option(x.as_str());
            }
            b.append(true).expect("keys and values in step");
        }
        None => b.append(false).expect("keys and values in step"),
    }
}

/// One column per action kind; each row has one non-null action.
struct Columns {
    /// Which row holds what: 0 protocol, 1 metadata, 2+ adds.
    rows: usize,
}

fn strings(rows: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(rows.to_vec()))
}

fn valid(rows: usize, which: impl Fn(usize) -> bool) -> NullBuffer {
    NullBuffer::from((0..rows).map(which).collect::<Vec<bool>>())
}

impl Columns {
    fn protocol(&self) -> ArrayRef {
        let n = self.rows;
        let fields = Fields::from(vec![
            Field::new("minReaderVersion", DataType::Int32, true),
            Field::new("minWriterVersion", DataType::Int32, true),
        ]);
        let one = |v: i32| -> ArrayRef {
            Arc::new(Int32Array::from(
                (0..n).map(|r| (r == 0).then_some(v)).collect::<Vec<_>>(),
            ))
        };
        Arc::new(StructArray::new(
            fields,
            vec![one(1), one(2)],
            Some(valid(n, |r| r == 0)),
        ))
    }

    fn metadata(&self, m: &Value) -> ArrayRef {
        let n = self.rows;
        fn at(n: usize, v: Option<&str>) -> Vec<Option<&str>> {
            (0..n).map(|r| if r == 1 { v } else { None }).collect()
        }
        let mut options = map_builder();
        let mut config = map_builder();
        let mut parts = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "element",
            DataType::Utf8,
            true,
        )));
        for r in 0..n {
            if r == 1 {
                push_map(&mut options, m["format"].get("options"));
                push_map(&mut config, m.get("configuration"));
                for p in m["partitionColumns"].as_array().into_iter().flatten() {
                    parts.values().append_option(p.as_str());
                }
                parts.append(true);
            } else {
                push_map(&mut options, None);
                push_map(&mut config, None);
                parts.append(false);
            }
        }
        let format = StructArray::new(
            Fields::from(vec![
                Field::new("provider", DataType::Utf8, true),
                Field::new("options", string_map(), true),
            ]),
            vec![
                strings(&at(n, m["format"]["provider"].as_str())),
                Arc::new(options.finish()),
            ],
            Some(valid(n, |r| r == 1)),
        );
        let created: Vec<Option<i64>> = (0..n)
            .map(|r| (r == 1).then(|| m["createdTime"].as_i64()).flatten())
            .collect();
        let fields = Fields::from(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("description", DataType::Utf8, true),
            Field::new(
                "format",
                arrow::array::Array::data_type(&format).clone(),
                true,
            ),
            Field::new("schemaString", DataType::Utf8, true),
            Field::new(
                "partitionColumns",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
            Field::new("configuration", string_map(), true),
            Field::new("createdTime", DataType::Int64, true),
        ]);
        Arc::new(StructArray::new(
            fields,
            vec![
                strings(&at(n, m["id"].as_str())),
                strings(&at(n, m["name"].as_str())),
                strings(&at(n, None)),
                Arc::new(format),
                strings(&at(n, m["schemaString"].as_str())),
                Arc::new(parts.finish()),
                Arc::new(config.finish()),
                Arc::new(Int64Array::from(created)),
            ],
            Some(valid(n, |r| r == 1)),
        ))
    }

    fn adds(&self, adds: &[&Value]) -> ArrayRef {
        let n = self.rows;
        let get = |r: usize| (r >= 2).then(|| adds[r - 2]);
        let text = |key: &str| -> ArrayRef {
            Arc::new(StringArray::from(
                (0..n)
                    .map(|r| get(r).and_then(|a| a[key].as_str()))
                    .collect::<Vec<_>>(),
            ))
        };
        let long = |key: &str| -> ArrayRef {
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|r| get(r).and_then(|a| a[key].as_i64()))
                    .collect::<Vec<_>>(),
            ))
        };
        let mut values = map_builder();
        let mut tags = map_builder();
        for r in 0..n {
            push_map(&mut values, get(r).map(|a| &a["partitionValues"]));
            push_map(&mut tags, None);
        }
        let change: ArrayRef = Arc::new(BooleanArray::from(
            (0..n)
                .map(|r| get(r).and_then(|a| a["dataChange"].as_bool()))
                .collect::<Vec<_>>(),
        ));
        let fields = Fields::from(vec![
            Field::new("path", DataType::Utf8, true),
            Field::new("partitionValues", string_map(), true),
            Field::new("size", DataType::Int64, true),
            Field::new("modificationTime", DataType::Int64, true),
            Field::new("dataChange", DataType::Boolean, true),
            Field::new("stats", DataType::Utf8, true),
            Field::new("tags", string_map(), true),
        ]);
        Arc::new(StructArray::new(
            fields,
            vec![
                text("path"),
                Arc::new(values.finish()),
                long("size"),
                long("modificationTime"),
                change,
                text("stats"),
                Arc::new(tags.finish()),
            ],
            Some(valid(n, |r| r >= 2)),
        ))
    }

    /// The `remove` column: present (readers project it), every row null.
    fn removes(&self) -> ArrayRef {
        let n = self.rows;
        let fields = Fields::from(vec![
            Field::new("path", DataType::Utf8, true),
            Field::new("deletionTimestamp", DataType::Int64, true),
            Field::new("dataChange", DataType::Boolean, true),
        ]);
        Arc::new(StructArray::new(
            fields,
            vec![
                strings(&vec![None; n]),
                Arc::new(Int64Array::from(vec![None::<i64>; n])),
                Arc::new(BooleanArray::from(vec![None::<bool>; n])),
            ],
            Some(valid(n, |_| false)),
        ))
    }
}

/// The checkpoint's bytes: the protocol, `metadata` (the log's `metaData` object) and the
/// live files' `add` objects, in path order.
pub fn encode(metadata: &Value, adds: &[&Value]) -> Vec<u8> {
    let c = Columns {
        rows: 2 + adds.len(),
    };
    let columns = [
        ("protocol", c.protocol()),
        ("metaData", c.metadata(metadata)),
        ("add", c.adds(adds)),
        ("remove", c.removes()),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("checkpoint columns agree");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_created_by(format!("holdfast {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props))
        .expect("an in-memory writer");
    w.write(&batch).expect("an in-memory write");
    w.close().expect("an in-memory close");
    out
}
