//! A store whose KEK is an AWS KMS key (`[kms] backend = "aws-kms"`): `init`, `ingest`,
//! `batch`, `verify --deep` and `query --decrypt` through the real binary against the moto
//! server tests/run.sh starts (`HOLDFAST_TEST_MOTO_ENDPOINT`, and its request recording,
//! `HOLDFAST_TEST_MOTO_REQUEST_LOG`). The binary gets the endpoint and credentials the way a
//! user's does: `AWS_ENDPOINT_URL` and the AWS credential chain's environment variables. Under
//! `CI=true` a missing server fails; elsewhere the test says why it skipped.

use crate::common::{self, OS_USER_VAR, RemoteStore};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::Path;

/// The fake secret access key: never printed.
const SECRET: &str = "holdfast-it-secret-9876543210";

pub(crate) fn moto(test: &str) -> Option<String> {
    match std::env::var("HOLDFAST_TEST_MOTO_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: CI=true and no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset); run tests/run.sh"
            )
        }
        Err(_) => {
            eprintln!(
                "{test}: skipped: no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset; tests/run.sh starts one)"
            );
            None
        }
    }
}

/// One KMS call to moto (which does not check signatures): the answer's JSON.
pub(crate) fn kms_call(endpoint: &str, action: &str, body: serde_json::Value) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{endpoint}/"))
            .header("X-Amz-Target", format!("TrentService.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    })
}

/// A store whose KEK is in moto's KMS, reached as a user's would be: `AWS_ENDPOINT_URL` and
/// the credential chain's variables, nothing from the machine's own AWS setup.
fn aws_store(pipeline: &str, endpoint: &str) -> RemoteStore {
    let r = RemoteStore::new(pipeline, SECRET);
    let (keyring, config, creds) = (
        r.dir.path().join("keyring.json"),
        r.dir.path().join("no-aws-config"),
        r.dir.path().join("no-aws-credentials"),
    );
    // the keyring signs the heads only; init creates it
    r.var("HOLDFAST_KEYRING", keyring)
        .var("AWS_ENDPOINT_URL", endpoint)
        .var("AWS_ACCESS_KEY_ID", "AKIDHOLDFASTIT")
        .var("AWS_SECRET_ACCESS_KEY", SECRET)
        .var("AWS_REGION", "us-east-1")
        .var("AWS_CONFIG_FILE", config)
        .var("AWS_SHARED_CREDENTIALS_FILE", creds)
        .var("AWS_EC2_METADATA_DISABLED", "true")
        .unset("AWS_SESSION_TOKEN")
        .unset("AWS_PROFILE")
        .unset("AWS_ENDPOINT_URL_KMS")
}

/// Every `wrapped_dek` object (and its `dek_id`) in `v`.
fn wrapped_deks(v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(w), Some(id)) = (m.get("wrapped_dek"), m.get("dek_id")) {
                out.push((id.as_str().unwrap_or_default().to_string(), w.clone()));
            }
            m.values().for_each(|v| wrapped_deks(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| wrapped_deks(v, out)),
        _ => {}
    }
}

/// The KMS requests moto recorded: (action, JSON body).
fn recorded(log: &str) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let target = v["headers"]
                .as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))?
                .1
                .as_str()?
                .strip_prefix("TrentService.")?
                .to_string();
            let body = v["body"].as_str()?;
            let body = if v["body_encoded"] == true {
                String::from_utf8(B64.decode(body).ok()?).ok()?
            } else {
                body.to_string()
            };
            Some((target, serde_json::from_str(&body).ok()?))
        })
        .collect()
}

#[test]
fn an_aws_kms_store_batches_verifies_and_decrypts_with_its_kek_in_kms() {
    let Some(endpoint) = moto("aws_kms_store") else {
        return;
    };
    let key = kms_call(&endpoint, "CreateKey", serde_json::json!({}));
    let (key_id, arn) = (
        key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string(),
        key["KeyMetadata"]["Arn"].as_str().unwrap().to_string(),
    );
    let alias = format!("alias/holdfast-it-{}", &key_id[..8]);
    kms_call(
        &endpoint,
        "CreateAlias",
        serde_json::json!({"AliasName": alias, "TargetKeyId": key_id}),
    );
    let pipeline =
        format!("[kms]\nbackend = \"aws-kms\"\nkey = \"{alias}\"\nregion = \"us-east-1\"\n");
    let s = aws_store(&pipeline, &endpoint);
    let p = s.pipeline.to_str().unwrap().to_string();
    let init = s.ok(&["init", "--pipeline", &p]);
    assert!(init.contains(&arn), "the store is bound to the ARN: {init}");
    assert!(init.contains("new keyring"), "{init}");
    let g = common::generate(13, 60, 0, 2);
    let input = s.dir.path().join("e.ndjson");
    std::fs::write(&input, &g.ndjson).unwrap();
    // without a pipeline: the marker's ARN, the endpoint and credentials from the environment
    s.ok(&["ingest", input.to_str().unwrap()]);
    let report: serde_json::Value =
        serde_json::from_str(&s.ok(&["batch", "--pipeline", &p, "--format", "json"])).unwrap();
    assert_eq!(report["stored"], 60, "{report}");

    let mut wrapped = Vec::new();
    for m in common::json_files(&s.store.join("manifests")) {
        wrapped_deks(
            &serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap(),
            &mut wrapped,
        );
    }
    assert!(!wrapped.is_empty());
    for (_, w) in &wrapped {
        assert_eq!(w["kek_id"], arn.as_str());
        assert_eq!(w["kek_version"], 1);
    }

    // the records decrypt (DEKs unwrapped by KMS), and the blind index finds a customer
    let rows = s.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KMS-2",
        "--format",
        "ndjson",
        "SELECT json_get(record, 'interaction', 'notes') AS notes FROM decrypted ORDER BY event_id",
    ]);
    let mut got: Vec<String> = rows
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["notes"].as_str().unwrap().to_string()
        })
        .collect();
    let mut want = g.notes.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let addr = &g.customer_addresses[4];
    let found = s.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KMS-2",
        "--format",
        "csv",
        &format!("SELECT count(*) AS n FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, '{addr}'))"),
    ]);
    assert_ne!(found.lines().nth(1), Some("0"), "{found}");
    let deep = s.ok(&["verify", "--deep", "--case", "KMS-2"]);
    assert!(deep.contains("record(s) decrypted"), "{deep}");

    // the key lifecycle as AWS defines it: one version, rotated in place (nothing to rewrap),
    // never retired on its own
    let st: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "status", "--format", "json"])).unwrap();
    assert_eq!(
        (st["kek_id"].as_str(), st["primary"].as_u64()),
        (Some(arn.as_str()), Some(1)),
        "{st}"
    );
    assert_eq!(
        st["versions"][0]["total"],
        wrapped.len() + 1,
        "DEKs and the index secret: {st}"
    );
    s.ok(&["keys", "rotate"]);
    let r: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "rewrap", "--format", "json"])).unwrap();
    assert_eq!(
        (r["data_files"].as_u64(), r["current"].as_u64()),
        (Some(0), Some(wrapped.len() as u64 + 1)),
        "{r}"
    );
    let out = s.out(&["keys", "retire", "--version", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // moto saw the wraps and unwraps, under this key and each DEK's context
    if let Ok(log) = std::env::var("HOLDFAST_TEST_MOTO_REQUEST_LOG") {
        let calls = recorded(&log);
        let mine = |action: &str| {
            calls
                .iter()
                .filter(|(a, b)| a == action && b["KeyId"] == arn.as_str())
                .collect::<Vec<_>>()
        };
        let (encrypts, decrypts) = (mine("Encrypt"), mine("Decrypt"));
        for (dek_id, _) in &wrapped {
            assert!(
                encrypts.iter().any(|(_, b)| b["EncryptionContext"]
                    == serde_json::json!({"holdfast": "dek.v1", "dek_id": dek_id})),
                "no Encrypt for {dek_id} in {log}"
            );
        }
        assert!(
            decrypts.len() >= wrapped.len(),
            "{} Decrypt call(s) for {} DEKs",
            decrypts.len(),
            wrapped.len()
        );
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("HOLDFAST_TEST_MOTO_REQUEST_LOG unset: tests/run.sh records moto's requests");
    }

    // a wrapped key altered in a manifest: verify fails, naming it, and nothing decrypts
    let (dek_id, _) = &wrapped[0];
    let file = common::json_files(&s.store.join("manifests"))
        .into_iter()
        .find(|m| {
            std::fs::read_to_string(m)
                .unwrap()
                .contains(dek_id.as_str())
        })
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    alter_wrapped(&mut v, dek_id);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = s.out(&["verify", "--deep", "--case", "KMS-2", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("wrapped key {dek_id} does not belong to KEK")),
        "{text}"
    );
}

/// Flips the last byte of the ciphertext of `dek_id`'s wrapped key in manifest `v`.
fn alter_wrapped(v: &mut serde_json::Value, dek_id: &str) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("dek_id").and_then(|d| d.as_str()) == Some(dek_id)
                && let Some(w) = m.get_mut("wrapped_dek")
            {
                let mut ct = B64.decode(w["ciphertext"].as_str().unwrap()).unwrap();
                let n = ct.len();
                ct[n - 1] ^= 0x01;
                w["ciphertext"] = B64.encode(ct).into();
                return;
            }
            m.values_mut().for_each(|v| alter_wrapped(v, dek_id));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| alter_wrapped(v, dek_id)),
        _ => {}
    }
}

/// Every wrapped DEK's KEK id in the store's manifests, with the DEK id.
fn manifest_keks(store: &Path) -> Vec<String> {
    let mut wrapped = Vec::new();
    for m in common::json_files(&store.join("manifests")) {
        let v = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
        wrapped_deks(&v, &mut wrapped);
    }
    wrapped
        .into_iter()
        .map(|(_, w)| w["kek_id"].as_str().unwrap().to_string())
        .collect()
}

/// A store moves to a new AWS KMS key: asked by one administrator, approved by another; new
/// DEKs go under the new key, old ones still unwrap under the old, `keys rewrap` moves them
/// all with ReEncrypt, and then the old key is not needed at all (disabled: everything reads).
#[test]
fn a_store_moves_to_a_new_aws_kms_key_by_two_administrators_and_reencrypt() {
    let Some(endpoint) = moto("aws_kms_migrate") else {
        return;
    };
    let create = || {
        let k = kms_call(&endpoint, "CreateKey", serde_json::json!({}));
        let meta = &k["KeyMetadata"];
        let text = |f: &str| meta[f].as_str().unwrap().to_string();
        (text("KeyId"), text("Arn"))
    };
    let ((old_id, old), (_, new)) = (create(), create());
    let section = |arn: &str| format!("[kms]\nbackend = \"aws-kms\"\nkey = \"{arn}\"\n");
    let s = aws_store(&section(&old), &endpoint);
    let p_old = s.pipeline.to_str().unwrap().to_string();
    let p_new = s.dir.path().join("new.toml");
    std::fs::write(&p_new, section(&new)).unwrap();
    let p_new = p_new.to_str().unwrap().to_string();
    s.ok(&["init", "--pipeline", &p_old]);
    let ingest_batch = |seed: u64, pipeline: &str| {
        let g = common::generate(seed, 60, 0, 2);
        let input = s.dir.path().join(format!("e{seed}.ndjson"));
        std::fs::write(&input, &g.ndjson).unwrap();
        s.ok(&["ingest", input.to_str().unwrap()]);
        let r = s.ok(&["batch", "--pipeline", pipeline, "--format", "json"]);
        let r: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(r["stored"], 60, "{r}");
    };
    ingest_batch(21, &p_old);
    s.ok(&["access", "grant", "--user", "kim", "--role", "admin"]);

    let asked = s.ok(&["keys", "migrate", "--pipeline", &p_new]);
    let id = asked
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(id.starts_with("km-"), "{asked}");
    let mut same = s.cmd(&["keys", "approve", "--request", &id, "--pipeline", &p_new]);
    assert_eq!(
        same.output().unwrap().status.code(),
        Some(1),
        "the asker cannot approve"
    );
    let approve = s
        .cmd(&["keys", "approve", "--request", &id, "--pipeline", &p_new])
        .env(OS_USER_VAR, "kim")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&approve.stdout);
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(said.contains(&new), "{said}");

    // the old pipeline no longer opens the store; new DEKs go under the new key
    let out = s.cmd(&["batch", "--pipeline", &p_old]).output().unwrap();
    assert!(
        !out.status.success(),
        "the old key's pipeline still batches"
    );
    ingest_batch(22, &p_new);
    let keks = manifest_keks(&s.store);
    assert!(keks.contains(&old) && keks.contains(&new), "{keks:?}");
    let count = [
        "query",
        "--decrypt",
        "--case",
        "KMS-M",
        "--format",
        "csv",
        "SELECT count(record) FROM decrypted",
    ];
    assert_eq!(s.ok(&count).lines().nth(1), Some("120"));
    let status = s.ok(&["keys", "status"]);
    assert!(status.contains("earlier platform key"), "{status}");

    s.ok(&["keys", "rewrap", "--pipeline", &p_new]);
    let keks = manifest_keks(&s.store);
    let latest_old = keks.iter().filter(|k| **k == old).count();
    assert!(
        latest_old > 0,
        "earlier manifest versions keep their history"
    );
    let status = s.ok(&["keys", "status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["warnings"].as_array().unwrap().is_empty(),
        "{status}"
    );
    // the old key is not needed any more
    kms_call(
        &endpoint,
        "DisableKey",
        serde_json::json!({"KeyId": old_id}),
    );
    assert_eq!(s.ok(&count).lines().nth(1), Some("120"));
    s.ok(&["verify"]);
}
