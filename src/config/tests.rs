#![allow(clippy::disallowed_methods)] // the tests write pipeline files to load

use super::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn problems_of(e: ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("{other}"),
    }
}

#[test]
fn presets_and_rules() {
    let p = Pipeline::parse(
        "t.toml".as_ref(),
        r#"
            [retention]
            default_policy = "SEC_17A4_6Y"
            [[retention.rules]]
            interaction_types = ["SMS"]
            policy = "MIFID2_5Y"
            [[retention.rules]]
            tenants = ["bank-a"]
            policy = "KEEP_10Y"
            [retention.policies.KEEP_10Y]
            years = 10
            "#,
    )
    .unwrap();
    let pol = p.validate("t.toml".as_ref()).unwrap();
    let t = at("2024-02-29T12:00:00Z");
    assert_eq!(
        pol.apply("x", "SMS", t),
        (Arc::from("MIFID2_5Y"), Some(at("2029-02-28T12:00:00Z")))
    );
    assert_eq!(pol.apply("bank-a", "CALL", t).0.as_ref(), "KEEP_10Y");
    assert_eq!(
        pol.apply("bank-a", "SMS", t).0.as_ref(),
        "MIFID2_5Y",
        "first match wins"
    );
    assert_eq!(
        pol.apply("x", "CALL", t),
        (Arc::from("SEC_17A4_6Y"), Some(at("2030-02-28T12:00:00Z")))
    );
}

#[test]
fn reports_every_problem() {
    let p = Pipeline::parse(
        "t.toml".as_ref(),
        r#"
            [retention]
            default_policy = "NOPE"
            [[retention.rules]]
            policy = "ALSO_NOPE"
            interaction_types = ["sms"]
            [batch]
            memory_mb = 1
            "#,
    )
    .unwrap();
    let problems = problems_of(p.validate("t.toml".as_ref()).unwrap_err());
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn unknown_keys_are_refused() {
    assert!(Pipeline::parse("t.toml".as_ref(), "[batch]\nmax_input = 3\n").is_err());
}

/// Three mistakes of three kinds (an unknown key, a wrong type, a value out of bounds) and a
/// policy no rule can find: one error names them all.
#[test]
fn structural_and_value_problems_come_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        r#"
        [batch]
        max_input = 3
        threads = 5000000
        [retention]
        default_policy = "NOPE"
        [retention.policies.SIX]
        years = "six"
        [[sources]]
        name = "a"
        format = "canonical"
        pathz = ["x"]
        "#,
    )
    .unwrap();
    let problems = problems_of(Pipeline::load(&path).unwrap_err());
    for want in [
        "batch.max_input: unknown key",
        "retention.policies.SIX.years: invalid type",
        "sources[0].pathz: unknown key",
        "sources[0].paths: missing",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want}: {problems:#?}"
        );
    }
    // sections with no structural problem are still checked for their values
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("p.toml");
    std::fs::write(
        &path2,
        "[batch]\nthreads = 5000000\nmemory_mb = 1\n[retention]\ndefault_policy = \"NOPE\"\n[store]\npaht = \"x\"\n",
    )
    .unwrap();
    let problems = problems_of(Pipeline::load(&path2).unwrap_err());
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("batch.threads: 5000000"))
    );
    assert!(problems.iter().any(|p| p.contains("unknown policy NOPE")));
    assert!(problems.iter().any(|p| p.starts_with("store.paht")));
}

#[test]
fn thread_counts_are_bounded() {
    let p = Pipeline::parse("t.toml".as_ref(), "[batch]\nthreads = 5000000\n").unwrap();
    let problems = problems_of(p.validate("t.toml".as_ref()).unwrap_err());
    assert!(problems[0].contains("more than 256"), "{problems:?}");
    let p = Pipeline::parse("t.toml".as_ref(), "[batch]\nthreads = 256\n").unwrap();
    assert!(p.validate("t.toml".as_ref()).is_ok());
}

#[test]
fn a_syntax_error_is_reported_with_its_place() {
    let Err(ConfigError::Parse { message, .. }) =
        Pipeline::parse("t.toml".as_ref(), "[batch\nthreads = 1\n")
    else {
        panic!()
    };
    assert!(
        message.contains("line 1") || message.contains("1:"),
        "{message}"
    );
}

#[test]
fn roles_in_a_pipeline_file_are_refused() {
    let p = Pipeline::parse(
        "t.toml".as_ref(),
        "[access.roles]\nmallory = [\"investigator\"]\n",
    )
    .unwrap();
    let e = p.validate("t.toml".as_ref()).unwrap_err().to_string();
    assert!(e.contains("holdfast access"), "{e}");
}

/// `[kms]`: transit needs a key; transit settings under `local`, a token and an impossible
/// cryptoperiod are refused, each by name; no section means "whatever the store is bound to".
#[test]
fn the_kms_section() {
    let p = Pipeline::parse(
        "t.toml".as_ref(),
        "[kms]\nbackend = \"transit\"\nkey = \"holdfast-platform\"\nnamespace = \"ops\"\ncryptoperiod_days = 365\n",
    )
    .unwrap();
    p.validate("t.toml".as_ref()).unwrap();
    let k = p.kms.unwrap();
    assert_eq!(
        (k.backend, k.key.as_deref(), k.mount.as_str()),
        (KmsBackend::Transit, Some("holdfast-platform"), "transit")
    );
    assert!(
        Pipeline::parse("t.toml".as_ref(), "")
            .unwrap()
            .kms
            .is_none()
    );
    let bad = |text: &str| {
        let p = Pipeline::parse("t.toml".as_ref(), text);
        match p {
            Ok(p) => problems_of(p.validate("t.toml".as_ref()).unwrap_err()),
            Err(e) => problems_of(e),
        }
    };
    assert_eq!(
        bad("[kms]\nbackend = \"transit\"\n"),
        vec!["kms.key: backend = \"transit\" needs the Transit key name"]
    );
    let p = bad("[kms]\naddress = \"https://bao:8200\"\ncryptoperiod_days = 0\n");
    assert!(
        p[0].starts_with("kms.address: only for backend = \"transit\""),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("kms.cryptoperiod_days: 0 is not between 1 and 3650"),
        "{p:?}"
    );
    let p = bad("[kms]\nbackend = \"transit\"\nkey = \"k\"\ntoken = \"hvs.secret\"\n");
    assert!(
        p.iter()
            .any(|m| m.starts_with("kms.token: secrets never live in a pipeline file")),
        "{p:?}"
    );
    assert!(p.iter().all(|m| !m.contains("hvs.secret")), "{p:?}");
    assert!(bad("[kms]\nbackend = \"aws\"\n")[0].starts_with("kms.backend"));
}

/// `[kms] backend = "aws-kms"`: a key KMS would accept, a region that agrees with its ARN, no
/// Transit settings, and no AWS secret (named, never echoed).
#[test]
fn the_kms_section_for_aws_kms() {
    let ok = |text: &str| {
        let p = Pipeline::parse("t.toml".as_ref(), text).unwrap();
        p.validate("t.toml".as_ref()).unwrap();
        p.kms.unwrap()
    };
    let k = ok(
        "[kms]\nbackend = \"aws-kms\"\nkey = \"alias/holdfast-platform\"\nregion = \"eu-west-1\"\n",
    );
    assert_eq!(
        (k.backend, k.key.as_deref(), k.region.as_deref()),
        (
            KmsBackend::AwsKms,
            Some("alias/holdfast-platform"),
            Some("eu-west-1")
        )
    );
    ok(
        "[kms]\nbackend = \"aws-kms\"\nkey = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\n",
    );
    let bad = |text: &str| {
        let p = Pipeline::parse("t.toml".as_ref(), text);
        match p {
            Ok(p) => problems_of(p.validate("t.toml".as_ref()).unwrap_err()),
            Err(e) => problems_of(e),
        }
    };
    assert_eq!(
        bad("[kms]\nbackend = \"aws-kms\"\n"),
        vec!["kms.key: backend = \"aws-kms\" needs the KMS key (a key id, key ARN or alias/NAME)"]
    );
    let p = bad("[kms]\nbackend = \"aws-kms\"\nkey = \"platform\"\nmount = \"kv\"\n");
    assert!(
        p[0].starts_with("kms.key: `platform` is not a KMS key id"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("kms.mount: only for backend = \"transit\""),
        "{p:?}"
    );
    let p = bad(
        "[kms]\nbackend = \"aws-kms\"\nkey = \"arn:aws:kms:eu-west-1:111122223333:alias/k\"\nregion = \"us-east-1\"\n",
    );
    assert!(p[0].contains("but the key ARN is in `eu-west-1`"), "{p:?}");
    assert!(
        bad("[kms]\nbackend = \"transit\"\nkey = \"k\"\nregion = \"eu-west-1\"\n")[0]
            .starts_with("kms.region: only for backend = \"aws-kms\"")
    );
    assert!(
        bad("[kms]\nkey = \"alias/k\"\n")[0]
            .starts_with("kms.key: only for backend = \"transit\" or \"aws-kms\"")
    );
    let p = bad(
        "[kms]\nbackend = \"aws-kms\"\nkey = \"alias/k\"\naccess_key_id = \"AKIA-qq7x\"\nsession_token = \"tok-qq7x\"\n",
    );
    for k in ["access_key_id", "session_token"] {
        let needle = format!("kms.{k}: secrets never live in a pipeline file");
        assert!(p.iter().any(|m| m.starts_with(&needle)), "{p:?}");
    }
    assert!(p.iter().all(|m| !m.contains("qq7x")), "{p:?}");
}
