//! The audit trail: every decryption is recorded; `audit verify` catches changed, removed and
//! reordered entries; concurrent writers do not fork the chain.

use crate::common::{self, Env};

fn audited_store() -> Env {
    let env = Env::new();
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    env.ingest(&env.write("good.ndjson", &common::generate(50, 100, 0, 1).ndjson));
    env.batch();
    let ids = ids_of(&env);
    for id in &ids[..3] {
        env.ok(&["quarantine", "show", id, "--case", "INC-7"]);
    }
    env.ok(&["verify", "--deep"]);
    env
}

fn entry(env: &Env, seq: u64) -> std::path::PathBuf {
    env.store.join("audit").join(format!("v{seq:020}.json"))
}

#[test]
fn decryptions_are_recorded_and_the_chain_verifies() {
    let env = audited_store();
    let rows: Vec<serde_json::Value> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "access.policy",
            "head.started",
            "batch",
            "quarantine.show",
            "quarantine.show",
            "quarantine.show",
            "verify.deep"
        ]
    );
    // who: the OS user and the name acted under, in every entry
    for r in &rows {
        assert_eq!(r["os_user"], common::OPERATOR, "{r}");
    }
    assert_eq!(rows[3]["actor"], common::OPERATOR);
    assert_eq!(rows[3]["case"], "INC-7");
    let batch: serde_json::Value =
        serde_json::from_str(rows[2]["details"].as_str().unwrap()).unwrap();
    assert_eq!(
        batch["deks_unwrapped"], 2,
        "one landing DEK per segment read"
    );
    assert_eq!(
        env.ok(&[
            "audit",
            "list",
            "--action",
            "verify.deep",
            "--format",
            "ndjson"
        ])
        .lines()
        .count(),
        1
    );
    assert!(env.ok(&["audit", "verify"]).contains("intact: 7"));
    let head = env.ok(&["audit", "head"]);
    assert!(
        head.starts_with("7 ") && head.trim().len() == 2 + 64,
        "{head}"
    );
    assert_eq!(
        env.count(
            r#"SELECT count(*) FROM audit WHERE "case" = 'INC-7' AND os_user = 'test-operator'"#
        ),
        3,
        "the trail is a SQL table too"
    );
    // show needs a case: refused, and the refusal is recorded
    let out = env.run(&["quarantine", "show", &ids_of(&env)[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("case reference"));
    assert!(out.stdout.is_empty());
    let last = env.query("SELECT action, details FROM audit ORDER BY sequence DESC LIMIT 1");
    assert_eq!(last[0]["action"], "decrypt.refused");
    assert!(
        last[0]["details"]
            .as_str()
            .unwrap()
            .contains("quarantine.show")
    );
}

fn ids_of(env: &Env) -> Vec<String> {
    env.ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_changed_entry_breaks_the_next_link() {
    let env = audited_store();
    let p = entry(&env, 4);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("INC-7"));
    std::fs::write(&p, text.replacen("INC-7", "INC-8", 1)).unwrap();
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("v{:020}.json", 5)) && stdout.contains("previous hash"),
        "{stdout}"
    );
}

#[test]
fn a_removed_entry_is_named() {
    let env = audited_store();
    std::fs::remove_file(entry(&env, 2)).unwrap();
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sequence 2 is missing"));
}

#[test]
fn reordered_entries_are_caught() {
    let env = audited_store();
    let (a, b) = (entry(&env, 2), entry(&env, 3));
    let tmp = env.dir.path().join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("says sequence 3, stored as 2"));
}

#[test]
fn concurrent_writers_do_not_fork_the_chain() {
    let env = Env::new();
    let store =
        holdfast::storage::Store::open(&holdfast::storage::StoreUrl::local(&env.store), false)
            .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..4 {
            let audit = holdfast::audit::Audit::new(
                store.clone(),
                std::sync::Arc::new(holdfast::clock::SystemClock),
            );
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let e = holdfast::audit::Replayed {
                        entries: vec![format!("w{w}-{i}")],
                    };
                    audit
                        .record(&format!("writer-{w}"), None, &e)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert!(env.ok(&["audit", "verify"]).contains("intact: 42"));
}
