use super::super::keys::{FileKey, KeyBook, TRAIN_ROWS};
use super::super::report::BatchReport;
use super::super::{BatchOptions, Stages};
use super::{Sink, WrittenFile};
use crate::clock::FakeClock;
use crate::crypto::{RecordCompressor, record_aad, seal_record, sha256};
use crate::job::Context;
use crate::lake::datafile::{self, Row};
use crate::lake::layout::Partition;
use crate::retention::hold::HoldSnapshot;
use crate::storage::Store;
use arrow::array::AsArray;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ctx: Context,
    opts: BatchOptions,
    keys: KeyBook,
    holds: Arc<HoldSnapshot>,
}

fn fixture(memory_bytes: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2025-10-10T00:00:00Z").unwrap();
    let clock = Arc::new(FakeClock::new(at.into()));
    let (store, kms) = rt.block_on(crate::store::initialised_for_tests(
        dir.path(),
        clock.clone(),
    ));
    let ctx = Context {
        store,
        kms,
        clock,
        failpoints: crate::hooks::Failpoints::none(),
    };
    let opts = BatchOptions {
        memory_bytes,
        ..BatchOptions::default()
    };
    Fixture {
        _dir: dir,
        rt,
        ctx,
        opts,
        keys: KeyBook::default(),
        holds: Arc::new(HoldSnapshot::default()),
    }
}

/// A fixture whose files are written with `keys` (of format 1 or 2).
fn fixture_of(memory_bytes: usize, keys: KeyBook) -> Fixture {
    Fixture {
        keys,
        ..fixture(memory_bytes)
    }
}

fn file_key(day: u32) -> FileKey {
    let at = chrono::DateTime::parse_from_rfc3339("2025-01-01T10:00:00Z").unwrap();
    let at = at.to_utc() + chrono::Duration::days(day.into());
    FileKey {
        domain: None,
        partition: Partition::of(at, "CALL").unwrap(),
        policy: Arc::from("FINRA_4511_6Y"),
    }
}

/// A record and its row (payload empty), for event `n` of `day`.
fn event(day: u32, n: usize) -> (Box<Row>, Vec<u8>) {
    let record = format!(
        r#"{{"eventId":"ev-{day}-{n}","notes":"caller {n} asked about the invoice of day {day} and the loyalty discount"}}"#
    )
    .into_bytes();
    let row = Row {
        event_id: format!("ev-{day}-{n}"),
        interaction_id: format!("in-{day}-{n}"),
        tenant_id: "t1".into(),
        source_platform: "GENESYS_CX".into(),
        state: "CREATED".into(),
        direction: None,
        occurred_at: 0,
        ingested_at: 0,
        queue_id: None,
        agent_ids: vec![],
        address_hmacs: vec![],
        wrap_up_code: None,
        disposition: None,
        schema_version: "2.1.0".into(),
        policy_id: Arc::from("FINRA_4511_6Y"),
        expires_at: i64::MAX / 2,
        record_hash: sha256(&record),
        record: Default::default(),
        payload: Vec::new(),
    };
    (Box::new(row), record)
}

/// Every record of every file, opened with that file's own DEK and dictionary: (event id,
/// record), and the DEK ids of the files.
fn read_back(f: &Fixture, written: &[WrittenFile]) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let (mut records, mut deks) = (Vec::new(), Vec::new());
    for w in written {
        let e = &w.entry;
        let path = e.location().unwrap();
        let store: &Store = &f.ctx.store;
        let dek =
            f.rt.block_on(
                f.ctx
                    .kms
                    .unwrap_key(&e.encryption.dek_id, &e.encryption.wrapped_dek),
            )
            .unwrap();
        let md =
            f.rt.block_on(datafile::footer(store, &path, e.size_bytes))
                .unwrap();
        let mut opener =
            datafile::Records::from_footer(md.file_metadata(), dek.cipher(), &e.path).unwrap();
        let columns = [
            "event_id",
            "interaction_id",
            "tenant_id",
            "record_hash",
            "payload",
        ];
        for b in
            f.rt.block_on(datafile::read_columns(store, &path, e.size_bytes, &columns))
                .unwrap()
        {
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (ev, inter, tenant) = (col("event_id"), col("interaction_id"), col("tenant_id"));
            let (hash, payload) = (col("record_hash"), col("payload"));
            for i in 0..b.num_rows() {
                let ev = ev.as_string::<i32>().value(i);
                let ids = datafile::RowIds {
                    tenant_id: tenant.as_string::<i32>().value(i),
                    event_id: ev,
                    interaction_id: inter.as_string::<i32>().value(i),
                };
                let plain = opener
                    .open(ids, payload.as_binary::<i32>().value(i))
                    .unwrap();
                assert_eq!(
                    sha256(&plain).as_slice(),
                    hash.as_fixed_size_binary().value(i)
                );
                records.push((ev.to_string(), plain.to_vec()));
            }
        }
        // closing a file's records wipes the groups it opened
        opener.close();
        assert_eq!(opener.open_groups(), 0);
        deks.push(e.encryption.dek_id.clone());
    }
    records.sort();
    (records, deks)
}

/// More partitions than the budget holds: the least recently used files are closed as the
/// batch goes; a partition that gets rows again has a second file with its own DEK; a row a
/// worker sealed for a first file that was closed meanwhile is opened again and stored in the
/// second. Every row is stored once and opens with its own file's keys. (Format 2, where
/// workers seal records once a dictionary is learnt.)
#[test]
fn files_close_under_the_budget_and_a_later_row_goes_to_a_new_file_of_its_own() {
    let f = fixture_of(1 << 20, KeyBook::records(false));
    let st = Stages {
        domains: &Default::default(),
        rt: f.rt.handle(),
        ctx: &f.ctx,
        opts: &f.opts,
        batch_id: "20251010T000000Z-00000001",
        keys: &f.keys,
        holds: &f.holds,
    };
    let mut report = BatchReport::default();
    let mut sink = Sink::new(&st);
    let mut expected = Vec::new();
    let mut take = |sink: &mut Sink<'_>, report: &mut BatchReport, day: u32, n: usize| {
        let (row, record) = event(day, n);
        expected.push((row.event_id.clone(), record.clone()));
        sink.accept(file_key(day), row, Some(record), report)
            .unwrap();
    };
    // day 1 learns its dictionary (workers would seal with it from now on)
    for n in 0..TRAIN_ROWS + 10 {
        take(&mut sink, &mut report, 1, n);
    }
    let first = f.keys.part(&file_key(1));
    assert!(
        matches!(first.dict.get("t1"), Some(Some(_))),
        "day 1 learnt"
    );
    // a worker seals a row of day 1 with the first file's keys...
    let (mut late, late_record) = event(1, 9999);
    let dict = first.dict.get("t1").unwrap();
    let aad = record_aad(
        &late.tenant_id,
        &late.event_id,
        &late.interaction_id,
        first.cipher.dek_id(),
    );
    seal_record(
        &first.cipher,
        &mut RecordCompressor::default(),
        dict.as_deref(),
        &late_record,
        &aad,
        &mut late.payload,
    );
    // ...then forty more days arrive: day 1 is closed to stay within the budget
    for day in 2..=40 {
        for n in 0..40 {
            take(&mut sink, &mut report, day, n);
        }
    }
    assert!(
        first.dict.get("t1").is_none(),
        "day 1's first file is closed"
    );
    // the worker's row arrives now, and more plaintext rows of day 1
    sink.accept(file_key(1), late, None, &mut report).unwrap();
    for n in 10_000..10_020 {
        take(&mut sink, &mut report, 1, n);
    }
    let written = sink.finish(&mut report).unwrap();
    expected.push(("ev-1-9999".into(), late_record));
    let day1: Vec<&WrittenFile> = written
        .iter()
        .filter(|w| w.partition == file_key(1).partition)
        .collect();
    assert_eq!(day1.len(), 2, "two files for day 1");
    assert!(
        day1.iter()
            .any(|w| w.entry.path.ends_with("-FINRA_4511_6Y-1.parquet"))
    );
    let (records, deks) = read_back(&f, &written);
    expected.sort();
    assert_eq!(
        records, expected,
        "every row once, opened with its own file's keys"
    );
    let mut unique = deks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), deks.len(), "a DEK per file");
    assert_eq!(report.stored, expected.len() as u64);
    assert_eq!(report.files, written.len() as u64);
    assert_eq!(report.partitions, 40);
}

/// A row of `tenant` with `record` as its plaintext (payload empty).
fn row_of(tenant: &str, event_id: &str, record: Vec<u8>) -> (Box<Row>, Vec<u8>) {
    let (mut row, _) = event(1, 0);
    row.tenant_id = tenant.into();
    row.event_id = event_id.into();
    row.interaction_id = format!("in-{event_id}");
    row.record_hash = sha256(&record);
    (row, record)
}

/// Sealed payload bytes of every record of the written files, by event id.
fn payload_sizes(f: &Fixture, written: &[WrittenFile]) -> std::collections::HashMap<String, usize> {
    let mut sizes = std::collections::HashMap::new();
    for w in written {
        let (path, size) = (w.entry.location().unwrap(), w.entry.size_bytes);
        let cols = ["event_id", "payload"];
        for b in
            f.rt.block_on(datafile::read_columns(&f.ctx.store, &path, size, &cols))
                .unwrap()
        {
            let ev = b
                .column_by_name("event_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let p = b
                .column_by_name("payload")
                .unwrap()
                .as_binary::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                sizes.insert(ev.value(i).to_string(), p.value(i).len());
            }
        }
    }
    sizes
}

/// One batch of one file: tenant A's 200 records, each with A's customer `number`, then tenant
/// B's records, the last ones each quoting one of `guesses`; the sealed size of each guess.
fn guess_sizes(number: &str, guesses: &[String], version: u8) -> Vec<usize> {
    let words = [
        "delivery", "window", "loyalty", "discount", "router", "refund", "carrier",
    ];
    let mut f = fixture(64 << 20);
    match version {
        1 => f = fixture_of(64 << 20, KeyBook::records(true)),
        2 => f = fixture_of(64 << 20, KeyBook::records(false)),
        _ => {}
    }
    let st = Stages {
        domains: &Default::default(),
        rt: f.rt.handle(),
        ctx: &f.ctx,
        opts: &f.opts,
        batch_id: "20251010T000000Z-00000002",
        keys: &f.keys,
        holds: &f.holds,
    };
    let mut report = BatchReport::default();
    let mut sink = Sink::new(&st);
    let mut take = |tenant: &str, id: String, text: String| {
        let record = format!(r#"{{"eventId":"{id}","tenantId":"{tenant}","notes":"{text}"}}"#);
        let (row, record) = row_of(tenant, &id, record.into_bytes());
        sink.accept(file_key(1), row, Some(record), &mut report)
            .unwrap();
    };
    for n in 0..200 {
        let w = words[n % words.len()];
        let text = format!(
            "customer with account number {number} asked about the {w} of the statement and was told to call back"
        );
        take("tenant-a", format!("a-{n}"), text);
    }
    for n in 0..TRAIN_ROWS {
        let (w, v) = (words[n % words.len()], words[(n / 7) % words.len()]);
        let text = format!(
            "the caller asked about the {w} and the {v}, then about the invoice and the next visit of the technician"
        );
        take("tenant-b", format!("b-{n}"), text);
    }
    for (k, g) in guesses.iter().enumerate() {
        let text = format!("is {g} the number on my account");
        take("tenant-b", format!("g-{k:02}"), text);
    }
    let written = sink.finish(&mut report).unwrap();
    let sizes = payload_sizes(&f, &written);
    if version == 3 {
        // a row's payload is its group's number, and its group's first row carries the group:
        // every payload of B's rows, in order
        let mut b: Vec<(&String, &usize)> =
            sizes.iter().filter(|(e, _)| !e.starts_with("a-")).collect();
        b.sort();
        return b.into_iter().map(|(_, n)| *n).collect();
    }
    (0..guesses.len())
        .map(|k| sizes[&format!("g-{k:02}")])
        .collect()
}

/// The side channel of a dictionary shared by tenants: tenant A's records carry a customer
/// number; tenant B's records, sealed in the same file, each quote a guess of it (the right
/// one first, then its digits shuffled so that no two neighbours are neighbours in it). With
/// one dictionary trained on the file's first records whatever their tenant, the right guess
/// compressed shortest (74 bytes against 83 to 87; as the format 1 files of test builds still
/// show). B's sizes must not depend on A's records at all: the same when A's number is another,
/// in format 2 (a dictionary per tenant) and in format 3 (groups of one tenant's records).
#[test]
fn a_tenants_compressed_sizes_do_not_reveal_another_tenants_records() {
    for (version, secret) in [
        (2, "4920178365"),
        (2, "5017263948"),
        (3, "6283019475"),
        (3, "7390418526"),
    ] {
        let digits: Vec<char> = secret.chars().collect();
        let mut guesses = vec![secret.to_string()];
        guesses.extend((0..10).map(|k| (0..10).map(|i| digits[(7 * i + k) % 10]).collect()));
        let other: String = (0..10).map(|i| digits[(i + 5) % 10]).collect();
        let (right, wrong) = (
            guess_sizes(secret, &guesses, version),
            guess_sizes(&other, &guesses, version),
        );
        assert_eq!(
            right, wrong,
            "B's sealed sizes of the guesses (the right one first) depend on A's number {secret}"
        );
    }
    // one dictionary for the whole file (format 1): the right guess is the shortest
    let guesses: Vec<String> = ["4920178365", "4819265730", "3710492586"]
        .map(String::from)
        .into();
    let shared = guess_sizes("4920178365", &guesses, 1);
    assert!(shared[0] < shared[1].min(shared[2]), "{shared:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    /// Rows of random tenants over a few days, under a tight or a loose memory budget: every
    /// record opens with its own file's DEK and its tenant's dictionary, once; a file lists
    /// dictionaries only for tenants it holds records of.
    #[test]
    fn records_of_random_tenants_round_trip(
        tenants in proptest::collection::vec(0usize..4, 1..600),
        tight in proptest::bool::ANY,
    ) {
        let f = fixture(if tight { 1 << 20 } else { 64 << 20 });
        let st = Stages {
        domains: &Default::default(),
            rt: f.rt.handle(),
            ctx: &f.ctx,
            opts: &f.opts,
            batch_id: "20251010T000000Z-00000003",
            keys: &f.keys,
            holds: &f.holds,
        };
        let mut report = BatchReport::default();
        let mut sink = Sink::new(&st);
        let mut expected = Vec::new();
        for (n, t) in tenants.iter().enumerate() {
            let (row, mut record) = event((n % 3) as u32 + 1, n);
            let note = format!(" tenant-{t} asked about the router of order {n}, the refund and the carrier");
            record.extend_from_slice(note.repeat(3).as_bytes());
            let (row, record) = row_of(&format!("tenant-{t}"), &row.event_id, record);
            expected.push((row.event_id.clone(), record.clone()));
            sink.accept(file_key((n % 3) as u32 + 1), row, Some(record), &mut report).unwrap();
        }
        let written = sink.finish(&mut report).unwrap();
        let (records, _) = read_back(&f, &written);
        expected.sort();
        proptest::prop_assert_eq!(records, expected);
        for w in &written {
            let e = &w.entry;
            let md = f.rt.block_on(datafile::footer(&f.ctx.store, &e.location().unwrap(), e.size_bytes)).unwrap();
            let dek = f.rt.block_on(f.ctx.kms.unwrap_key(&e.encryption.dek_id, &e.encryption.wrapped_dek)).unwrap();
            let dicts = datafile::FileDictionaries::from_footer(md.file_metadata(), dek.cipher(), &e.path).unwrap();
            for t in dicts.tenants() {
                proptest::prop_assert!(e.tenant_ids.iter().any(|x| x == t), "{t} in {:?}", e.tenant_ids);
            }
        }
    }
}
