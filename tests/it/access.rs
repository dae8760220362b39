//! The access policy lives in the store: `init` records it, changes need two administrators
//! (but the first second person), and every decrypting command reads its roles.

use crate::common::{self, Env};

fn audit_rows(env: &Env) -> Vec<serde_json::Value> {
    env.ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn details(row: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(row["details"].as_str().unwrap()).unwrap()
}

#[test]
fn init_records_a_policy_whose_only_administrator_is_the_os_user() {
    let env = Env::new();
    let shown = env.ok(&["access", "show"]);
    assert!(
        shown.contains("access policy version 1")
            && shown.contains("test-operator: admin investigator analyst compliance retention"),
        "{shown}"
    );
    assert!(env.store.join("access/v00000000000000000001.json").exists());
    let rows = audit_rows(&env);
    assert_eq!(
        rows.len(),
        2,
        "the first policy, then the head chain's start"
    );
    assert_eq!(
        (rows[0]["action"].as_str(), rows[0]["os_user"].as_str()),
        (Some("access.policy"), Some(common::OPERATOR))
    );
    assert_eq!(rows[1]["action"], "head.started");
    assert_eq!(details(&rows[0])["step"], "initial");
    // init again changes nothing
    env.ok(&["init"]);
    assert!(!env.store.join("access/v00000000000000000002.json").exists());
    assert!(env.verify().0);
}

#[test]
fn the_first_second_person_is_added_at_once_and_every_later_change_waits_for_them() {
    let env = Env::new();
    // the first person added must be able to approve later changes
    let out = env.run(&["access", "grant", "--user", "kim", "--role", "compliance"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role admin"));
    // a sole administrator adds the first second person alone
    let out = env.ok(&["access", "grant", "--user", "kim", "--role", "admin"]);
    assert!(out.contains("applied"), "{out}");
    assert!(env.ok(&["access", "show"]).contains("kim: admin"));
    // from now on one administrator asks and waits
    let out = env.ok(&[
        "access",
        "grant",
        "--user",
        "ann",
        "--role",
        "investigator",
        "--tenant",
        "tenant-0",
    ]);
    assert!(out.starts_with("request R3 recorded"), "{out}");
    let shown = env.ok(&["access", "show"]);
    assert!(
        shown.contains("pending R3") && !shown.contains("ann:"),
        "{shown}"
    );
    let q = [
        "query",
        "--decrypt",
        "--case",
        "C-1",
        "SELECT count(*) FROM decrypted",
    ];
    assert_eq!(env.run_as("ann", &q).status.code(), Some(1), "not yet");
    // not by the one who asked, nor by someone who is not an administrator
    let out = env.run(&["access", "approve", "--request", "R3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("different administrator"));
    let out = env.run_as("ann", &["access", "approve", "--request", "R3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin role"));
    let out = env.run_as(
        "ann",
        &["access", "grant", "--user", "ann", "--role", "admin"],
    );
    assert_eq!(out.status.code(), Some(1));
    // the second administrator approves
    env.ok_as("kim", &["access", "approve", "--request", "R3"]);
    env.ok_as("ann", &q);
    let shown = env.ok(&["access", "show"]);
    assert!(
        shown.contains("ann: investigator(tenant-0)") && !shown.contains("pending"),
        "{shown}"
    );
    // every step and every refusal is in the trail
    let steps: Vec<String> = audit_rows(&env)
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("access."))
        .map(|r| {
            let d = details(r);
            format!(
                "{}:{}:{}",
                r["os_user"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                d["step"].as_str().or(d["what"].as_str()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "test-operator:access.policy:initial",
            "test-operator:access.policy:applied",
            "test-operator:access.policy:requested",
            "test-operator:access.refused:access approve",
            "ann:access.refused:access approve",
            "ann:access.refused:access change",
            "kim:access.policy:approved",
        ]
    );
    // the versions form a chain that verify walks
    assert!(env.verify().0);
    let v3 = env.store.join("access/v00000000000000000003.json");
    let text = std::fs::read_to_string(&v3).unwrap();
    std::fs::write(&v3, text.replace("tenant-0", "tenant-9")).unwrap();
    let (ok, report) = env.verify();
    assert!(!ok, "{report}");
    assert!(report.to_string().contains("previous hash"), "{report}");
}

/// `validate`, `quarantine show` and `quarantine replay` decrypt: they need the investigator
/// role and a case, are refused (audited) otherwise, and are audited when they run.
#[test]
fn validate_and_quarantine_decrypt_only_for_an_investigator_and_are_audited() {
    let env = Env::new();
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    env.batch();
    env.ingest(&env.write("good.ndjson", &common::generate(90, 20, 0, 1).ndjson));
    env.second_person("kim", &["compliance"]);
    let id = env
        .ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .next()
        .unwrap();
    let commands: [Vec<&str>; 3] = [
        vec!["validate", "--case", "INC-1"],
        vec!["quarantine", "show", "--case", "INC-1", &id],
        vec!["quarantine", "replay", "--case", "INC-1", "--id", &id],
    ];
    let before = audit_rows(&env).len();
    for (user, c) in [
        ("kim", &commands[0]),
        ("kim", &commands[1]),
        ("kim", &commands[2]),
        ("eve", &commands[1]),
    ] {
        let out = env.run_as(user, c);
        assert_eq!(out.status.code(), Some(1), "{user} {c:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("investigator"), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("+1999555"));
    }
    let rows = audit_rows(&env);
    let refused: Vec<String> = rows[before..]
        .iter()
        .map(|r| {
            format!(
                "{}:{}:{}",
                r["os_user"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                details(r)["what"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            "kim:decrypt.refused:validate",
            "kim:decrypt.refused:quarantine.show",
            "kim:decrypt.refused:quarantine.replay",
            "eve:decrypt.refused:quarantine.show",
        ]
    );
    assert_eq!(
        env.landing_segments(),
        1,
        "the refused replay queued nothing"
    );
    // without a case: refused too
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("case reference"));
    // the investigator runs them, each audited with the case
    for c in &commands {
        env.ok(c);
    }
    let rows = audit_rows(&env);
    let ran: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["case"] == "INC-1" && !r["action"].as_str().unwrap().ends_with("refused"))
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["os_user"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            ("validate", common::OPERATOR),
            ("quarantine.show", common::OPERATOR),
            ("quarantine.replay", common::OPERATOR),
        ]
    );
    let validated = rows.iter().find(|r| r["action"] == "validate").unwrap();
    assert_eq!(details(validated)["landing_segments"], 1);
}
