//! The hold lifecycle on a temporary store, without the binary: two people, roles from the
//! store's policy, pins at the storage layer, refusals audited, every change signed.

use super::*;
use crate::access::Change;
use crate::clock::Clock;
use crate::clock::FakeClock;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    kms: Arc<dyn Kms>,
    clock: Arc<FakeClock>,
}

use crate::test_support::block;

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().to_utc()
}

/// An event of `tenant` about interaction `inter`, on 2025-10-02.
fn event(i: usize, tenant: &str, inter: &str) -> String {
    serde_json::json!({
        "eventId": format!("evt-{i}"),
        "eventType": "INTERACTION",
        "state": "CREATED",
        "sourcePlatform": "GENESYS_CX",
        "tenantId": tenant,
        "occurredAt": format!("2025-10-02T10:{:02}:00.000Z", i % 60),
        "interaction": {
            "schemaVersion": "2.1.0",
            "interactionId": inter,
            "interactionType": "CALL",
            "direction": "INBOUND",
            "routingMetadata": {"queueId": "q-1", "queueName": "Billing"},
            "participants": [
                {"participantId": format!("p-{i}"), "type": "CUSTOMER", "address": "+12025550100"}
            ]
        }
    })
    .to_string()
}

/// A store that `alice` created (sole administrator, every role), `bob` added as a second
/// administrator with the compliance role, and one batch of six events stored: four of
/// tenant `t1` (interactions `i-1`, `i-2`), two of `t2`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(at("2025-10-10T00:00:00Z")));
    let (store, kms) = block(crate::store::initialised_for_tests(
        dir.path(),
        clock.clone(),
    ));
    let alice = session(&store, &clock, "alice");
    let bob = Change::Grant {
        user: "bob".into(),
        roles: vec![Role::Admin, Role::Compliance],
        tenants: vec![],
        aliases: vec![],
        display_name: None,
    };
    block(crate::access::admin::request(&alice, bob)).unwrap();
    let lines: Vec<String> = [("t1", "i-1"), ("t1", "i-2"), ("t2", "i-3")]
        .iter()
        .enumerate()
        .flat_map(|(n, (t, i))| [event(2 * n, t, i), event(2 * n + 1, t, i)])
        .collect();
    let ctx = crate::job::Context {
        store: store.clone(),
        kms: kms.clone(),
        clock: clock.clone(),
        failpoints: crate::hooks::Failpoints::none(),
    };
    let text = lines.join("\n") + "\n";
    let source = crate::sources::SourceKind::Canonical;
    block(crate::job::ingest(
        &ctx,
        source,
        None,
        "t",
        text.as_bytes(),
        1,
    ))
    .unwrap();
    let (p, policies) = block(crate::store::policies_for(&store, None)).unwrap();
    let opts = crate::job::batch_options(p.as_ref(), policies);
    let report = block(crate::job::batch(&ctx, &opts)).unwrap();
    assert_eq!(report.stored, 6, "{report:?}");
    Fixture {
        _dir: dir,
        store,
        kms,
        clock,
    }
}

fn session(store: &Store, clock: &Arc<FakeClock>, os_user: &str) -> Session {
    block(Session::open(store, clock.clone(), os_user, None)).unwrap()
}

fn body(text: &str) -> HoldRequest {
    HoldRequest::parse(text).unwrap()
}

fn legal_hold(store: &Store, f: &str) -> bool {
    block(store.lock(&layout::locate(f).unwrap()))
        .unwrap()
        .legal_hold
}

/// The `legal_hold` audit entries: (actor, change, hold, files).
fn hold_entries(store: &Store) -> Vec<(String, String, String, u64)> {
    let audit = Audit::for_user(store.clone(), Arc::new(crate::clock::SystemClock), "x");
    block(audit.entries())
        .unwrap()
        .into_iter()
        .filter(|(e, _)| e.action == "legal_hold")
        .map(|(e, _)| {
            let d = &e.details;
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (
                e.actor.clone(),
                s("change"),
                s("hold"),
                d["files"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn head_change(store: &Store) -> String {
    block(crate::head::newest(store))
        .unwrap()
        .unwrap()
        .head
        .change
}

#[test]
fn two_people_place_and_release_a_hold_and_every_step_is_pinned_audited_and_signed() {
    let f = fixture();
    let (alice, bob) = (
        session(&f.store, &f.clock, "alice"),
        session(&f.store, &f.clock, "bob"),
    );
    let by = |s| Changer {
        session: s,
        kms: f.kms.as_ref(),
    };
    let req = r#"{"holdId": "LIT-1", "tenantId": "t1", "scope": {"interactionIds": ["i-1"]}}"#;
    let preview = block(preview_request(&f.store, body(req), f.clock.now())).unwrap();
    assert_eq!(preview.records, 2);
    assert_eq!(preview.files.len(), 1);
    let file = preview.files[0].clone();
    assert!(!legal_hold(&f.store, &file));

    let placed = block(apply(by(&alice), body(req), false)).unwrap();
    assert_eq!(
        placed,
        Placed {
            hold_id: "LIT-1".into(),
            files_pinned: 1
        }
    );
    assert!(legal_hold(&f.store, &file), "pinned before apply returns");
    assert_eq!(head_change(&f.store), "hold apply LIT-1");
    let holds = block(list(&f.store)).unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].files, vec![file.clone()]);
    assert_eq!(holds[0].placed_by, "alice");

    // placing it again is refused, and the refusal is audited
    let again = block(apply(by(&alice), body(req), false)).unwrap_err();
    assert!(
        matches!(&again, Error::Refused(r) if r.contains("already active")),
        "{again}"
    );

    let asked = block(request_release(by(&alice), "LIT-1")).unwrap();
    assert_eq!(asked.hold_id, "LIT-1");
    assert_eq!(head_change(&f.store), "hold release LIT-1");
    // the one who asked cannot approve
    let same = block(approve_release(by(&alice), "LIT-1")).unwrap_err();
    assert!(
        matches!(&same, Error::Refused(r) if r.contains("different actor")),
        "{same}"
    );
    assert!(legal_hold(&f.store, &file), "still pinned");

    let released = block(approve_release(by(&bob), "LIT-1")).unwrap();
    assert_eq!(
        released,
        Released {
            hold_id: "LIT-1".into(),
            unpinned: 1,
            still_held: 0
        }
    );
    assert!(!legal_hold(&f.store, &file));
    assert_eq!(head_change(&f.store), "hold approve LIT-1");
    let h = &block(list(&f.store)).unwrap()[0];
    assert!(
        matches!(&h.status, Status::Released { requested_by, approved_by, .. } if requested_by == "alice" && approved_by == "bob")
    );
    let s = |a: &str, c: &str, n| (a.to_string(), c.to_string(), "LIT-1".to_string(), n);
    assert_eq!(
        hold_entries(&f.store),
        vec![
            s("alice", "placed", 1),
            s("alice", "refused", 0),
            s("alice", "release_requested", 0),
            s("alice", "refused", 0),
            s("bob", "released", 1),
        ]
    );
}

#[test]
fn a_release_keeps_the_files_another_hold_needs_and_empty_holds_need_consent() {
    let f = fixture();
    let (alice, bob) = (
        session(&f.store, &f.clock, "alice"),
        session(&f.store, &f.clock, "bob"),
    );
    let by = |s| Changer {
        session: s,
        kms: f.kms.as_ref(),
    };
    let tenant = r#"{"holdId": "T1", "tenantId": "t1", "scope": {}}"#;
    let one = r#"{"holdId": "I2", "tenantId": "t1", "scope": {"interactionIds": ["i-2"]}}"#;
    assert_eq!(
        block(apply(by(&alice), body(tenant), false))
            .unwrap()
            .files_pinned,
        1
    );
    assert_eq!(
        block(apply(by(&alice), body(one), false))
            .unwrap()
            .files_pinned,
        1
    );
    block(request_release(by(&alice), "I2")).unwrap();
    let r = block(approve_release(by(&bob), "I2")).unwrap();
    assert_eq!((r.unpinned, r.still_held), (0, 1), "T1 still pins the file");
    let file = &block(list(&f.store)).unwrap()[0].files[0];
    assert!(legal_hold(&f.store, file));

    // a body that covers nothing is refused unless asked for, and pins nothing
    let none = r#"{"holdId": "N", "tenantId": "t9", "scope": {}}"#;
    let e = block(apply(by(&alice), body(none), false)).unwrap_err();
    assert!(
        matches!(&e, Error::Refused(r) if r.contains("covers no stored record")),
        "{e}"
    );
    let placed = block(apply(by(&alice), body(none), true)).unwrap();
    assert_eq!(placed.files_pinned, 0);
    // a body whose date already passed is refused
    let past = r#"{"holdId": "P", "scope": {}, "retentionOverride": {"expirationDate": "2020-01-01T00:00:00Z"}}"#;
    let e = block(apply(by(&alice), body(past), false)).unwrap_err();
    assert!(
        matches!(&e, Error::Refused(r) if r.contains("already passed")),
        "{e}"
    );
}

#[test]
fn without_the_compliance_role_nothing_changes_and_the_refusal_is_audited() {
    let f = fixture();
    let (alice, bob) = (
        session(&f.store, &f.clock, "alice"),
        session(&f.store, &f.clock, "bob"),
    );
    // carol is an analyst only; dave holds compliance for tenant t2 only
    for (user, role, tenants) in [
        ("carol", Role::Analyst, vec![]),
        ("dave", Role::Compliance, vec!["t2".to_string()]),
    ] {
        let change = Change::Grant {
            user: user.into(),
            roles: vec![role],
            tenants,
            aliases: vec![],
            display_name: None,
        };
        let crate::access::admin::Outcome::Requested(r) =
            block(crate::access::admin::request(&alice, change)).unwrap()
        else {
            panic!("a request")
        };
        block(crate::access::admin::approve(&bob, &r.id)).unwrap();
    }
    let (carol, dave) = (
        session(&f.store, &f.clock, "carol"),
        session(&f.store, &f.clock, "dave"),
    );
    let by = |s| Changer {
        session: s,
        kms: f.kms.as_ref(),
    };
    let req = r#"{"holdId": "H", "tenantId": "t1", "scope": {}}"#;
    let before = block(crate::head::newest(&f.store))
        .unwrap()
        .unwrap()
        .head
        .sequence;
    let e = block(authorize(by(&carol), "")).unwrap_err();
    assert!(
        matches!(&e, Error::Refused(r) if r.contains("compliance role")),
        "{e}"
    );
    let e = block(apply(by(&carol), body(req), false)).unwrap_err();
    assert!(matches!(e, Error::Refused(_)), "{e}");
    // compliance for another tenant does not reach t1
    let e = block(apply(by(&dave), body(req), false)).unwrap_err();
    assert!(
        matches!(&e, Error::Refused(r) if r.contains("compliance role")),
        "{e}"
    );
    assert!(block(list(&f.store)).unwrap().is_empty());
    assert_eq!(
        block(crate::head::newest(&f.store))
            .unwrap()
            .unwrap()
            .head
            .sequence,
        before,
        "nothing signed"
    );
    let refused: Vec<_> = hold_entries(&f.store)
        .into_iter()
        .map(|(a, c, h, _)| (a, c, h))
        .collect();
    let r = |a: &str, h: &str| (a.to_string(), "refused".to_string(), h.to_string());
    assert_eq!(
        refused,
        vec![r("carol", ""), r("carol", "H"), r("dave", "H")]
    );
    // within its tenant, dave may
    let t2 = r#"{"holdId": "H2", "tenantId": "t2", "scope": {}}"#;
    assert_eq!(
        block(apply(by(&dave), body(t2), false))
            .unwrap()
            .files_pinned,
        1
    );
}

#[test]
fn reconcile_repairs_a_lost_flag_and_records_a_lapse() {
    let f = fixture();
    let alice = session(&f.store, &f.clock, "alice");
    let c = Changer {
        session: &alice,
        kms: f.kms.as_ref(),
    };
    let dated = r#"{"holdId": "D", "tenantId": "t2", "scope": {}, "retentionOverride": {"expirationDate": "2026-01-01T00:00:00Z"}}"#;
    block(apply(c, body(dated), false)).unwrap();
    let file = block(list(&f.store)).unwrap()[0].files[0].clone();
    block(f.store.legal_hold(&layout::locate(&file).unwrap(), false)).unwrap();

    let audit = Audit::for_user(f.store.clone(), f.clock.clone(), "ops");
    let now = f.clock.now();
    let synced = block(reconcile(&f.store, &audit, "ops", f.kms.as_ref(), now)).unwrap();
    synced.head.unwrap();
    assert_eq!(synced.report.flags_repaired, vec![file.clone()]);
    assert!(synced.report.lapsed.is_empty());
    assert!(legal_hold(&f.store, &file));

    f.clock.set(at("2026-01-02T00:00:00Z"));
    let now = f.clock.now();
    let synced = block(reconcile(&f.store, &audit, "ops", f.kms.as_ref(), now)).unwrap();
    synced.head.unwrap();
    assert_eq!(synced.report.lapsed.len(), 1);
    assert_eq!(synced.report.lapsed[0].unpinned, vec![file.clone()]);
    assert!(!legal_hold(&f.store, &file));
    assert_eq!(head_change(&f.store), "hold sync", "the lapse is signed");
    let last = hold_entries(&f.store).pop().unwrap();
    assert_eq!(last, ("ops".into(), "lapsed".into(), "D".into(), 1));
}
