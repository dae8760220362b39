//! The in-memory tables of a session: `manifests` (one row per committed data file),
//! `removals` (the files retention sweeps took out) and `audit` (the trail).

use super::QueryError;
use crate::lake::manifest::{DataFileEntry, Loaded};
use arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use std::sync::Arc;

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

/// The `manifests` table: one row per committed data file, from the latest manifest of
/// each partition.
pub fn manifests_batch(latest: &[Loaded]) -> Result<RecordBatch, QueryError> {
    let mut c = ManifestColumns::default();
    for l in latest {
        for f in &l.manifest.files {
            c.push(l, f);
        }
    }
    c.finish()
}

fn manifests_schema() -> Arc<Schema> {
    let list = || DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
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
    ]))
}

/// The column builders of [`manifests_batch`], by type, in schema order within each type.
struct ManifestColumns {
    s: Vec<StringBuilder>,
    ints: Vec<Int32Builder>,
    longs: Vec<Int64Builder>,
    times: Vec<TimestampMicrosecondBuilder>,
    lists: Vec<ListBuilder<StringBuilder>>,
    kek_version: UInt32Builder,
}

impl Default for ManifestColumns {
    fn default() -> Self {
        ManifestColumns {
            s: (0..9).map(|_| StringBuilder::new()).collect(),
            ints: (0..3).map(|_| Int32Builder::new()).collect(),
            longs: (0..3).map(|_| Int64Builder::new()).collect(),
            times: (0..6)
                .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                .collect(),
            lists: (0..2)
                .map(|_| {
                    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                        "element",
                        DataType::Utf8,
                        true,
                    )))
                })
                .collect(),
            kek_version: UInt32Builder::new(),
        }
    }
}

impl ManifestColumns {
    fn push(&mut self, l: &Loaded, f: &DataFileEntry) {
        let (m, s) = (&l.manifest, &mut self.s);
        s[0].append_value(m.partition.dir());
        self.ints[0].append_value(m.partition.year);
        self.ints[1].append_value(m.partition.month as i32);
        self.ints[2].append_value(m.partition.day as i32);
        s[1].append_value(&m.partition.interaction_type);
        s[2].append_value(&f.path);
        s[3].append_value(&f.sha256);
        self.longs[0].append_value(f.size_bytes as i64);
        self.longs[1].append_value(f.record_count as i64);
        for (b, t) in self.times.iter_mut().zip([
            f.min_occurred_at,
            f.max_occurred_at,
            f.earliest_expiry,
            f.latest_expiry,
            f.added_at,
            m.committed_at,
        ]) {
            b.append_value(t.timestamp_micros());
        }
        for (b, v) in self.lists.iter_mut().zip([&f.tenant_ids, &f.policy_ids]) {
            v.iter().for_each(|x| b.values().append_value(x));
            b.append(true);
        }
        s[4].append_value(&f.encryption.algorithm);
        s[5].append_value(&f.encryption.dek_id);
        s[6].append_value(&f.encryption.wrapped_dek.kek_id);
        self.kek_version
            .append_value(f.encryption.wrapped_dek.kek_version);
        s[7].append_value(&f.batch_id);
        self.longs[2].append_value(m.sequence as i64);
        s[8].append_value(&l.sha256);
    }

    fn finish(self) -> Result<RecordBatch, QueryError> {
        fn done<B: ArrayBuilder>(v: Vec<B>) -> std::vec::IntoIter<ArrayRef> {
            v.into_iter()
                .map(|mut b| b.finish())
                .collect::<Vec<_>>()
                .into_iter()
        }
        let mut kek_version = self.kek_version;
        let (mut s, mut ints, mut longs) = (done(self.s), done(self.ints), done(self.longs));
        let (mut times, mut lists) = (done(self.times), done(self.lists));
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
        Ok(RecordBatch::try_new(manifests_schema(), columns)?)
    }
}
