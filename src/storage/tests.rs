//! What only the local backend does: file modes, staging outside the lake, directory syncs,
//! lock records and read-only files; and store URLs. What every backend does is in
//! `contract.rs`.

#![allow(clippy::disallowed_methods)] // the tests look at the files the local backend wrote

use super::local::Local;
use super::*;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

use crate::test_support::block;

/// A local store and its backend (to count the directories waiting for a sync).
fn local(dir: &std::path::Path) -> (Store, Arc<Local>) {
    let backend = Arc::new(Local::open(dir, true).unwrap());
    (Store::with(backend.clone()), backend)
}

#[test]
fn store_urls_name_a_backend() {
    let p = |s: &str| StoreUrl::parse(s);
    assert_eq!(p("store").unwrap(), StoreUrl::local("store"));
    assert_eq!(p("/srv/s").unwrap(), StoreUrl::local("/srv/s"));
    assert_eq!(p("file:///srv/s").unwrap(), StoreUrl::local("/srv/s"));
    assert_eq!(p("file:///srv/a%20b").unwrap(), StoreUrl::local("/srv/a b"));
    assert_eq!(p("memory://t-1").unwrap(), StoreUrl::Memory("t-1".into()));
    assert_eq!(p("memory://t-1").unwrap().to_string(), "memory://t-1");
    assert!(p("file://host/srv/s").is_err(), "no remote file URLs");
    assert!(p("memory://").is_err());
    assert!(p("memory://a/b").is_err());
    assert!(
        p("gs://bucket/x")
            .unwrap_err()
            .contains("gs:// stores are not supported")
    );
    assert!(p("").is_err());
    assert_eq!(
        StoreUrl::local("/x").local_dir(),
        Some(std::path::Path::new("/x"))
    );
    assert_eq!(StoreUrl::Memory("m".into()).local_dir(), None);
}

#[test]
fn a_memory_store_is_shared_by_name_and_must_exist_to_be_opened() {
    let name = format!("shared-{:016x}", rand::random::<u64>());
    let url = StoreUrl::Memory(name.clone());
    assert!(Store::open(&url, false).is_err(), "not created yet");
    let a = Store::init(&url, false, false).unwrap();
    let b = Store::open(&url, false).unwrap();
    block(async {
        a.put_new(&Path::from("x"), b"1".to_vec()).await.unwrap();
        assert_eq!(&b.get(&Path::from("x")).await.unwrap()[..], b"1");
    });
    assert_eq!(b.describe(), format!("memory://{name}"));
    assert!(!b.group_readable());
    assert_eq!(b.remove_abandoned_staging(), 0);
}

#[test]
fn a_missing_directory_is_opened_only_when_asked_to_create_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    assert!(Store::open(&StoreUrl::local(&root), false).is_err());
    let s = Store::open(&StoreUrl::local(&root), true).unwrap();
    assert_eq!(
        s.describe(),
        root.canonicalize().unwrap().display().to_string()
    );
}

#[test]
fn local_puts_take_the_store_modes_and_leave_no_staging() {
    for (group, file, dir) in [(false, 0o600, 0o700), (true, 0o640, 0o750)] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = Store::init(&StoreUrl::local(&root), group, false).unwrap();
        assert_eq!(store.group_readable(), group);
        let p = Path::from("audit/v1.json");
        block(async {
            assert_eq!(
                store.put_new(&p, b"one".to_vec()).await.unwrap(),
                Put::Created
            );
        });
        assert_eq!(mode(&root.join("audit/v1.json")), file);
        assert_eq!(mode(&root.join("audit")), dir);
        assert_eq!(mode(&root), dir);
        let staging = std::fs::read_dir(root.join(".staging")).map_or(0, |d| d.count());
        assert_eq!(staging, 0);
    }
}

/// A staged put is fsynced when staged (an unnamed file in its directory), named when put,
/// its directory synced at the barrier; dropped unlinked, it leaves nothing.
#[test]
fn a_local_staged_put_is_unnamed_until_linked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = local(dir.path());
    let store = store.deferred();
    let part = dir
        .path()
        .join("manifests/year=2025/month=01/day=05/interaction_type=CALL");
    let named = || std::fs::read_dir(&part).map_or(0, |d| d.count());
    let staging = || std::fs::read_dir(dir.path().join(".staging")).map_or(0, |d| d.count());
    let p = Path::from("manifests/year=2025/month=01/day=05/interaction_type=CALL/v1.json");
    block(async {
        let s = store.stage_new(&p, b"one".to_vec()).await.unwrap();
        assert_eq!((named(), staging()), (0, 0), "not there before its link");
        let dropped = store.stage_new(&p, b"two".to_vec()).await.unwrap();
        drop(dropped);
        assert_eq!(store.put_staged(s).await.unwrap(), Put::Created);
        assert_eq!((named(), staging()), (1, 0));
        assert_eq!(std::fs::read(part.join("v1.json")).unwrap(), b"one");
        assert!(backend.pending_dirs() > 0, "synced at the barrier");
        store.sync().await.unwrap();
        assert_eq!(backend.pending_dirs(), 0);
        assert_eq!(mode(&dir.path().join(p.as_ref())), 0o600);
        let again = store.stage_new(&p, b"three".to_vec()).await.unwrap();
        assert_eq!(store.put_staged(again).await.unwrap(), Put::AlreadyExists);
        assert_eq!(std::fs::read(part.join("v1.json")).unwrap(), b"one");
    });
}

/// An upload is an unnamed file in its directory until complete (nothing named in the lake
/// before, nothing left when abandoned); parts of any size arrive whole (written direct in
/// whole blocks, the last one padded and cut); the directories wait for the barrier.
#[test]
fn a_local_upload_is_unnamed_until_complete_and_synced_at_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = local(dir.path());
    let part_dir = dir
        .path()
        .join("lake/year=2025/month=01/day=05/interaction_type=CALL");
    let named = |d: &std::path::Path| std::fs::read_dir(d).map_or(0, |d| d.count());
    let p = Path::from("lake/year=2025/month=01/day=05/interaction_type=CALL/part-x.parquet");
    let sizes = [5, 4091, 8192, 1, 3 << 20, 7];
    let parts: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j) % 251) as u8).collect())
        .collect();
    block(async {
        let mut up = store.start_upload(&p).await.unwrap();
        for part in &parts {
            up.put_part(part.clone().into()).await.unwrap();
        }
        assert_eq!(named(&part_dir), 0, "nothing named in the lake yet");
        assert_eq!(named(&dir.path().join(".staging")), 0);
        up.complete().await.unwrap();
        let written = std::fs::read(dir.path().join(p.as_ref())).unwrap();
        assert_eq!(written, parts.concat());
        assert!(
            backend.pending_dirs() > 0,
            "the lake directories wait for the barrier"
        );
        store.sync().await.unwrap();
        assert_eq!(backend.pending_dirs(), 0);
        let q = Path::from("lake/other.parquet");
        let mut up = store.start_upload(&q).await.unwrap();
        up.put_part(b"x".to_vec().into()).await.unwrap();
        drop(up);
        assert_eq!(
            named(&dir.path().join("lake")),
            1,
            "an abandoned upload leaves nothing"
        );
        let mut up = store.start_upload(&q).await.unwrap();
        up.put_part(b"y".to_vec().into()).await.unwrap();
        std::mem::forget(up); // a killed process: no drop
        assert_eq!(named(&dir.path().join("lake")), 1, "nor does a killed one");
    });
}

#[test]
fn deferred_local_writes_and_deletes_wait_for_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = local(dir.path());
    let group = store.deferred();
    block(async {
        store
            .put_new(&Path::from("landing/a.seg"), b"a".to_vec())
            .await
            .unwrap();
        assert_eq!(
            backend.pending_dirs(),
            0,
            "a plain put is durable when it returns"
        );
        group
            .put_new(&Path::from("manifests/p/v1.json"), b"m".to_vec())
            .await
            .unwrap();
        group.delete(&Path::from("landing/a.seg")).await.unwrap();
        assert!(backend.pending_dirs() >= 2);
        store.sync().await.unwrap();
        assert_eq!(backend.pending_dirs(), 0);
    });
}

#[test]
fn writes_whose_directory_the_caller_syncs_share_no_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = local(dir.path());
    let own = store.dir_synced_by_caller();
    block(async {
        for name in ["landing/a.seg", "landing/b.seg"] {
            let p = Path::from(name);
            assert!(matches!(
                own.put_new(&p, b"x".to_vec()).await,
                Ok(Put::Created)
            ));
        }
        assert_eq!(backend.pending_dirs(), 0, "nothing for another's barrier");
        own.sync_dir_of(&Path::from("landing/a.seg")).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("landing/b.seg")).unwrap(),
            b"x"
        );
    });
}

/// Staging files a killed process left under `.staging/` (where the filesystem has no
/// unnamed files, or a staged manifest) are removed by the next batch.
#[test]
fn abandoned_staging_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = local(dir.path());
    let staging = dir.path().join(".staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("upload-killed"), b"x").unwrap();
    std::fs::write(staging.join("staged-killed"), b"y").unwrap();
    assert_eq!(store.remove_abandoned_staging(), 2);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

#[test]
fn a_local_lock_is_a_versioned_record_and_a_read_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = local(dir.path());
    let p = Path::from("lake/x.parquet");
    let until = chrono::DateTime::parse_from_rfc3339("2031-06-30T12:00:00Z")
        .unwrap()
        .to_utc();
    block(async {
        store.put_new(&p, b"data".to_vec()).await.unwrap();
        store.retain_until(&p, until).await.unwrap();
        store.legal_hold(&p, true).await.unwrap();
    });
    assert_eq!(
        mode(&dir.path().join("lake/x.parquet")) & 0o222,
        0,
        "read-only"
    );
    let record = dir.path().join("_locks/lake/x.parquet.lock.json");
    let want = lock::LockFile::encode(&Lock {
        retain_until: Some(until),
        legal_hold: true,
    });
    assert_eq!(std::fs::read(&record).unwrap(), want);
    // a record of an unknown version is refused, not read as unlocked
    let text = String::from_utf8(want).unwrap().replace(r#""1""#, r#""9""#);
    std::fs::write(&record, text).unwrap();
    let err = block(store.lock(&p)).unwrap_err();
    assert!(matches!(err, LakeError::Corrupt { .. }), "{err}");
    assert!(block(store.delete_checked(&p, until + chrono::Duration::days(1))).is_err());
}
