//! The Transit backend against a real OpenBao (`bao server -dev`, started by tests/run.sh,
//! which exports `HOLDFAST_TEST_BAO_ADDR`, `HOLDFAST_TEST_BAO_TOKEN` (a root token) and
//! `HOLDFAST_TEST_BAO_AUDIT_LOG`). Under `CI=true` a missing server fails the test; elsewhere
//! the test says why it skipped. Each test uses keys of its own, so they run in parallel.

// tests read the test server's address from the environment and its audit log from disk
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::crypto::kms::contract;
use serde_json::json;

struct Bao {
    addr: String,
    token: String,
    http: reqwest::Client,
}

fn bao(test: &str) -> Option<Bao> {
    let addr = std::env::var("HOLDFAST_TEST_BAO_ADDR").ok();
    let token = std::env::var("HOLDFAST_TEST_BAO_TOKEN").ok();
    match (addr, token) {
        (Some(addr), Some(token)) => Some(Bao {
            addr,
            token,
            http: reqwest::Client::new(),
        }),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: CI=true and no OpenBao (HOLDFAST_TEST_BAO_ADDR unset); run tests/run.sh"
            )
        }
        _ => {
            eprintln!(
                "{test}: skipped: no OpenBao (HOLDFAST_TEST_BAO_ADDR unset; tests/run.sh starts one)"
            );
            None
        }
    }
}

use crate::test_support::block;

/// A key name no other test uses.
fn unique(prefix: &str) -> String {
    let mut r = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut r);
    format!("{prefix}-{}", hex::encode(r))
}

impl Bao {
    /// An administrative call with the root token; the answer's JSON (`Null` when empty).
    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    async fn derived_key(&self, prefix: &str) -> String {
        let key = unique(prefix);
        let path = format!("transit/keys/{key}");
        self.admin(reqwest::Method::POST, &path, json!({"derived": true}))
            .await;
        key
    }

    fn config(&self, key: &str, token: &str) -> TransitConfig {
        let mut c = TransitConfig::new(
            self.addr.clone(),
            "transit".into(),
            key.into(),
            Token::new(token.into()),
        );
        c.retries = 2;
        c.backoff = Duration::from_millis(20);
        c
    }

    fn transit(&self, key: &str) -> Transit {
        Transit::new(&self.config(key, &self.token)).unwrap()
    }
}

fn ciphertext(w: &WrappedKey) -> &str {
    std::str::from_utf8(&w.ciphertext).unwrap()
}

#[test]
fn transit_passes_the_kms_contract_and_rewraps_server_side() {
    let Some(b) = bao("transit_contract") else {
        return;
    };
    block(async {
        let key = b.derived_key("contract").await;
        let t = b.transit(&key);
        t.check_key().await.unwrap();
        contract::round_trip(&t).await;
        contract::rejects_altered_or_moved(&t).await;
        contract::rotates_and_rewraps(
            &b.transit(&b.derived_key("rotate").await),
            chrono::Utc::now(),
        )
        .await;
        contract::retires_old_versions(&b.transit(&b.derived_key("retire").await)).await;
        let dek = DataKey::generate();
        let w = t.wrap(&dek).await.unwrap();
        assert!(ciphertext(&w).starts_with("vault:v1:"), "{w:?}");
        assert_eq!((w.kek_id.as_str(), w.kek_version), (t.kek_id(), 1));
        assert_eq!(w.kek_id, format!("transit:transit/{key}"));
        // a recorded version that disagrees with the ciphertext's prefix is refused
        let lying = WrappedKey {
            kek_version: 2,
            ..w.clone()
        };
        assert!(matches!(
            t.unwrap_key(dek.id(), &lying).await,
            Err(KmsError::InvalidCiphertext { .. })
        ));
        // rotation: new wraps are v2, v1 still opens; rewrap with the context moves a v1
        // wrapped DEK to v2 without the DEK leaving OpenBao
        let rotate = format!("transit/keys/{key}/rotate");
        b.admin(reqwest::Method::POST, &rotate, json!({})).await;
        let w2 = t.wrap(&DataKey::generate()).await.unwrap();
        assert_eq!(w2.kek_version, 2);
        let rewrap = b
            .admin(
                reqwest::Method::POST,
                &format!("transit/rewrap/{key}"),
                json!({"ciphertext": ciphertext(&w), "context": b64_context(dek.id())}),
            )
            .await;
        let moved = rewrap["data"]["ciphertext"].as_str().unwrap().to_string();
        let rewrapped = WrappedKey {
            kek_id: w.kek_id.clone(),
            kek_version: split_version(&moved).unwrap().0,
            ciphertext: moved.into_bytes(),
        };
        assert_eq!(rewrapped.kek_version, 2);
        for each in [&w, &rewrapped] {
            let back = t.unwrap_key(dek.id(), each).await.unwrap();
            assert_eq!(back.expose(), dek.expose());
        }
        // another Transit key of the same server does not open it
        let other = b.transit(&b.derived_key("other").await);
        assert!(other.unwrap_key(dek.id(), &w).await.is_err());
    });
}

#[test]
fn index_keys_come_from_the_wrapped_secret_and_heads_are_signed_in_transit() {
    let Some(b) = bao("transit_index_and_sign") else {
        return;
    };
    block(async {
        let key = b.derived_key("index").await;
        let t = b.transit(&key);
        let err = t.index_key("t1").await.unwrap_err().to_string();
        assert!(err.contains("no wrapped index secret"), "{err}");
        let secret = DataKey::from_parts(INDEX_SECRET_ID.into(), [7u8; 32]);
        let s = IndexSecret {
            created_at: "2026-01-01T00:00:00Z".into(),
            secret_id: INDEX_SECRET_ID.into(),
            wrapped: t.wrap(&secret).await.unwrap(),
        };
        let t = b.transit(&key).with_index_secret(s.clone());
        let (a1, a2) = (
            t.index_key("t1").await.unwrap(),
            t.index_key("t2").await.unwrap(),
        );
        assert_ne!(*a1, *a2, "tenants' keys differ");
        assert_eq!(*a1, *super::super::derive_index_key(&[7u8; 32], "t1"));
        let again = b.transit(&key).with_index_secret(s);
        assert_eq!(*again.index_key("t1").await.unwrap(), *a1, "stable");

        assert_eq!(t.signing_key().await.unwrap(), None, "no signing key yet");
        let signed = t.sign(b"head v1").await.unwrap();
        assert!(signed.public_key.verify(b"head v1", &signed.signature));
        assert!(!signed.public_key.verify(b"head v2", &signed.signature));
        assert_eq!(t.signing_key().await.unwrap(), Some(signed.public_key));
        let info = b
            .admin(
                reqwest::Method::GET,
                &format!("transit/keys/{key}-head-signing"),
                Value::Null,
            )
            .await;
        assert_eq!(info["data"]["type"], "ed25519");
        assert_eq!(
            info["data"]["exportable"], false,
            "the signing key never leaves OpenBao"
        );
    });
}

/// Every message names the backend and the key and says what to do; none holds the token.
fn clear(e: &KmsError, token: &str, needles: &[&str]) {
    let m = e.to_string();
    assert!(m.contains("OpenBao/Vault Transit at"), "{m}");
    assert!(!m.contains(token), "the token is in: {m}");
    for n in needles {
        assert!(m.contains(n), "`{n}` not in: {m}");
    }
}

#[test]
fn wrong_token_denied_policy_and_missing_or_deleted_keys_are_clear_errors() {
    let Some(b) = bao("transit_errors") else {
        return;
    };
    block(async {
        let key = b.derived_key("errors").await;
        let dek = DataKey::generate();
        let w = b.transit(&key).wrap(&dek).await.unwrap();

        let bad = "hvs.not-a-real-token-0123456789";
        let t = Transit::new(&b.config(&key, bad)).unwrap();
        let e = t.unwrap_key(dek.id(), &w).await.unwrap_err();
        assert!(matches!(e, KmsError::BadToken { .. }), "{e}");
        clear(&e, bad, &["BAO_TOKEN", "wrong, expired or revoked"]);

        // a valid token whose policy (`default`) has no Transit rights
        let made = b
            .admin(
                reqwest::Method::POST,
                "auth/token/create",
                json!({"policies": ["default"], "ttl": "10m"}),
            )
            .await;
        let weak = made["auth"]["client_token"].as_str().unwrap().to_string();
        let t = Transit::new(&b.config(&key, &weak)).unwrap();
        let e = t.wrap(&dek).await.unwrap_err();
        assert!(matches!(e, KmsError::PermissionDenied { .. }), "{e}");
        clear(
            &e,
            &weak,
            &[&key, &format!("transit/encrypt/{key}"), "policy"],
        );

        // a key that does not exist: init's check and an unwrap say so
        let missing = unique("missing");
        let t = b.transit(&missing);
        let e = t.check_key().await.unwrap_err();
        assert!(matches!(e, KmsError::NoSuchKey { .. }), "{e}");
        clear(&e, &b.token, &[&missing, "derived=true"]);
        let moved = WrappedKey {
            kek_id: t.kek_id().into(),
            ..w.clone()
        };
        let e = t.unwrap_key(dek.id(), &moved).await.unwrap_err();
        assert!(matches!(e, KmsError::NoSuchKey { .. }), "{e}");

        // a deleted key (deletion_allowed): what it wrapped no longer opens
        let t = b.transit(&key);
        let cfg = format!("transit/keys/{key}/config");
        b.admin(
            reqwest::Method::POST,
            &cfg,
            json!({"deletion_allowed": true}),
        )
        .await;
        b.admin(
            reqwest::Method::DELETE,
            &format!("transit/keys/{key}"),
            Value::Null,
        )
        .await;
        let e = t.unwrap_key(dek.id(), &w).await.unwrap_err();
        assert!(matches!(e, KmsError::NoSuchKey { .. }), "{e}");
        clear(&e, &b.token, &[&key, "does not exist or was deleted"]);
    });
}

#[test]
fn throttling_and_an_unreachable_server_are_retried_then_reported() {
    let Some(b) = bao("transit_retries") else {
        return;
    };
    block(async {
        let key = b.derived_key("throttled").await;
        let quota = unique("rl");
        let q = format!("sys/quotas/rate-limit/{quota}");
        let path = format!("transit/encrypt/{key}");
        b.admin(
            reqwest::Method::POST,
            &q,
            json!({"path": path, "rate": 1, "interval": "60s"}),
        )
        .await;
        let t = b.transit(&key);
        let dek = DataKey::generate();
        let first = t.wrap(&dek).await;
        let second = t.wrap(&dek).await;
        b.admin(reqwest::Method::DELETE, &q, Value::Null).await;
        assert!(first.is_ok(), "{first:?}");
        let e = second.unwrap_err();
        assert!(matches!(e, KmsError::Throttled { attempts: 3, .. }), "{e}");
        clear(&e, &b.token, &[&key, "rate-limit quota"]);

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cfg = b.config(&key, &b.token);
        cfg.address = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        let e = Transit::new(&cfg).unwrap().wrap(&dek).await.unwrap_err();
        assert!(
            matches!(e, KmsError::Unreachable { attempts: 3, .. }),
            "{e}"
        );
        clear(&e, &b.token, &["BAO_ADDR", "unreachable"]);
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "it backed off between tries"
        );
    });
}

#[test]
fn an_unwrap_appears_in_openbaos_audit_log() {
    let Some(b) = bao("transit_audit") else {
        return;
    };
    let Ok(log) = std::env::var("HOLDFAST_TEST_BAO_AUDIT_LOG") else {
        panic!(
            "HOLDFAST_TEST_BAO_AUDIT_LOG unset: tests/run.sh starts OpenBao with a file audit device"
        );
    };
    block(async {
        let key = b.derived_key("audited").await;
        let t = b.transit(&key);
        let dek = DataKey::generate();
        let w = t.wrap(&dek).await.unwrap();
        t.unwrap_key(dek.id(), &w).await.unwrap();
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let path = "transit/decrypt/audited-";
    let hits: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["request"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(path))
        })
        .collect();
    assert!(
        hits.iter().any(|v| v["type"] == "response"),
        "no decrypt in {log}"
    );
    // values are HMAC'd in the log: no plaintext DEK there
    assert!(hits.iter().all(|v| {
        v["response"]["data"]["plaintext"]
            .as_str()
            .is_none_or(|p| p.starts_with("hmac-sha256:"))
    }));
}

#[test]
fn plain_http_goes_only_to_this_machine_and_the_token_is_never_printed() {
    let cfg = |addr: &str| {
        TransitConfig::new(
            addr.into(),
            "transit".into(),
            "k".into(),
            Token::new("s3cret-token".into()),
        )
    };
    let e = Transit::new(&cfg("http://bao.example.com:8200"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("plain http") && !e.contains("s3cret"), "{e}");
    assert!(Transit::new(&cfg("http://127.0.0.1:8200")).is_ok());
    assert!(Transit::new(&cfg("https://bao.example.com:8200")).is_ok());
    let t = Transit::new(&cfg("http://localhost:8200")).unwrap();
    assert!(!format!("{t:?} {:?}", cfg("x")).contains("s3cret"));
    assert_eq!(
        parse_kek_id("transit:kms/transit/key-1"),
        Some(("kms/transit", "key-1"))
    );
    assert_eq!(parse_kek_id("kek-0011"), None);
    assert_eq!(split_version("vault:v12:abc"), Some((12, "abc")));
    assert_eq!(split_version("vault:v012:abc"), None);
    assert_eq!(split_version("vault:v:abc"), None);
}

#[test]
fn many_keys_are_rewrapped_in_batches_under_openbaos_json_limit() {
    let Some(b) = bao("transit_rewrap_batches") else {
        return;
    };
    let Ok(log) = std::env::var("HOLDFAST_TEST_BAO_AUDIT_LOG") else {
        panic!(
            "HOLDFAST_TEST_BAO_AUDIT_LOG unset: tests/run.sh starts OpenBao with an audit device"
        );
    };
    let key = block(b.derived_key("batches"));
    block(async {
        let t = b.transit(&key);
        let deks: Vec<DataKey> = (0..450).map(|_| DataKey::generate()).collect();
        let mut wrapped = Vec::new();
        for d in &deks {
            wrapped.push(t.wrap(d).await.unwrap());
        }
        t.rotate(chrono::Utc::now()).await.unwrap();
        let pairs: Vec<(&str, &WrappedKey)> = deks.iter().map(|d| d.id()).zip(&wrapped).collect();
        let moved = t.rewrap(&pairs).await.unwrap();
        assert!(moved.iter().all(|w| w.kek_version == 2));
        let last = &deks[449];
        assert_eq!(
            t.unwrap_key(last.id(), &moved[449]).await.unwrap().expose(),
            last.expose()
        );
    });
    let path = format!("transit/rewrap/{key}");
    let requests = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "request" && v["request"]["path"] == path.as_str())
        .count();
    // 200 + 200 + 50: a batch over OpenBao's limit of 1,000 JSON strings is refused whole
    assert_eq!(requests, 3, "rewrap requests for 450 keys");
}
