//! A tenant with its own key (BYOK) in the dev OpenBao that tests/run.sh starts: bound by two
//! administrators, its records alone under its key, isolated from the platform's, and, when
//! it revokes the key (deleted in OpenBao), unreadable while every other tenant's discovery and
//! batches go on and its new events wait in landing until the key is restored.

use crate::common::{self, Env};
use crate::transit::{Bao, bao};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const TENANT: &str = "tenant-1";

struct Byok {
    env: Env,
    bao: Bao,
    pipeline: String,
    key: String,
}

impl Byok {
    fn cmd(&self, user: &str, args: &[&str]) -> Command {
        let mut c = self.env.cmd_as(user, args);
        c.env("BAO_ADDR", &self.bao.addr)
            .env("BAO_TOKEN", &self.bao.token)
            .env("HOLDFAST_PIPELINE", &self.pipeline);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(common::OPERATOR, args).output().unwrap()
    }
    fn ok_as(&self, user: &str, args: &[&str]) -> String {
        let out = self.cmd(user, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "holdfast {args:?} failed: {err}");
        assert!(!err.contains(&self.bao.token), "the token was printed");
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
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                walk(
                    &serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
                    &mut out,
                );
            }
        }
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
    assert!(
        done.contains(&format!("transit:transit/{}", s.key)),
        "{done}"
    );
}

#[test]
fn a_tenants_own_key_isolates_its_records_and_its_revocation_stops_only_that_tenant() {
    let Some(bao) = bao("byok") else {
        return;
    };
    let key = bao.revocable_key("it-byok");
    let env = Env::new();
    let pipeline = env.dir.path().join("byok.toml");
    std::fs::write(
        &pipeline,
        format!("[kms.tenants.{TENANT}]\nbackend = \"transit\"\nkey = \"{key}\"\n"),
    )
    .unwrap();
    let s = Byok {
        env,
        bao,
        pipeline: pipeline.to_str().unwrap().to_string(),
        key,
    };
    let g = s.ingest(31, 90);
    bind(&s);
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], 90, "{report}");

    // the tenant's records alone, under its key; everyone else's under the platform's
    let own = format!("transit:transit/{}", s.key);
    let files = file_keks(&s.env.store.join("manifests"));
    assert!(files.iter().any(|(t, _)| t == &[TENANT.to_string()]));
    for (tenants, kek) in &files {
        assert_eq!(
            tenants.contains(&TENANT.to_string()),
            kek == &own,
            "{tenants:?} {kek}"
        );
        assert!(
            tenants.len() == 1 || kek != &own,
            "a file mixes the tenant with others"
        );
    }
    // a tenant's wrapped DEK opens only under its key and its own tenant and DEK id: another
    // Transit key, or the same key with another tenant named, gets nothing
    let (ct, dek_id) = tenant_ciphertext(&s.env.store, &own);
    let other = s.bao.derived_key("it-byok-other");
    let decrypt = |key: &str, tenant: &str| {
        let context = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("holdfast.dek.v1/tenant/{tenant}/{dek_id}"),
        );
        let body = format!(r#"{{"ciphertext":"{ct}","context":"{context}"}}"#);
        s.bao
            .try_call("POST", &format!("transit/decrypt/{key}"), Some(&body))
            .0
    };
    assert_eq!(decrypt(&s.key, TENANT), 200);
    assert!(
        decrypt(&other, TENANT) >= 400,
        "another key opened the tenant's DEK"
    );
    assert!(
        decrypt(&s.key, "tenant-2") >= 400,
        "the DEK opened for another tenant"
    );

    let all = "SELECT count(record) FROM decrypted";
    assert_eq!(s.count(all), 90);
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
    assert_eq!(status["tenants"][0]["kek_id"], own.as_str(), "{status}");

    // the tenant revokes its key (backed up first, then deleted in OpenBao)
    let backup = s
        .bao
        .call("GET", &format!("transit/backup/{}", s.key), None);
    let backup = backup["data"]["backup"].as_str().unwrap().to_string();
    s.bao
        .call("DELETE", &format!("transit/keys/{}", s.key), None);

    let out = s.run(&[
        "query",
        "--decrypt",
        "--case",
        "BYOK-2",
        "--format",
        "csv",
        all,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "decrypted without the tenant's key");
    assert!(err.contains(TENANT) && err.contains("OpenBao"), "{err}");
    let others = format!("SELECT count(record) FROM decrypted WHERE tenant_id <> '{TENANT}'");
    let mine = String::from_utf8_lossy(&g.ndjson)
        .lines()
        .filter(|l| l.contains(&format!("\"{TENANT}\"")))
        .count() as u64;
    assert_eq!(
        s.count(&others),
        90 - mine,
        "other tenants' discovery goes on"
    );

    // new events: the others' are stored, the tenant's wait in landing, not in quarantine
    let g2 = s.ingest(32, 60);
    let mine2 = String::from_utf8_lossy(&g2.ndjson)
        .lines()
        .filter(|l| l.contains(&format!("\"{TENANT}\"")))
        .count() as u64;
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], 60 - mine2, "{report}");
    assert_eq!(report["quarantined"], 0, "{report}");
    assert_eq!(
        report["tenants_waiting"][TENANT]["events"], mine2,
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(s.env.store.join("landing"))
            .unwrap()
            .count(),
        1
    );
    // an ingest for the tenant alone is sealed under its key, or not at all
    let only_mine = s.env.dir.path().join("mine.ndjson");
    let lines: Vec<&str> = std::str::from_utf8(&g2.ndjson).unwrap().lines().collect();
    let mine_lines: Vec<&str> = lines
        .into_iter()
        .filter(|l| l.contains(&format!("\"{TENANT}\"")))
        .collect();
    std::fs::write(&only_mine, mine_lines.join("\n") + "\n").unwrap();
    let tenant_ingest = ["ingest", "--tenant", TENANT, only_mine.to_str().unwrap()];
    let out = s.run(&tenant_ingest);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(TENANT), "{err}");
    assert_eq!(
        std::fs::read_dir(s.env.store.join("landing"))
            .unwrap()
            .count(),
        1
    );
    let warned = s.ok(&["keys", "status"]);
    assert!(
        warned.contains("UNAVAILABLE") && warned.contains(TENANT),
        "{warned}"
    );

    // the key is back: the waiting events are stored, exactly once, and everything reads
    let restore = format!(r#"{{"backup":"{backup}"}}"#);
    s.bao.call(
        "POST",
        &format!("transit/restore/{}", s.key),
        Some(&restore),
    );
    s.ok(&tenant_ingest);
    let status = s.json(&["keys", "status", "--format", "json"]);
    let under_own = &status["tenants"][0]["versions"][0]["deks"];
    assert_eq!(under_own["landing"], 1, "{status}");
    let report = s.json(&["batch", "--format", "json"]);
    assert_eq!(report["stored"], mine2, "{report}");
    assert_eq!(
        report["duplicates_in_batch"], mine2,
        "the second copy deduplicated: {report}"
    );
    assert!(report.get("tenants_waiting").is_none(), "{report}");
    assert_eq!(s.count(all), 150);
    s.ok(&["verify"]);

    // its key rotates and rewraps on its own
    s.ok(&["keys", "rotate", "--tenant", TENANT]);
    s.ok(&["keys", "rewrap", "--tenant", TENANT]);
    let after = file_keks(&s.env.store.join("manifests"));
    assert!(
        after
            .iter()
            .all(|(t, k)| t.contains(&TENANT.to_string()) == (k == &own))
    );
    assert_eq!(s.count(all), 150);
}

/// A Transit ciphertext wrapped under `kek` in the store's manifests, and its DEK id.
fn tenant_ciphertext(store: &Path, kek: &str) -> (String, String) {
    use base64::Engine as _;
    let text = walkdir(&store.join("manifests"))
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

fn walkdir(p: &Path) -> Vec<std::path::PathBuf> {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .flat_map(|e| walkdir(&e.unwrap().path()))
            .collect()
    } else {
        vec![p.to_path_buf()]
    }
}
