//! The catalog: its frozen layout, and that a session reading through it gets exactly what
//! reading every manifest gives, trusting nothing the signed head does not vouch for.

use super::*;
use crate::audit::Audit;
use crate::crypto::kms::LocalKeyring;
use crate::format::{golden, ts};
use crate::head::{Change, Committer};
use crate::lake::manifest::{Commit, DataFileEntry};
use std::sync::Arc;

use crate::test_support::block;

fn pos(sequence: u64, b: &[u8]) -> Position {
    Position {
        sequence,
        sha256: manifest::sha256_hex(b),
    }
}

#[test]
fn version_1_is_frozen_and_reads_back() {
    let a = Partition::new(2026, 1, 2, "CALL").unwrap();
    let b = Partition::new(2026, 1, 3, "SMS").unwrap();
    let (ma, mb) = (
        Bytes::from_static(b"{\"a\":1}\n"),
        Bytes::from_static(b"{\"b\":2}\n"),
    );
    let entries = vec![
        (a.clone(), pos(3, &ma), ma.clone()),
        (b.clone(), pos(1, &mb), mb.clone()),
    ];
    let bytes = encode(9, &entries);
    golden("catalog-v1.bin", &bytes);
    let c = decode(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(c.head, 9);
    assert_eq!(c.entries.len(), 2);
    assert_eq!((c.bytes(&c.entries[0]), c.bytes(&c.entries[1])), (ma, mb));
    assert_eq!(c.entries[1].partition, b);
    assert_eq!(c.positions()[&a], entries[0].1);
    // another magic, a header that says another version, lengths that do not add up
    let mut other = bytes.clone();
    other[7] = b'2';
    assert!(matches!(decode(other.into()), Err(FormatError::NotJson(_))));
    let mut seven = bytes.clone();
    let at = seven
        .windows(13)
        .position(|w| w == b"\"version\":\"1\"")
        .unwrap();
    seven[at + 11] = b'7';
    assert!(matches!(
        decode(Bytes::from(seven)),
        Err(FormatError::UnknownVersion { .. })
    ));
    let short = Bytes::from(bytes[..bytes.len() - 1].to_vec());
    assert!(matches!(decode(short), Err(FormatError::Invalid { .. })));
    let mut long = bytes.clone();
    long.push(b'x');
    assert!(matches!(
        decode(long.into()),
        Err(FormatError::Invalid { .. })
    ));
}

fn entry(p: &Partition, name: &str) -> DataFileEntry {
    crate::lake::manifest::sample_entry(format!("lake/{}/part-{name}.parquet", p.dir()))
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    kms: LocalKeyring,
    audit: Audit,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKeyring::create(&dir.path().join("k.json"), "x").unwrap();
        let store = Store::memory_for_tests();
        let clock = Arc::new(crate::clock::FakeClock::new(ts("2025-10-02T00:00:00Z")));
        let audit = Audit::new(store.clone(), clock);
        Fixture {
            _dir: dir,
            store,
            kms,
            audit,
        }
    }

    /// Commits one more file into each partition (a manifest version each), then the head.
    async fn batch(&self, parts: &[&Partition], name: &str, head: bool) {
        let mut change = Change::new(format!("batch {name}"));
        for p in parts {
            let base = manifest::load_latest(&self.store, p).await.unwrap();
            let now = ts("2025-10-02T00:00:00Z");
            let e = vec![entry(p, name)];
            match manifest::commit(&self.store, p, base.as_ref(), e, name, now)
                .await
                .unwrap()
            {
                Commit::Committed(l) => change.manifest(&l),
                Commit::LostRace { .. } => panic!("lost a race"),
            }
        }
        if head {
            let c = Committer {
                store: &self.store,
                kms: &self.kms,
                audit: &self.audit,
            };
            crate::head::commit(c, &change, ts("2025-10-02T00:00:00Z"))
                .await
                .unwrap();
        }
    }

    /// The catalog path's answer (and how many manifests it took from the catalog) and the
    /// manifests' own.
    async fn both(&self) -> (Vec<(String, String)>, usize, Vec<(String, String)>) {
        let (loaded, damaged, hits) = load_latest(&self.store).await.unwrap();
        let (plain, plain_damaged) = manifest::load_latest_each(&self.store).await.unwrap();
        let key = |l: &Vec<Loaded>, d: &Vec<Damaged>| {
            let mut v: Vec<(String, String)> = l
                .iter()
                .map(|l| (l.manifest.partition.dir(), l.sha256.clone()))
                .collect();
            v.extend(d.iter().map(|d| (d.partition.dir(), "damaged".into())));
            v
        };
        (key(&loaded, &damaged), hits, key(&plain, &plain_damaged))
    }

    async fn replace(&self, path: &object_store::path::Path, bytes: Vec<u8>) {
        self.store.delete(path).await.unwrap();
        self.store.put_new(path, bytes).await.unwrap();
    }
}

fn parts() -> Vec<Partition> {
    (1..=3)
        .map(|d| Partition::new(2025, 10, d, "CALL").unwrap())
        .collect()
}

#[test]
fn sessions_read_the_catalog_and_get_what_the_manifests_say() {
    let f = Fixture::new();
    let p = parts();
    block(async {
        f.batch(&[&p[0], &p[1]], "b1", true).await;
        f.batch(&[&p[1], &p[2]], "b2", true).await;
        let newest = crate::head::newest(&f.store).await.unwrap().unwrap();
        let seq = newest.head.sequence;
        // one catalog is kept besides the newest head's: the one before
        let kept: Vec<u64> = f
            .store
            .list(layout::CATALOGS)
            .await
            .unwrap()
            .iter()
            .filter_map(|m| layout::CatalogPath::parse(&m.location).map(|c| c.sequence))
            .collect();
        assert_eq!(kept, vec![seq - 1, seq]);
        let (cat, hits, plain) = f.both().await;
        assert_eq!(cat, plain);
        assert_eq!(hits, 3, "every manifest came from the catalog");
        // verify finds nothing to say about a catalog that matches
        let mut r = crate::lake::verify::VerifyReport::default();
        check(&f.store, &newest.head, &mut r).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        // no job pending: one stat per manifest finds an emptied one, which is left out and
        // reported as damaged, as without a catalog
        f.replace(&layout::manifest(&p[0], 1), Vec::new()).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!(cat, plain);
        assert!(cat.contains(&(p[0].dir(), "damaged".into())), "{cat:?}");
        assert_eq!(hits, 2);
    });
}

#[test]
fn a_partition_committed_after_the_head_or_damaged_is_read_from_its_manifest() {
    let f = Fixture::new();
    let p = parts();
    block(async {
        f.batch(&[&p[0], &p[1], &p[2]], "b1", true).await;
        // a batch that committed a manifest and stopped before its head (its intent record
        // stays until the next batch recovers it)
        let now = ts("2025-10-02T00:00:00Z");
        crate::head::intent::begin(&f.store, "b2", "batch", now)
            .await
            .unwrap();
        f.batch(&[&p[1]], "b2", false).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!(cat, plain);
        assert_eq!(hits, 2, "the newer version was read from the store");
        // an emptied manifest: left out and reported as damaged, as without a catalog
        f.replace(&layout::manifest(&p[0], 1), Vec::new()).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!(cat, plain);
        assert!(cat.contains(&(p[0].dir(), "damaged".into())), "{cat:?}");
        assert_eq!(hits, 1);
    });
}

#[test]
fn a_tampered_or_stale_catalog_is_not_trusted() {
    let f = Fixture::new();
    let p = parts();
    block(async {
        f.batch(&[&p[0], &p[1], &p[2]], "b1", true).await;
        let newest = crate::head::newest(&f.store).await.unwrap().unwrap();
        let path = layout::CatalogPath::new(newest.head.sequence).to_path();
        let good = f.store.get(&path).await.unwrap();
        // one manifest inside altered, same length: that manifest is read from the store
        let c = decode(good.clone()).unwrap();
        let at = 12 + u32::from_be_bytes(good[8..12].try_into().unwrap()) as usize;
        let mut bad = good.to_vec();
        let i = at + c.entries[1].range.start + 20;
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        f.replace(&path, bad).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!(cat, plain);
        assert_eq!(
            hits, 2,
            "the altered manifest did not come from the catalog"
        );
        let mut r = crate::lake::verify::VerifyReport::default();
        check(&f.store, &newest.head, &mut r).await.unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].problem.contains(&p[1].dir()),
            "{:?}",
            r.problems
        );
        // a catalog that records other versions than the head (stale or forged): not used
        let older = Bytes::from(encode(
            newest.head.sequence,
            &c.entries
                .iter()
                .skip(1)
                .map(|e| (e.partition.clone(), e.position.clone(), c.bytes(e)))
                .collect::<Vec<_>>(),
        ));
        f.replace(&path, older.to_vec()).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!((cat == plain, hits), (true, 0));
        // never used, so not reported either
        let mut r = crate::lake::verify::VerifyReport::default();
        check(&f.store, &newest.head, &mut r).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        // no catalog: the manifests are read; the next commit writes one again
        f.store.delete(&path).await.unwrap();
        let (cat, hits, plain) = f.both().await;
        assert_eq!((cat == plain, hits), (true, 0));
        f.batch(&[&p[0]], "b3", true).await;
        let (cat, hits, plain) = f.both().await;
        assert_eq!((cat == plain, hits), (true, 3));
    });
}
