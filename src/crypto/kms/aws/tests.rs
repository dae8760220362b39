//! The AWS KMS backend against moto's KMS (`moto_server`, started by tests/run.sh, which
//! exports `HOLDFAST_TEST_MOTO_ENDPOINT`, and `HOLDFAST_TEST_MOTO_AUTH_ENDPOINT` for a second
//! one that checks signatures). Under `CI=true` a missing server fails the test; elsewhere
//! the test says why it skipped. Each test makes keys of its own, so they run in parallel.
//! Throttling, which moto never answers, is answered by a stand-in server here (the
//! retries and the error are ours and the SDK's; the answer's shape is KMS's JSON error).

// tests read the test servers' addresses from the environment
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::crypto::kms::contract;
use crate::test_support::block;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// The fake secret key the tests sign with: no message may hold it.
const SECRET: &str = "holdfast-test-secret-0123456789";

fn endpoint(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(e) => Some(e),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: CI=true and no moto ({var} unset); run tests/run.sh")
        }
        Err(_) => {
            eprintln!("{test}: skipped: no moto ({var} unset; tests/run.sh starts one)");
            None
        }
    }
}

fn moto(test: &str) -> Option<String> {
    endpoint("HOLDFAST_TEST_MOTO_ENDPOINT", test)
}

fn config(endpoint: &str, key: &str) -> AwsKmsConfig {
    let mut c = AwsKmsConfig::new(key.into());
    c.region = Some("us-east-1".into());
    c.endpoint = Some(endpoint.into());
    c.credentials = Some(Credentials::new(
        "AKIDHOLDFASTTEST",
        SECRET,
        None,
        None,
        "holdfast-tests",
    ));
    c.max_attempts = 3;
    c.initial_backoff = Duration::from_millis(20);
    c.attempt_timeout = Duration::from_secs(5);
    c
}

/// A plain SDK client for what holdfast never does (create, disable, alias keys).
async fn admin(endpoint: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&loader(&config(endpoint, "alias/admin")).load().await)
}

/// A new symmetric key: its id and ARN.
async fn new_key(admin: &aws_sdk_kms::Client) -> (String, String) {
    let out = admin.create_key().send().await.unwrap();
    let m = out.key_metadata().unwrap();
    (m.key_id().to_string(), m.arn().unwrap().to_string())
}

fn unique(prefix: &str) -> String {
    let mut r = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut r);
    format!("{prefix}-{}", hex::encode(r))
}

/// Every message names the backend and says what to do; none holds the secret key.
fn clear(e: &KmsError, needles: &[&str]) {
    let m = e.to_string();
    assert!(m.contains("AWS KMS (us-east-1"), "{m}");
    assert!(!m.contains(SECRET), "the secret is in: {m}");
    for n in needles {
        assert!(m.contains(n), "`{n}` not in: {m}");
    }
}

#[test]
fn aws_kms_passes_the_kms_contract_and_binds_the_dek_id_in_the_context() {
    let Some(ep) = moto("aws_contract") else {
        return;
    };
    block(async {
        let admin = admin(&ep).await;
        let (_, arn) = new_key(&admin).await;
        let k = AwsKms::connect(&config(&ep, &arn)).await.unwrap();
        assert_eq!(k.kek_id(), arn);
        contract::round_trip(&k).await;
        contract::rejects_altered_or_moved(&k).await;
        let dek = DataKey::generate();
        let w = k.wrap(&dek).await.unwrap();
        assert_eq!((w.kek_id.as_str(), w.kek_version), (arn.as_str(), 1));
        // KMS itself binds the context: without it, or with another DEK id, it refuses
        for ctx in [None, Some(context("dek-other"))] {
            let r = admin
                .decrypt()
                .ciphertext_blob(Blob::new(w.ciphertext.clone()))
                .set_encryption_context(ctx)
                .send()
                .await;
            let code = r
                .unwrap_err()
                .into_service_error()
                .code()
                .map(str::to_string);
            assert_eq!(code.as_deref(), Some("InvalidCiphertextException"));
        }
        let out = admin
            .decrypt()
            .ciphertext_blob(Blob::new(w.ciphertext.clone()))
            .set_encryption_context(Some(context(dek.id())))
            .send()
            .await
            .unwrap();
        assert_eq!(out.plaintext().unwrap().as_ref(), dek.expose());
        // a recorded version other than 1 is not one this backend wrote
        let lying = WrappedKey {
            kek_version: 2,
            ..w.clone()
        };
        assert!(matches!(
            k.unwrap_key(dek.id(), &lying).await,
            Err(KmsError::InvalidCiphertext { .. })
        ));
    });
}

#[test]
fn an_alias_resolves_to_the_key_arn_rotation_keeps_it_and_rewrap_moves_keys_server_side() {
    let Some(ep) = moto("aws_rotate_rewrap") else {
        return;
    };
    block(async {
        let admin = admin(&ep).await;
        let (id, arn) = new_key(&admin).await;
        let alias = format!("alias/{}", unique("holdfast"));
        admin
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
        let k = AwsKms::connect(&config(&ep, &alias)).await.unwrap();
        assert_eq!(k.kek_id(), arn, "the KEK id is the ARN, not the alias");
        assert!(k.describe().contains(&alias), "{}", k.describe());
        let dek = DataKey::generate();
        let w = k.wrap(&dek).await.unwrap();
        assert_eq!(w.kek_id, arn);

        // on-demand rotation: same key id, version 1, old wraps still open
        assert_eq!(k.rotate_now().await.unwrap(), 1);
        let rotations = admin.list_key_rotations().key_id(&id).send().await.unwrap();
        assert_eq!(rotations.rotations().len(), 1);
        let w_after = k.wrap(&DataKey::generate()).await.unwrap();
        assert_eq!(
            (w_after.kek_id.as_str(), w_after.kek_version),
            (arn.as_str(), 1)
        );
        assert_eq!(
            k.unwrap_key(dek.id(), &w).await.unwrap().expose(),
            dek.expose()
        );

        // ReEncrypt to another key id: the new key opens it, the old backend no longer
        // claims it, and a wrong DEK id is refused by KMS
        let (_, arn2) = new_key(&admin).await;
        let k2 = AwsKms::connect(&config(&ep, &arn2)).await.unwrap();
        let moved = k2.reencrypt(dek.id(), &w).await.unwrap();
        assert_eq!(
            (moved.kek_id.as_str(), moved.kek_version),
            (arn2.as_str(), 1)
        );
        assert_ne!(moved.ciphertext, w.ciphertext);
        assert_eq!(
            k2.unwrap_key(dek.id(), &moved).await.unwrap().expose(),
            dek.expose()
        );
        assert!(matches!(
            k.unwrap_key(dek.id(), &moved).await,
            Err(KmsError::KeyNotFound { .. })
        ));
        assert!(matches!(
            k2.reencrypt("dek-other", &w).await,
            Err(KmsError::InvalidCiphertext { .. })
        ));
        // a key from another backend is not AWS's to move
        let foreign = WrappedKey {
            kek_id: "transit:transit/k".into(),
            ..w.clone()
        };
        assert!(matches!(
            k2.reencrypt(dek.id(), &foreign).await,
            Err(KmsError::KeyNotFound { .. })
        ));
    });
}

#[test]
fn index_keys_come_from_the_wrapped_secret_and_heads_are_signed_by_the_keyring() {
    let Some(ep) = moto("aws_index_and_sign") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    block(async {
        let admin = admin(&ep).await;
        let (_, arn) = new_key(&admin).await;
        let k = AwsKms::connect(&config(&ep, &arn)).await.unwrap();
        let err = k.index_key("t1").await.unwrap_err().to_string();
        assert!(err.contains("no wrapped index secret"), "{err}");
        let secret = DataKey::from_parts(super::super::transit::INDEX_SECRET_ID.into(), [9u8; 32]);
        let s = IndexSecret {
            created_at: "2026-01-01T00:00:00Z".into(),
            secret_id: secret.id().into(),
            wrapped: k.wrap(&secret).await.unwrap(),
        };
        let k = k.with_index_secret(s);
        let (a, b) = (
            k.index_key("t1").await.unwrap(),
            k.index_key("t2").await.unwrap(),
        );
        assert_ne!(*a, *b);
        assert_eq!(*a, *super::super::derive_index_key(&[9u8; 32], "t1"));

        // no signer: a clear refusal, never a signature
        let e = k.sign(b"head").await.unwrap_err().to_string();
        assert!(e.contains("local keyring's Ed25519 key"), "{e}");
        assert_eq!(k.signing_key().await.unwrap(), None);
        let ring = Arc::new(
            super::super::LocalKeyring::create(&dir.path().join("k.json"), "2026-01-01T00:00:00Z")
                .unwrap(),
        );
        let k = k.with_head_signer(ring.clone());
        let signed = k.sign(b"head v1").await.unwrap();
        assert!(signed.public_key.verify(b"head v1", &signed.signature));
        assert_eq!(k.signing_key().await.unwrap(), Some(signed.public_key));
        assert_eq!(ring.signing_key().await.unwrap(), Some(signed.public_key));
    });
}

#[test]
fn missing_disabled_deleted_and_asymmetric_keys_are_clear_errors() {
    let Some(ep) = moto("aws_key_errors") else {
        return;
    };
    block(async {
        let admin = admin(&ep).await;
        for missing in [
            "alias/holdfast-no-such-alias".to_string(),
            "0b0a1fd8-0000-4000-8000-000000000000".to_string(),
        ] {
            let e = AwsKms::connect(&config(&ep, &missing)).await.unwrap_err();
            assert!(matches!(e, KmsError::NoSuchKey { .. }), "{e}");
            clear(&e, &[&missing, "does not exist", "fix `key` in [kms]"]);
        }

        // moto 5.2.5 goes on encrypting and decrypting under a disabled key (real KMS
        // answers DisabledException); opening reads the state with DescribeKey
        let (id, arn) = new_key(&admin).await;
        admin.disable_key().key_id(&id).send().await.unwrap();
        let e = AwsKms::connect(&config(&ep, &arn)).await.unwrap_err();
        assert!(
            matches!(&e, KmsError::KeyDisabled { state, .. } if state == "Disabled"),
            "{e}"
        );
        clear(&e, &["is Disabled", "aws kms enable-key"]);
        admin.enable_key().key_id(&id).send().await.unwrap();
        AwsKms::connect(&config(&ep, &arn)).await.unwrap();
        admin
            .schedule_key_deletion()
            .key_id(&id)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        let e = AwsKms::connect(&config(&ep, &arn)).await.unwrap_err();
        clear(&e, &["is PendingDeletion", "cancel-key-deletion"]);

        let signing = admin
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .send()
            .await
            .unwrap();
        let arn = signing.key_metadata().unwrap().arn().unwrap().to_string();
        let e = AwsKms::connect(&config(&ep, &arn)).await.unwrap_err();
        clear(&e, &["must be a symmetric encryption key"]);
    });
}

#[test]
fn bad_credentials_and_an_unreachable_endpoint_are_clear_errors() {
    let Some(ep) = moto("aws_credentials") else {
        return;
    };
    let Some(auth) = endpoint("HOLDFAST_TEST_MOTO_AUTH_ENDPOINT", "aws_credentials") else {
        return;
    };
    block(async {
        let (_, arn) = new_key(&admin(&ep).await).await;
        // the second moto checks signatures, and knows no access key
        let e = AwsKms::connect(&config(&auth, &arn)).await.unwrap_err();
        assert!(matches!(e, KmsError::BadCredentials { .. }), "{e}");
        clear(&e, &["wrong, expired or revoked", "AWS_ACCESS_KEY_ID"]);

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = AwsKms::connect(&config(&format!("http://127.0.0.1:{port}"), &arn))
            .await
            .unwrap_err();
        assert!(
            matches!(e, KmsError::Unreachable { attempts: 3, .. }),
            "{e}"
        );
        clear(&e, &["unreachable", "AWS_ENDPOINT_URL"]);

        // a server that hangs up on every connection: tried exactly max_attempts times
        let (ep, hits) = hanging_up_server();
        let e = AwsKms::connect(&config(&ep, &arn)).await.unwrap_err();
        assert!(matches!(e, KmsError::Unreachable { .. }), "{e}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    });
}

/// A server that closes every connection at once: its address and how many it took.
fn hanging_up_server() -> (String, Arc<std::sync::atomic::AtomicU32>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    (format!("http://{addr}"), hits)
}

/// A stand-in for KMS that answers every request with `ThrottlingException` (moto never
/// throttles): its address and how many requests it saw.
fn throttling_server() -> (String, Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
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
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                    let body_len = head_end.map(|end| {
                        String::from_utf8_lossy(&buf[..end])
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0)
                    });
                    match (head_end, body_len) {
                        (Some(end), Some(len)) if buf.len() >= end + 4 + len => {
                            buf.drain(..end + 4 + len);
                            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let body =
                                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                            let answer = format!(
                                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if conn.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                        _ => match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        },
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn throttling_is_retried_a_bounded_number_of_times_then_reported() {
    let (ep, hits) = throttling_server();
    let key = "arn:aws:kms:us-east-1:123456789012:key/0b0a1fd8-0000-4000-8000-000000000000";
    let e = block(AwsKms::connect(&config(&ep, key))).unwrap_err();
    assert!(matches!(e, KmsError::Throttled { attempts: 3, .. }), "{e}");
    clear(&e, &["throttled", "request quota"]);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "exactly max_attempts requests"
    );
}

#[test]
fn key_names_regions_and_the_context() {
    let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    for ok in [
        arn,
        "arn:aws:kms:eu-west-1:111122223333:alias/holdfast",
        "arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "alias/holdfast-platform",
    ] {
        assert_eq!(check_key_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "holdfast",
        "alias/",
        "alias/has space",
        "arn:aws:s3:::bucket",
        "arn:aws:kms:nowhere:1:key/x",
    ] {
        assert!(check_key_name(bad).is_err(), "{bad}");
    }
    assert_eq!(arn_region(arn), Some("eu-west-1"));
    assert_eq!(arn_region("alias/x"), None);
    assert!(is_key_arn(arn));
    assert!(!is_key_arn(
        "arn:aws:kms:eu-west-1:111122223333:alias/holdfast"
    ));
    assert!(!is_key_arn("transit:transit/k") && !is_key_arn("kek-0011"));
    assert!(region_like("us-gov-east-1") && !region_like("eu_west_1") && !region_like("eu-west"));
    let c = context("dek-1");
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c["holdfast"].as_str(), c["dek_id"].as_str()),
        ("dek.v1", "dek-1")
    );
    // the configured region wins; else the ARN's
    assert_eq!(
        AwsKmsConfig::new(arn.into()).region().as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(AwsKmsConfig::new("alias/x".into()).region(), None);
    let secret = format!("{:?}", config("http://x", arn));
    assert!(!secret.contains(SECRET), "{secret}");
}
