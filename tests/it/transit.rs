//! A store whose KEK is an OpenBao Transit key (`[kms] backend = "transit"`): `init`,
//! `ingest`, `batch` and `query --decrypt` through the real binary against the dev OpenBao
//! that tests/run.sh starts (`HOLDFAST_TEST_BAO_ADDR`, `HOLDFAST_TEST_BAO_TOKEN`). Under
//! `CI=true` a missing server fails; elsewhere the test says why it skipped.

use crate::common::{self, OS_USER_VAR, RemoteStore};
use base64::Engine as _;
use std::path::Path;

pub(crate) struct Bao {
    pub(crate) addr: String,
    pub(crate) token: String,
}

pub(crate) fn bao(test: &str) -> Option<Bao> {
    match (
        std::env::var("HOLDFAST_TEST_BAO_ADDR"),
        std::env::var("HOLDFAST_TEST_BAO_TOKEN"),
    ) {
        (Ok(addr), Ok(token)) => Some(Bao { addr, token }),
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

impl Bao {
    /// Creates a derived Transit key of a name no other test uses.
    pub(crate) fn derived_key(&self, prefix: &str) -> String {
        self.key_with(prefix, r#"{"derived":true}"#)
    }

    /// A derived key that can be backed up, deleted and restored (a tenant revoking its key,
    /// then bringing it back).
    pub(crate) fn revocable_key(&self, prefix: &str) -> String {
        let body = r#"{"derived":true,"exportable":true,"allow_plaintext_backup":true}"#;
        let key = self.key_with(prefix, body);
        self.call(
            "POST",
            &format!("transit/keys/{key}/config"),
            Some(r#"{"deletion_allowed":true}"#),
        );
        key
    }

    /// An AppRole whose tokens may use the Transit mount: its role id and a secret id.
    pub(crate) fn approle(&self) -> (String, String) {
        let (status, _) = self.try_call("POST", "sys/auth/approle", Some(r#"{"type":"approle"}"#));
        assert!(status < 300 || status == 400, "enabling approle: {status}");
        let name = format!("holdfast-{}-{}", std::process::id(), rand::random::<u32>());
        let policy = r#"path \"transit/*\" { capabilities = [\"read\", \"update\"] }"#;
        self.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(&format!(r#"{{"policy":"{policy}"}}"#)),
        );
        let role = format!("auth/approle/role/{name}");
        self.call(
            "POST",
            &role,
            Some(&format!(r#"{{"token_policies":"{name}"}}"#)),
        );
        let id = self.call("GET", &format!("{role}/role-id"), None);
        let secret = self.call("POST", &format!("{role}/secret-id"), Some("{}"));
        (
            id["data"]["role_id"].as_str().unwrap().to_string(),
            secret["data"]["secret_id"].as_str().unwrap().to_string(),
        )
    }

    fn key_with(&self, prefix: &str, body: &str) -> String {
        let key = format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>());
        self.call("POST", &format!("transit/keys/{key}"), Some(body));
        key
    }

    /// One OpenBao API call that must succeed; its JSON answer (`null` when empty).
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (status, v) = self.try_call(method, path, body);
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    /// One OpenBao API call: its status and JSON answer.
    pub(crate) fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut r = reqwest::Client::new()
                .request(method, format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Token", &self.token);
            if let Some(b) = body {
                r = r.body(b.to_string());
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            )
        })
    }
}

/// A store whose KEK is in the dev OpenBao, reached through `BAO_ADDR` and `BAO_TOKEN`, with
/// a keyring that does not exist (nothing may fall back to it); no command prints the token.
struct TransitStore {
    r: RemoteStore,
    bao: Bao,
}

impl TransitStore {
    fn new(pipeline: &str, bao: Bao) -> Self {
        let r = RemoteStore::new(pipeline, &bao.token);
        let keyring = r.dir.path().join("no-keyring.json");
        let r = r
            .var("HOLDFAST_KEYRING", keyring)
            .var("BAO_ADDR", &bao.addr)
            .var("BAO_TOKEN", &bao.token)
            .unset("VAULT_ADDR")
            .unset("VAULT_TOKEN");
        TransitStore { r, bao }
    }
}

impl std::ops::Deref for TransitStore {
    type Target = RemoteStore;
    fn deref(&self) -> &RemoteStore {
        &self.r
    }
}

/// Every `wrapped_dek` object in the manifests under `dir`.
fn wrapped_deks(dir: &Path) -> Vec<serde_json::Value> {
    fn walk(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "wrapped_dek" {
                        out.push(v.clone());
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for p in common::json_files(dir) {
        let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        walk(&v, &mut out);
    }
    out
}

#[test]
fn a_transit_store_batches_and_decrypts_with_its_keys_in_openbao() {
    let Some(bao) = bao("transit_store") else {
        return;
    };
    let key = bao.derived_key("it-store");
    let pipeline =
        format!("[kms]\nbackend = \"transit\"\nkey = \"{key}\"\ncryptoperiod_days = 365\n");
    let s = TransitStore::new(&pipeline, bao);
    let p = s.pipeline.to_str().unwrap().to_string();
    let init = s.ok(&["init", "--pipeline", &p]);
    assert!(init.contains(&format!("transit:transit/{key}")), "{init}");
    let g = common::generate(12, 60, 0, 2);
    let input = s.dir.path().join("e.ndjson");
    std::fs::write(&input, &g.ndjson).unwrap();
    s.ok(&["ingest", input.to_str().unwrap()]);
    let report: serde_json::Value =
        serde_json::from_str(&s.ok(&["batch", "--pipeline", &p, "--format", "json"])).unwrap();
    assert_eq!(report["stored"], 60, "{report}");

    // the manifests' wrapped DEKs are Transit ciphertexts under this key
    let wrapped = wrapped_deks(&s.store.join("manifests"));
    assert!(!wrapped.is_empty());
    for w in &wrapped {
        assert_eq!(w["kek_id"], format!("transit:transit/{key}"));
        assert_eq!(w["kek_version"], 1);
        let ct = base64::engine::general_purpose::STANDARD
            .decode(w["ciphertext"].as_str().unwrap())
            .unwrap();
        assert!(
            ct.starts_with(b"vault:v1:"),
            "{}",
            String::from_utf8_lossy(&ct)
        );
    }

    // the records decrypt (DEKs unwrapped by OpenBao), and the blind index (from the
    // store's wrapped index secret) finds a customer
    let rows = s.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KMS-1",
        "--format",
        "ndjson",
        "SELECT json_get(record, 'interaction', 'notes') AS notes FROM decrypted ORDER BY event_id",
    ]);
    let notes: Vec<String> = rows
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["notes"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut want = g.notes.clone();
    want.sort();
    let mut got = notes.clone();
    got.sort();
    assert_eq!(got, want);
    let addr = &g.customer_addresses[4];
    let found = s.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KMS-1",
        "--format",
        "csv",
        &format!("SELECT count(*) AS n FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, '{addr}'))"),
    ]);
    assert_ne!(found.lines().nth(1), Some("0"), "{found}");
    assert!(s.store.join("keys/index").read_dir().unwrap().count() == 1);
    s.ok(&["verify"]);

    // an AppRole instead of a token: the first call logs in
    let (role_id, secret_id) = s.bao.approle();
    let out = s
        .cmd(&[
            "query",
            "--decrypt",
            "--case",
            "KMS-1",
            "--format",
            "csv",
            "SELECT count(record) AS n FROM decrypted",
        ])
        .env_remove("BAO_TOKEN")
        .env("BAO_ROLE_ID", &role_id)
        .env("BAO_SECRET_ID", &secret_id)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().nth(1), Some("60"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&secret_id));
    let out = s
        .cmd(&[
            "query",
            "--decrypt",
            "--case",
            "KMS-1",
            "SELECT count(record) FROM decrypted",
        ])
        .env_remove("BAO_TOKEN")
        .env("BAO_ROLE_ID", &role_id)
        .env("BAO_SECRET_ID", "not-the-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("AppRole login"),
        "{err}"
    );

    // without a token, or with a local keyring, the store's keys do not open, and it says why
    let out = s
        .cmd(&["ingest", input.to_str().unwrap()])
        .env_remove("BAO_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BAO_TOKEN or VAULT_TOKEN"));
    let local = s.dir.path().join("local.toml");
    std::fs::write(&local, "[kms]\nbackend = \"local\"\n").unwrap();
    let out = s
        .cmd(&["batch", "--pipeline", local.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Transit"), "{err}");
}

#[test]
fn rotate_and_rewrap_move_every_dek_inside_openbao_and_the_old_version_can_be_retired() {
    let Some(bao) = bao("transit_rewrap") else {
        return;
    };
    let key = bao.derived_key("it-rewrap");
    let pipeline = format!("[kms]\nbackend = \"transit\"\nkey = \"{key}\"\n");
    let s = TransitStore::new(&pipeline, bao);
    let p = s.pipeline.to_str().unwrap().to_string();
    s.ok(&["init", "--pipeline", &p]);
    let g = common::generate(13, 60, 0, 3);
    let input = s.dir.path().join("e.ndjson");
    std::fs::write(&input, &g.ndjson).unwrap();
    s.ok(&["ingest", input.to_str().unwrap()]);
    s.ok(&["batch", "--pipeline", &p]);
    let later = s.dir.path().join("later.ndjson");
    std::fs::write(&later, common::generate(14, 10, 0, 1).ndjson).unwrap();
    s.ok(&["ingest", later.to_str().unwrap()]);
    let files = wrapped_deks(&s.store.join("manifests")).len();

    let rotated = s.ok(&["keys", "rotate", "--pipeline", &p]);
    assert!(rotated.contains("new version v2"), "{rotated}");
    let r: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "rewrap", "--pipeline", &p, "--format", "json"]))
            .unwrap();
    assert_eq!(r["landing"], 1, "{r}");
    assert_eq!(r["index_secret"], 1, "{r}");
    assert_eq!(r["to_version"], 2, "{r}");
    // one call of the trait per kind of home; Transit batches each in requests of 256
    assert_eq!(r["kms_rewrap_calls"], 2, "{r}");
    let latest: Vec<serde_json::Value> = wrapped_deks(&s.store.join("manifests"));
    let v2 = latest.iter().filter(|w| w["kek_version"] == 2).count();
    assert_eq!(v2 as u64, r["data_files"].as_u64().unwrap(), "{r}");
    assert!(v2 > 0 && v2 <= files);

    // retired by two administrators, OpenBao stops decrypting under v1: everything still
    // opens, through the new wrappings
    s.ok(&["access", "grant", "--user", "kim", "--role", "admin"]);
    let asked = s.ok(&["keys", "retire", "--version", "1"]);
    let id = asked
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let out = s
        .cmd(&["keys", "approve", "--request", &id])
        .env(OS_USER_VAR, "kim")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "status", "--format", "json"])).unwrap();
    let v1 = &st["versions"][0];
    assert_eq!(
        (
            v1["version"].as_u64(),
            v1["decrypts"].as_bool(),
            v1["total"].as_u64()
        ),
        (Some(1), Some(false), Some(0)),
        "{st}"
    );
    assert_eq!(st["min_decryption_version"], 2);
    s.ok(&["verify", "--deep"]);
    let addr = &g.customer_addresses[2];
    let found = s.ok(&[
        "query", "--decrypt", "--case", "KMS-2", "--format", "csv",
        &format!("SELECT count(*) AS n FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, '{addr}'))"),
    ]);
    assert_ne!(found.lines().nth(1), Some("0"), "{found}");
    let report: serde_json::Value =
        serde_json::from_str(&s.ok(&["batch", "--pipeline", &p, "--format", "json"])).unwrap();
    assert_eq!(report["stored"], 10, "{report}");
    if let Ok(log) = std::env::var("HOLDFAST_TEST_BAO_AUDIT_LOG") {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.contains(&format!("transit/rewrap/{key}")),
            "no rewrap in OpenBao's audit log"
        );
        assert!(log.contains(&format!("transit/keys/{key}/rotate")));
    }
}
