//! A tenant with its own key (BYOK) in the dev OpenBao and in moto (AWS KMS) that tests/run.sh
//! starts: bound by two administrators, its records alone under its key, isolated from the
//! platform's, and, when it revokes the key (deleted in OpenBao, disabled in AWS KMS),
//! unreadable while every other tenant's discovery and batches go on and its new events wait
//! in landing until the key is back.

use crate::aws_kms::{kms_call, moto};
use crate::common::{self, Env};
use crate::transit::{Bao, bao};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const TENANT: &str = "tenant-1";

struct Byok {
    env: Env,
    /// The environment that reaches the key service (a token, AWS settings).
    vars: Vec<(&'static str, String)>,
    /// What must never be printed.
    secret: String,
    pipeline: String,
    /// The tenant's KEK id as the store records it.
    kek: String,
}

impl Byok {
    fn new(section: &str, vars: Vec<(&'static str, String)>, secret: &str, kek: &str) -> Self {
        let env = Env::new();
        let pipeline = env.dir.path().join("byok.toml");
        std::fs::write(&pipeline, format!("[kms.tenants.{TENANT}]\n{section}")).unwrap();
        Byok {
            pipeline: pipeline.to_str().unwrap().to_string(),
            env,
            vars,
            secret: secret.to_string(),
            kek: kek.to_string(),
        }
    }

    fn cmd(&self, user: &str, args: &[&str]) -> Command {
        let mut c = self.env.cmd_as(user, args);
        c.env("HOLDFAST_PIPELINE", &self.pipeline)
            .env("AWS_CONFIG_FILE", self.env.dir.path().join("no-aws-config"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(common::OPERATOR, args).output().unwrap()
    }
    fn ok_as(&self, user: &str, args: &[&str]) -> String {
        let out = self.cmd(user, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "holdfast {args:?} failed: {err}");
        assert!(!err.contains(&self.secret), "a secret was printed");
        String::from_utf8(out.stdout).unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        self.ok_as(common::OPERATOR, args)
    }
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
    fn ingest(&self, seed: u64, n: usize) -> common::Gen {
        let g = common::generate(seed, n, 0, 2);
        let input = self.env.dir.path().join(format!("e{seed}.ndjson"));
        std::fs::write(&input, &g.ndjson).unwrap();
        self.ok(&["ingest", input.to_str().unwrap()]);
        g
    }
    fn count(&self, sql: &str) -> u64 {
        let out = self.ok(&[
            "query",
            "--decrypt",
            "--case",
            "BYOK-1",
            "--format",
            "csv",
            sql,
        ]);
        out.lines().nth(1).unwrap().parse().unwrap()
    }
}

/// Every data-file entry of every manifest version under `dir`: (tenant ids, KEK id).
fn file_keks(dir: &Path) -> Vec<(Vec<String>, String)> {
    fn walk(v: &Value, out: &mut Vec<(Vec<String>, String)>) {
        match v {
            Value::Object(m) => {
                if let (Some(t), Some(e)) = (m.get("tenant_ids"), m.get("encryption")) {
                    let tenants = t.as_array().unwrap().iter();
                    let tenants = tenants.map(|t| t.as_str().unwrap().to_string()).collect();
                    let kek = e["wrapped_dek"]["kek_id"].as_str().unwrap().to_string();
                    out.push((tenants, kek));
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for p in common::json_files(dir) {
        walk(
            &serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            &mut out,
        );
    }
    out
}

/// Binds TENANT to its own key: refused until bound, asked by one administrator, refused to
/// the same one, approved by another.
fn bind(s: &Byok) {
    let out = s.run(&["batch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("keys bind --tenant tenant-1"),
        "{err}"
    );
    s.env.second_person("kim", &[]);
    let asked = s.ok(&["keys", "bind", "--tenant", TENANT]);
    let id = asked
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(id.starts_with("kb-"), "{asked}");
    let out = s.run(&["keys", "approve", "--request", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = s.ok_as("kim", &["keys", "approve", "--request", &id]);
    assert!(done.contains(&s.kek), "{done}");
}

/// The events of TENANT among `g`'s lines.
fn mine(g: &common::Gen) -> Vec<String> {
    let text = String::from_utf8_lossy(&g.ndjson);
    let tag = format!("\"{TENANT}\"");
    text.lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

const ALL: &str = "SELECT count(record) FROM decrypted";

/// Bound, batched: the tenant's records alone under its key, found by its blind index.
fn bound_and_batched(s: &Byok) -> common::Gen {
    let g = s.ingest(31, 90);
    bind(s);
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], 90, "{report}");
    let files = file_keks(&s.env.store.join("manifests"));
    assert!(files.iter().any(|(t, _)| t == &[TENANT.to_string()]));
    for (tenants, kek) in &files {
        let theirs = tenants.contains(&TENANT.to_string());
        assert_eq!(theirs, kek == &s.kek, "{tenants:?} {kek}");
        assert!(
            tenants.len() == 1 || kek != &s.kek,
            "a file mixes the tenant with others"
        );
    }
    assert_eq!(s.count(ALL), 90);
    let addr = &g.customer_addresses[3];
    let by_addr = format!(
        "SELECT count(*) FROM events WHERE tenant_id = '{TENANT}' AND array_has(address_hmacs, blind_index(tenant_id, '{addr}'))"
    );
    assert_eq!(
        s.count(&by_addr),
        1,
        "the tenant's blind index comes from its own key"
    );
    let status: Value = s.json(&["keys", "status", "--format", "json"]);
    assert_eq!(status["tenants"][0]["tenant"], TENANT, "{status}");
    assert_eq!(status["tenants"][0]["kek_id"], s.kek.as_str(), "{status}");
    g
}

/// With the tenant's key revoked: its records do not decrypt (the error names the tenant and
/// `backend`), the others' do; its new events wait in landing, not in quarantine, and an
/// ingest for it alone writes nothing. Returns the new events and the tenant-only ingest.
fn revoked(s: &Byok, g: &common::Gen, backend: &str) -> (common::Gen, Vec<String>) {
    let out = s.run(&[
        "query",
        "--decrypt",
        "--case",
        "BYOK-2",
        "--format",
        "csv",
        ALL,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "decrypted without the tenant's key");
    assert!(err.contains(TENANT) && err.contains(backend), "{err}");
    let others = format!("SELECT count(record) FROM decrypted WHERE tenant_id <> '{TENANT}'");
    let theirs = mine(g).len() as u64;
    assert_eq!(s.count(&others), 90 - theirs, "others' discovery goes on");

    let g2 = s.ingest(32, 60);
    let mine2 = mine(&g2);
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], 60 - mine2.len() as u64, "{report}");
    assert_eq!(report["quarantined"], 0, "{report}");
    let waiting = &report["tenants_waiting"][TENANT];
    assert_eq!(waiting["events"], mine2.len(), "{report}");
    assert_eq!(landing(s), 1);

    let only_mine = s.env.dir.path().join("mine.ndjson");
    std::fs::write(&only_mine, mine2.join("\n") + "\n").unwrap();
    let file = only_mine.to_str().unwrap().to_string();
    let tenant_ingest = vec!["ingest".into(), "--tenant".into(), TENANT.into(), file];
    let args: Vec<&str> = tenant_ingest.iter().map(String::as_str).collect();
    let out = s.run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(TENANT), "{err}");
    assert_eq!(landing(s), 1, "nothing written for the tenant");
    // a sweep goes on (it deletes whole files and needs no key for that)
    let swept = s.ok(&["sweep"]);
    assert!(swept.contains("sweep"), "{swept}");
    let warned = s.ok(&["keys", "status"]);
    assert!(
        warned.contains("UNAVAILABLE") && warned.contains(TENANT),
        "{warned}"
    );
    (g2, tenant_ingest)
}

fn landing(s: &Byok) -> usize {
    std::fs::read_dir(s.env.store.join("landing"))
        .unwrap()
        .count()
}

/// The key back: the waiting events and an ingest sealed under the tenant's key are stored,
/// each event once, and everything reads.
fn back(s: &Byok, g2: &common::Gen, tenant_ingest: &[String]) {
    let mine2 = mine(g2).len() as u64;
    let args: Vec<&str> = tenant_ingest.iter().map(String::as_str).collect();
    s.ok(&args);
    let status = s.json(&["keys", "status", "--format", "json"]);
    let under_own = &status["tenants"][0]["versions"][0]["deks"];
    assert_eq!(
        under_own["landing"], 1,
        "sealed under its own key: {status}"
    );
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], mine2, "{report}");
    assert_eq!(
        report["duplicates_in_batch"], mine2,
        "the second copy dropped: {report}"
    );
    assert!(report.get("tenants_waiting").is_none(), "{report}");
    assert_eq!(s.count(ALL), 150);
    s.ok(&["verify"]);
}

#[test]
fn a_tenants_own_key_in_openbao_isolates_its_records_and_its_deletion_stops_only_that_tenant() {
    let Some(bao) = bao("byok_transit") else {
        return;
    };
    let key = bao.revocable_key("it-byok");
    let section = format!("backend = \"transit\"\nkey = \"{key}\"\n");
    let vars = vec![
        ("BAO_ADDR", bao.addr.clone()),
        ("BAO_TOKEN", bao.token.clone()),
    ];
    let s = Byok::new(
        &section,
        vars,
        &bao.token,
        &format!("transit:transit/{key}"),
    );
    let g = bound_and_batched(&s);
    isolated_in_openbao(&s, &bao, &key);

    // the tenant revokes its key (backed up first, then deleted in OpenBao)
    let backup = bao.call("GET", &format!("transit/backup/{key}"), None);
    let backup = backup["data"]["backup"].as_str().unwrap().to_string();
    bao.call("DELETE", &format!("transit/keys/{key}"), None);
    let (g2, tenant_ingest) = revoked(&s, &g, "OpenBao");
    let restore = format!(r#"{{"backup":"{backup}"}}"#);
    bao.call("POST", &format!("transit/restore/{key}"), Some(&restore));
    back(&s, &g2, &tenant_ingest);

    // its key rotates and rewraps on its own
    s.ok(&["keys", "rotate", "--tenant", TENANT]);
    s.ok(&["keys", "rewrap", "--tenant", TENANT]);
    let after = file_keks(&s.env.store.join("manifests"));
    assert!(
        after
            .iter()
            .all(|(t, k)| t.contains(&TENANT.to_string()) == (k == &s.kek))
    );
    assert_eq!(s.count(ALL), 150);
    // the rewrap's head is signed with the store's own key, not the tenant's
    s.ok(&["verify"]);
}

/// A tenant's wrapped DEK opens only under its key and its own tenant and DEK id: another
/// Transit key, or the same key with another tenant named, gets nothing.
fn isolated_in_openbao(s: &Byok, bao: &Bao, key: &str) {
    let (ct, dek_id) = tenant_ciphertext(&s.env.store, &s.kek);
    let other = bao.derived_key("it-byok-other");
    let decrypt = |key: &str, tenant: &str| {
        let context = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("holdfast.dek.v1/tenant/{tenant}/{dek_id}"),
        );
        let body = format!(r#"{{"ciphertext":"{ct}","context":"{context}"}}"#);
        bao.try_call("POST", &format!("transit/decrypt/{key}"), Some(&body))
            .0
    };
    assert_eq!(decrypt(key, TENANT), 200);
    assert!(
        decrypt(&other, TENANT) >= 400,
        "another key opened the tenant's DEK"
    );
    assert!(
        decrypt(key, "tenant-2") >= 400,
        "the DEK opened for another tenant"
    );
}

#[test]
fn a_tenants_own_key_in_aws_kms_isolates_its_records_and_disabling_it_stops_only_that_tenant() {
    let Some(endpoint) = moto("byok_aws") else {
        return;
    };
    let made = kms_call(
        &endpoint,
        "CreateKey",
        serde_json::json!({"Description": "byok"}),
    );
    let arn = made["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    let key_id = made["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let secret = "holdfast-byok-secret-0123456789";
    let vars = vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "AKIDHOLDFASTBYOK".to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let section = format!("backend = \"aws-kms\"\nkey = \"{arn}\"\n");
    let s = Byok::new(&section, vars, secret, &arn);
    let g = bound_and_batched(&s);
    // the tenant disables its key (moto keeps decrypting a disabled key; holdfast asks
    // DescribeKey first and stops)
    kms_call(
        &endpoint,
        "DisableKey",
        serde_json::json!({"KeyId": key_id}),
    );
    let (g2, tenant_ingest) = revoked(&s, &g, "AWS KMS");
    kms_call(&endpoint, "EnableKey", serde_json::json!({"KeyId": key_id}));
    back(&s, &g2, &tenant_ingest);

    // a binding written by hand, with no approval on the audit trail: verify names it
    let own = s.env.store.join(format!("keys/tenants/{TENANT}/binding"));
    let forged = s.env.store.join("keys/tenants/tenant-2/binding");
    std::fs::create_dir_all(&forged).unwrap();
    let text = std::fs::read_to_string(own.join("v00000000000000000001.json")).unwrap();
    let text = text.replace(&format!("\"{TENANT}\""), "\"tenant-2\"");
    std::fs::write(forged.join("v00000000000000000001.json"), text).unwrap();
    let out = s.run(&["verify"]);
    let told = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{told}");
    assert!(
        told.contains("keys/tenants/tenant-2/binding") && told.contains("keys.bind.approved"),
        "{told}"
    );
}

/// A Transit ciphertext wrapped under `kek` in the store's manifests, and its DEK id.
fn tenant_ciphertext(store: &Path, kek: &str) -> (String, String) {
    use base64::Engine as _;
    let text = common::json_files(&store.join("manifests"))
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|t| t.contains(kek))
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let files = v["files"].as_array().unwrap();
    let e = files
        .iter()
        .map(|f| &f["encryption"])
        .find(|e| e["wrapped_dek"]["kek_id"] == kek)
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e["wrapped_dek"]["ciphertext"].as_str().unwrap())
        .unwrap();
    (
        String::from_utf8(raw).unwrap(),
        e["dek_id"].as_str().unwrap().to_string(),
    )
}
