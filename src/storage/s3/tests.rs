//! The S3 backend against moto (`moto_server`, started by tests/run.sh, which exports
//! `HOLDFAST_TEST_MOTO_ENDPOINT`). Under `CI=true` a missing server fails the test; elsewhere
//! the test says why it skipped. Each test works under a prefix (or a bucket) of its own, so
//! they run in parallel. The storage contract runs here too (`contract.rs`, `on_s3`).

// tests read the test server's address from the environment
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::storage::{Store, StoreUrl};
use chrono::{Duration, Utc};
use object_store::ObjectStoreExt;
use reqwest::Method;
use std::sync::OnceLock;

/// The fake secret key the tests sign with.
const SECRET: &str = "holdfast-test-secret-0123456789";

fn moto(test: &str) -> Option<String> {
    match std::env::var("HOLDFAST_TEST_MOTO_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: CI=true and no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset); run tests/run.sh"
            )
        }
        Err(_) => {
            eprintln!("{test}: skipped: no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset)");
            None
        }
    }
}

pub(crate) fn overrides(endpoint: &str) -> Overrides {
    Overrides {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        credentials: Some(aws_sdk_kms::config::Credentials::new(
            "AKIDHOLDFASTTEST",
            SECRET,
            None,
            None,
            "holdfast-tests",
        )),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() >> 16)
}

/// The bucket this test process shares (created once, with Object Lock).
fn bucket(endpoint: &str) -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        let b = unique("holdfast-tests");
        S3::open_with(&b, "", true, &overrides(endpoint)).expect("a test bucket");
        b
    })
}

fn open(endpoint: &str, bucket: &str, prefix: &str) -> Store {
    let s3 = S3::open_with(bucket, prefix, false, &overrides(endpoint)).expect("open");
    Store::with(Arc::new(s3))
}

/// Fresh stores (a new prefix each) in the shared bucket, or `None` without moto.
pub(crate) fn fresh(test: &str) -> Option<impl Fn() -> Store> {
    let endpoint = moto(test)?;
    let b = bucket(&endpoint);
    Some(move || open(&endpoint, b, &unique("store")))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn store_urls_name_a_bucket_and_a_prefix() {
    let u = StoreUrl::parse("s3://my-bucket/a/b/").unwrap();
    assert_eq!(
        u,
        StoreUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: "a/b".into()
        }
    );
    assert_eq!(u.to_string(), "s3://my-bucket/a/b");
    assert!(u.is_remote() && u.local_dir().is_none());
    assert_eq!(StoreUrl::parse("s3://bkt").unwrap().to_string(), "s3://bkt");
    for bad in [
        "s3://B",
        "s3://ab",
        "s3://-abc",
        "s3://a..b/x",
        "s3://abc/a//b",
        "s3://abc/../x",
    ] {
        assert!(StoreUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_provider_refuses_to_delete_a_locked_version_whatever_holdfast_believes() {
    let Some(fresh) = fresh("provider_refusal") else {
        return;
    };
    let store = fresh();
    let p = Path::from("lake/x.parquet");
    let until = Utc::now() + Duration::days(30);
    rt().block_on(async {
        store.put_new(&p, b"data".to_vec()).await.unwrap();
        store.retain_until(&p, until).await.unwrap();
        let lock = store.lock(&p).await.unwrap();
        assert_eq!(lock.retain_until.map(|t| t.timestamp()), Some(until.timestamp()));
        // holdfast's own rule passes (a clock past retain-until), the provider still refuses
        let later = until + Duration::days(1);
        let err = store.delete(&p).await.unwrap_err();
        assert!(
            matches!(&err, LakeError::ObjectLocked { reason, .. } if reason.contains("AccessDenied")),
            "{err}"
        );
        assert!(store.delete_checked(&p, later).await.is_err());
        assert_eq!(&store.get(&p).await.unwrap()[..], b"data");

        // a legal hold on a never-retained object: refused until released
        let h = Path::from("lake/held.parquet");
        store.put_new(&h, b"held".to_vec()).await.unwrap();
        store.legal_hold(&h, true).await.unwrap();
        assert!(store.lock(&h).await.unwrap().legal_hold);
        assert!(matches!(
            store.delete(&h).await,
            Err(LakeError::ObjectLocked { .. })
        ));
        store.legal_hold(&h, false).await.unwrap();
        store.delete(&h).await.unwrap();
        assert!(store.head(&h).await.unwrap().is_none());
    });
}

#[test]
fn deleting_removes_every_version_and_marker_not_just_the_name() {
    let Some(endpoint) = moto("versions") else {
        return;
    };
    let b = bucket(&endpoint);
    let prefix = unique("store");
    let store = open(&endpoint, b, &prefix);
    let s3 = S3::open_with(b, &prefix, false, &overrides(&endpoint)).unwrap();
    let p = Path::from("landing/seg.ndjson.zst");
    rt().block_on(async {
        store.put_new(&p, b"one".to_vec()).await.unwrap();
        // someone overwrites it and `aws s3 rm`s it: two versions and a marker
        let key = s3.key(&p);
        let raw = s3.raw.clone();
        let full = Path::from(key.clone());
        raw.put(&full, b"two".to_vec().into()).await.unwrap();
        raw.delete(&full).await.unwrap();
        let before = s3.conn.versions(&key).await.unwrap();
        assert_eq!(before.len(), 3, "{before:?}");
        assert!(before.iter().any(|v| v.delete_marker));
        store.delete(&p).await.unwrap();
        assert!(s3.conn.versions(&key).await.unwrap().is_empty());
        // a missing object is no error
        store.delete(&p).await.unwrap();
    });
}

#[test]
fn large_uploads_go_in_parts_create_only_and_a_dropped_one_leaves_nothing() {
    let Some(fresh) = fresh("multipart") else {
        return;
    };
    let store = fresh();
    let p = Path::from("lake/big.parquet");
    let bytes: Vec<u8> = (0..(upload::PART * 2 + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    rt().block_on(async {
        let mut up = store.start_upload(&p).await.unwrap();
        for chunk in bytes.chunks(3 << 20) {
            up.put_part(chunk.to_vec().into()).await.unwrap();
        }
        assert!(
            store.head(&p).await.unwrap().is_none(),
            "nothing before complete"
        );
        let done = up.complete().await.unwrap();
        assert!(done.version.is_some(), "the version id comes back");
        assert_eq!(store.get(&p).await.unwrap().to_vec(), bytes);
        // a second upload at the same key is refused at completion
        let s3 = Path::from("lake/big2.parquet");
        let mut a = store.start_upload(&s3).await.unwrap();
        a.put_part(bytes.clone().into()).await.unwrap();
        let mut b = store.start_upload(&s3).await.unwrap();
        b.put_part(bytes[..100].to_vec().into()).await.unwrap();
        b.complete().await.unwrap();
        let second = a.complete().await;
        assert!(
            matches!(second, Err(object_store::Error::AlreadyExists { .. })),
            "{second:?}"
        );
        assert_eq!(store.get(&s3).await.unwrap().len(), 100);
        // dropped unfinished: no object
        let q = Path::from("lake/dropped.parquet");
        let mut d = store.start_upload(&q).await.unwrap();
        d.put_part(bytes.clone().into()).await.unwrap();
        drop(d);
        assert!(store.head(&q).await.unwrap().is_none());
    });
}

/// What an upload sent (one PUT, or parts, each checked by S3 against its SHA-256) is
/// checked against the hash the manifest will record; a different hash is named.
#[test]
fn the_manifest_hash_is_checked_against_what_the_upload_sent() {
    let Some(fresh) = fresh("upload_hash") else {
        return;
    };
    let store = fresh();
    let hex_sha = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
    rt().block_on(async {
        for (name, size) in [("small", 1000), ("large", upload::PART + 4321)] {
            let p = Path::from(format!("lake/{name}.parquet"));
            let bytes: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
            let mut up = store.start_upload(&p).await.unwrap();
            for chunk in bytes.chunks(3 << 20) {
                up.put_part(chunk.to_vec().into()).await.unwrap();
            }
            up.complete().await.unwrap();
            store.confirm_upload(&p, &hex_sha(&bytes)).unwrap();
            let err = store
                .confirm_upload(&p, &hex_sha(b"other bytes"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&hex_sha(&bytes)) && err.contains(name),
                "{name}: {err}"
            );
        }
    });
}

#[test]
fn a_bucket_without_object_lock_or_with_default_retention_is_refused_with_the_fix() {
    let Some(endpoint) = moto("bucket_check") else {
        return;
    };
    let over = overrides(&endpoint);
    let missing = unique("holdfast-missing");
    let err = S3::open_with(&missing, "p", false, &over)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("--create-bucket"),
        "{err}"
    );

    // a plain bucket (no Object Lock), made behind holdfast's back
    let plain = unique("holdfast-plain");
    let made = S3::open_with(&missing, "p", true, &over).unwrap();
    let mut conn = made.conn.clone();
    conn.bucket = plain.clone();
    rt().block_on(async {
        let a = conn.send(conn::Call::new(Method::PUT, None)).await.unwrap();
        assert!(a.ok(), "{}", a.code());
    });
    let err = S3::open_with(&plain, "", false, &over)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not versioned") || err.contains("no Object Lock"),
        "{err}"
    );
    assert!(err.contains("aws s3api"), "{err}");

    // default retention would lock leases and landing segments
    rt().block_on(async {
        let mut conn = made.conn.clone();
        conn.bucket = missing.clone();
        let body = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
        let mut call = conn::Call::new(Method::PUT, None);
        call.query = &[("object-lock", "")];
        call.headers.push(("content-md5", api::md5(body)));
        call.body = body.to_string().into();
        let a = conn.send(call).await.unwrap();
        assert!(a.ok(), "{}", a.code());
    });
    let err = S3::open_with(&missing, "p", false, &over)
        .unwrap_err()
        .to_string();
    assert!(err.contains("by default"), "{err}");
}

/// A stand-in for S3 that answers the first `failures` requests with 503 SlowDown, then the
/// bucket-check calls as a bucket with versioning and Object Lock: its address and how many
/// requests it saw.
fn slow_down_server(failures: u32) -> (String, Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let (Ok(mut conn), seen) = (conn, seen.clone()) else {
                return;
            };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                        let (status, body) = if n <= failures {
                            (
                                "503 Slow Down",
                                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                            )
                        } else if head.contains("?versioning") {
                            (
                                "200 OK",
                                "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
                            )
                        } else {
                            (
                                "200 OK",
                                "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",
                            )
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn throttling_is_retried_with_backoff_then_reported_by_name() {
    use std::sync::atomic::Ordering;
    // two SlowDowns, then the answers: the bucket check goes through
    let (ep, hits) = slow_down_server(2);
    S3::open_with("holdfast-throttled", "p", false, &overrides(&ep)).expect("retried");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "2 refused + versioning + object-lock"
    );
    // SlowDown to every attempt: a bounded number of them, then a clear error
    let (ep, hits) = slow_down_server(u32::MAX);
    let err = S3::open_with("holdfast-throttled", "p", false, &overrides(&ep))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SlowDown") && err.contains("gave up after 6 attempts"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 6);
}

#[test]
fn wrong_credentials_are_a_clear_error_that_holds_no_secret() {
    let Some(_) = moto("wrong_credentials") else {
        return;
    };
    let Ok(ep) = std::env::var("HOLDFAST_TEST_MOTO_AUTH_ENDPOINT") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no HOLDFAST_TEST_MOTO_AUTH_ENDPOINT"
        );
        return;
    };
    let err = S3::open_with("holdfast-creds", "p", true, &overrides(&ep))
        .unwrap_err()
        .to_string();
    assert!(err.contains("403") && err.contains("credentials"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}
