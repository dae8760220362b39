use super::*;

fn hold(scope: Scope, tenant: Option<&str>) -> Hold {
    Hold {
        hold_id: "H".into(),
        tenant_id: tenant.map(str::to_string),
        scope,
        retention_override: None,
        placed_by: "a".into(),
        placed_at: DateTime::from_timestamp(1_760_000_000, 0).unwrap(),
        status: Status::Active,
        lapses_at: None,
        files: vec![],
        covered: Default::default(),
    }
}

#[test]
fn the_body_decides_the_lifetime() {
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let body = |extra: &str| {
        serde_json::from_str::<HoldRequest>(&format!(r#"{{"holdId": "H", "scope": {{}}{extra}}}"#))
            .unwrap()
    };
    assert_eq!(body("").lapse_date(now), Ok(None));
    assert_eq!(body(r#", "status": "active", "retentionOverride": {"enabled": true, "expirationDate": null}"#).lapse_date(now), Ok(None));
    let dated = body(
        r#", "retentionOverride": {"enabled": true, "expirationDate": "2031-05-14T00:00:00Z", "auditorTrail": {"caseReference": "X"}}"#,
    );
    assert_eq!(
        dated.lapse_date(now).unwrap().unwrap().to_rfc3339(),
        "2031-05-14T00:00:00+00:00"
    );
    assert!(
        body(r#", "status": "RELEASED""#)
            .lapse_date(now)
            .unwrap_err()
            .contains("hold release")
    );
    assert!(
        body(r#", "retentionOverride": {"enabled": false}"#)
            .lapse_date(now)
            .unwrap_err()
            .contains("protect nothing")
    );
    assert!(
        body(r#", "retentionOverride": {"expirationDate": "2020-01-01T00:00:00Z"}"#)
            .lapse_date(now)
            .unwrap_err()
            .contains("already passed")
    );
    assert!(
        body(r#", "retentionOverride": {"expirationDate": "soon"}"#)
            .lapse_date(now)
            .is_err()
    );
}

#[test]
fn bodies_with_unknown_keys_or_reversed_ranges_are_refused() {
    let ok = r#"{"holdId": "H", "scope": {"interactionIds": ["i"], "dateRange": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}}}"#;
    assert!(HoldRequest::parse(ok).is_ok());
    for (body, says) in [
        (
            r#"{"holdId": "H", "scope": {"interactionIDs": ["i"]}}"#,
            "unknown field `interactionIDs`",
        ),
        (
            r#"{"holdId": "H", "scope": {}, "tenant": "t"}"#,
            "unknown field `tenant`",
        ),
        (
            r#"{"holdId": "H", "scope": {"dateRange": {"start": "2024-01-01T00:00:00Z", "end": "2024-12-31T00:00:00Z", "inclusive": true}}}"#,
            "unknown field `inclusive`",
        ),
        (
            r#"{"holdId": "H", "scope": {"dateRange": {"start": "2024-12-31T00:00:00Z", "end": "2024-01-01T00:00:00Z"}}}"#,
            "is after end",
        ),
    ] {
        let e = HoldRequest::parse(body).unwrap_err();
        assert!(e.contains(says), "{body}: {e}");
    }
}

#[test]
fn scope_is_or_across_ids_and_within_the_range() {
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let range = Some(DateRange {
        start: t("2024-01-01T00:00:00Z"),
        end: t("2024-12-31T23:59:59Z"),
    });
    let h = hold(
        Scope {
            interaction_ids: vec!["i1".into()],
            queue_ids: vec!["q1".into()],
            agent_ids: vec!["a1".into()],
            date_range: range.clone(),
        },
        Some("bank"),
    );
    let in_range = t("2024-05-14T09:23:11Z");
    assert!(h.record_covered("bank", "i1", None, &[], in_range));
    assert!(h.record_covered("bank", "other", Some("q1"), &[], in_range));
    assert!(h.record_covered("bank", "other", None, &["x", "a1"], in_range));
    assert!(!h.record_covered("bank", "other", Some("q2"), &["x"], in_range));
    assert!(
        !h.record_covered("bank", "i1", None, &[], t("2025-01-01T00:00:00Z")),
        "outside the range"
    );
    assert!(
        !h.record_covered("other-bank", "i1", None, &[], in_range),
        "another tenant"
    );
    let everything = hold(
        Scope {
            date_range: range,
            ..Default::default()
        },
        None,
    );
    assert!(
        everything.record_covered("any", "any", None, &[], in_range),
        "no id list: the whole range"
    );
}
