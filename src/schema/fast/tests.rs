//! The fast path against the slow one (`SourceKind::decode`, then the JSON Schema and
//! `extract`) on generated lines: what the fast path accepts, the slow path accepts as a
//! current-version event with the same index fields and the line itself as its record; what
//! the slow path accepts, the fast path accepts too, except for the cases it leaves to the
//! slow path on purpose (duplicate keys, a vendor key under `auto`).
#![allow(clippy::disallowed_methods)] // the tests read the repository's fixture files

use super::lines_tests::{apply, edit, event, line_of, style};
use crate::schema::{IndexFields, validator};
use crate::sources::SourceKind;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Whether the line has an object with a key twice (anywhere); not JSON is false.
fn has_duplicate_keys(line: &[u8]) -> bool {
    struct Unique;
    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Unique)
        }
    }
    impl<'de> Visitor<'de> for Unique {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !seen.insert(k) {
                    return Err(de::Error::custom("duplicate"));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }
    serde_json::from_slice::<serde_json::Value>(line).is_ok()
        && serde_json::from_slice::<Unique>(line).is_err()
}

const VENDOR_KEYS: &[&str] = &[
    "detail-type",
    "detail",
    "conversationId",
    "conversations",
    "contactId",
    "completedContacts",
    "ContactId",
];

/// Lines the fast path leaves to the slow path on purpose although they may be valid.
fn left_to_the_slow_path(line: &[u8], kind: SourceKind) -> bool {
    let vendor = || {
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .map(|o| VENDOR_KEYS.iter().any(|k| o.contains_key(*k)))
            })
            .unwrap_or(false)
    };
    has_duplicate_keys(line) || kind == SourceKind::Auto && vendor()
}

/// The slow path's verdict: a current-version event's fields and stored record, or why not.
#[derive(Debug)]
enum Slow {
    Current(Box<IndexFields>, Vec<u8>),
    Not(String),
}

fn slow(line: &[u8], kind: SourceKind) -> Slow {
    let mut decoded = match kind.decode(line, Some("t")) {
        Ok(d) => d,
        Err(r) => return Slow::Not(r.code),
    };
    if decoded.len() != 1 {
        return Slow::Not(format!("{} events", decoded.len()));
    }
    let d = decoded.pop().expect("one");
    match validator().check(&d.event) {
        Err(r) => Slow::Not(r.code),
        Ok(c) if c.upcast.is_some() => Slow::Not("upcast".into()),
        Ok(c) => Slow::Current(Box::new(c.fields), d.record.into_owned()),
    }
}

/// Holds the fast path to the slow one on `line`; returns whether the fast path took it.
fn agree(line: &[u8], kind: SourceKind) -> Result<bool, TestCaseError> {
    let fast = kind.decode_fast(line);
    let text = String::from_utf8_lossy(line);
    match (fast, slow(line, kind)) {
        (Some(f), Slow::Current(g, record)) => {
            prop_assert_eq!(f, *g, "{:?} {}", kind, text);
            prop_assert!(record == line, "the record is the line: {}", text);
            Ok(true)
        }
        (Some(f), Slow::Not(why)) => Err(TestCaseError::fail(format!(
            "{kind:?}: fast took {f:?}, slow: {why}: {text}"
        ))),
        (None, Slow::Current(..)) => {
            prop_assert!(
                left_to_the_slow_path(line, kind),
                "{:?}: fast declined a valid event: {}",
                kind,
                text
            );
            Ok(false)
        }
        (None, Slow::Not(_)) => Ok(false),
    }
}

/// Runs `check` on `cases` generated lines, under both `canonical` and `auto`, and returns
/// how many lines the fast path took and how many the slow path refused (under `canonical`).
fn run<S: Strategy>(cases: u32, lines: S) -> (u32, u32)
where
    S::Value: AsRef<[u8]>,
{
    use std::cell::Cell;
    let (taken, refused) = (Cell::new(0), Cell::new(0));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases));
    let result = runner.run(&lines, |line| {
        let line = line.as_ref();
        if agree(line, SourceKind::Canonical)? {
            taken.set(taken.get() + 1);
        } else if matches!(slow(line, SourceKind::Canonical), Slow::Not(_)) {
            refused.set(refused.get() + 1);
        }
        agree(line, SourceKind::Auto)?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    (taken.get(), refused.get())
}

/// Generated events, valid and edited (keys dropped, values set to edge strings and times,
/// long strings, other types, huge numbers, broken escapes; keys added, vendor keys and
/// duplicates among them), written plainly or with escapes: the same verdict as the JSON
/// Schema's, and for what the fast path takes the same fields and record.
#[test]
fn fast_path_agrees_with_the_schema() {
    let lines = (event(), prop::collection::vec(edit(), 0..3), style()).prop_map(
        |(mut e, edits, style)| {
            edits.iter().for_each(|ed| apply(&mut e, ed));
            line_of(&e, style)
        },
    );
    let (taken, refused) = run(3000, lines);
    // both verdicts are common, so neither side of the comparison is idle
    assert!(
        taken > 300 && refused > 300,
        "{taken} taken, {refused} refused"
    );
}

/// Valid events, unedited: every one is taken (none has a duplicate key or a vendor key).
#[test]
fn fast_path_takes_valid_events() {
    let lines = (event(), style()).prop_map(|(e, style)| line_of(&e, style));
    let (taken, refused) = run(500, lines);
    assert_eq!(taken + refused, 500, "{taken} taken, {refused} refused");
    assert!(taken > 250, "{taken} taken");
}

/// A valid line with its bytes edited (an invalid UTF-8 byte, a dropped or doubled quote, a
/// cut): the fast path never takes what the slow path refuses.
#[test]
fn fast_path_agrees_on_edited_bytes() {
    let byte = prop_oneof![
        Just(0xffu8),
        Just(b'"'),
        Just(b'\\'),
        Just(b','),
        Just(b'}'),
        any::<u8>()
    ];
    let lines = (event(), style(), any::<prop::sample::Index>(), byte, 0u8..4).prop_map(
        |(e, style, at, byte, how)| {
            let mut line = line_of(&e, style);
            let n = at.index(line.len());
            match how {
                0 => line[n] = byte,
                1 => line.insert(n, byte),
                2 => drop(line.remove(n)),
                _ => line.truncate(n),
            }
            line
        },
    );
    let (_, refused) = run(1500, lines);
    assert!(refused > 300, "{refused} refused");
}

/// The repository's canonical fixtures (valid, legacy versions, malformed lines).
#[test]
fn fast_path_agrees_on_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/canonical");
    let mut taken = 0;
    for name in ["events.ndjson", "legacy.ndjson", "malformed.ndjson"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            for kind in [SourceKind::Canonical, SourceKind::Auto] {
                taken += usize::from(agree(line, kind).unwrap());
            }
        }
    }
    assert!(taken > 0);
}

/// Cases written out: what serde and the schema might see differently.
#[test]
fn edge_cases_go_the_slow_path() {
    let base = r#"{"eventId":"e-1","eventType":"INTERACTION","state":"CREATED","sourcePlatform":"GENESYS_CX","tenantId":"t-1","occurredAt":"2024-05-14T09:24:45.800Z","interaction":{"schemaVersion":"2.1.0","interactionId":"i-1","interactionType":"CALL","participants":[]}}"#;
    let fast = |l: &str| SourceKind::Canonical.decode_fast(l.as_bytes());
    assert!(fast(base).is_some());
    // duplicate keys: the slow path keeps the last
    let dup = base.replace(
        r#""state":"CREATED""#,
        r#""state":"DELETED","state":"CREATED""#,
    );
    assert!(fast(&dup).is_none());
    assert!(matches!(
        slow(dup.as_bytes(), SourceKind::Canonical),
        Slow::Current(..)
    ));
    // an array where an object is wanted (serde's derive would take it for a struct)
    let arr = base.replace(r#""participants":[]"#, r#""participants":[["p","AGENT"]]"#);
    assert!(fast(&arr).is_none());
    // escaped keys and values are compared unescaped, as the slow path compares them
    let esc = base.replace(r#""state":"CREATED""#, r#""st\u0061te":"CR\u0045ATED""#);
    assert!(fast(&esc).is_some());
    // a number out of f64's range where nothing is read: still not JSON to the slow path
    let huge = base.replace(r#""participants":[]"#, r#""participants":[],"n":1e400"#);
    assert!(fast(&huge).is_none());
    // a lone surrogate in a field nobody reads
    let lone = base.replace(r#""participants":[]"#, r#""participants":[],"n":"\ud800""#);
    assert!(fast(&lone).is_none());
    // a pattern-valid time chrono refuses
    let month = base.replace("2024-05-14T09", "2024-13-14T09");
    assert!(fast(&month).is_none());
    // maxItems: 1,000 participants and no more
    let one = r#"{"participantId":"p","type":"IVR"}"#;
    let many = |n: usize| {
        base.replace(
            r#""participants":[]"#,
            &format!(r#""participants":[{}]"#, vec![one; n].join(",")),
        )
    };
    assert!(fast(&many(1000)).is_some());
    assert!(fast(&many(1001)).is_none());
    assert!(matches!(
        slow(many(1000).as_bytes(), SourceKind::Canonical),
        Slow::Current(..)
    ));
    assert!(matches!(
        slow(many(1001).as_bytes(), SourceKind::Canonical),
        Slow::Not(_)
    ));
    // under auto a vendor key goes the slow path, which decides the shape
    let vendor = base.replace(r#""state""#, r#""contactId":1,"state""#);
    assert!(SourceKind::Auto.decode_fast(vendor.as_bytes()).is_none());
    assert!(
        SourceKind::Canonical
            .decode_fast(vendor.as_bytes())
            .is_some()
    );
}

/// The checks restate one schema text: a change to it fails here until the fast path (and
/// this hash) are brought along.
#[test]
fn the_schema_is_the_one_restated() {
    let (_, text) = crate::schema::SCHEMAS
        .iter()
        .find(|(v, _)| *v == super::VERSION)
        .expect("in the registry");
    let hex: String = crate::crypto::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "72ba696e7019a71952982cc1424f94f2fad4c972ee85b2ba839f2f0e5755abad"
    );
}
