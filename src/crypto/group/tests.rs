use super::*;
use crate::crypto::DataKey;
use proptest::prelude::*;

fn members(n: usize) -> Vec<(String, String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let record = format!(r#"{{"eventId":"e{i}","note":"{}"}}"#, "x".repeat(i % 7));
            (format!("e{i}"), format!("i{}", i / 3), record.into_bytes())
        })
        .collect()
}

fn seal(cipher: &Cipher, tenant: &str, ordinal: u32, m: &[(String, String, Vec<u8>)]) -> Vec<u8> {
    let list: Vec<Member<'_>> = m
        .iter()
        .map(|(e, i, r)| Member {
            event_id: e,
            interaction_id: i,
            record: r,
        })
        .collect();
    let mut out = Vec::new();
    GroupCompressor::default().seal(cipher, tenant, ordinal, &list, &mut out);
    out
}

fn what() -> String {
    "group".into()
}

#[test]
fn every_member_opens_by_its_own_ids_and_no_other() {
    let c = DataKey::generate().cipher();
    let m = members(40);
    let sealed = seal(&c, "t1", 7, &m);
    let g = OpenGroup::open(&c, "t1", 7, &sealed, &what).unwrap();
    assert_eq!(g.len(), 40);
    for (e, i, r) in &m {
        assert_eq!(g.record(e, i), Some(r.as_slice()));
    }
    // an event id with another interaction, or an event not in the group: nothing
    assert_eq!(g.record("e1", "i9"), None);
    assert_eq!(g.record("e99", "i0"), None);
}

#[test]
fn a_group_opens_only_for_its_tenant_file_and_place() {
    let c = DataKey::generate().cipher();
    let sealed = seal(&c, "t1", 3, &members(5));
    let other_tenant = OpenGroup::open(&c, "t2", 3, &sealed, &what).unwrap_err();
    assert!(matches!(other_tenant, CryptoError::Authentication { .. }));
    let other_place = OpenGroup::open(&c, "t1", 4, &sealed, &what).unwrap_err();
    assert!(matches!(other_place, CryptoError::Authentication { .. }));
    let other_file = DataKey::generate().cipher();
    assert!(OpenGroup::open(&other_file, "t1", 3, &sealed, &what).is_err());
    let mut flipped = sealed.clone();
    flipped[20] ^= 1;
    assert!(OpenGroup::open(&c, "t1", 3, &flipped, &what).is_err());
}

#[test]
fn a_sealed_group_shows_none_of_its_records() {
    let c = DataKey::generate().cipher();
    let m = members(10);
    let sealed = seal(&c, "t1", 0, &m);
    // the records' common text appears nowhere in the sealed bytes
    let text = br#"{"eventId":"e"#;
    assert!(!sealed.windows(text.len()).any(|w| w == text));
    let g = OpenGroup::open(&c, "t1", 0, &sealed, &what).unwrap();
    assert_eq!(format!("{g:?}"), "OpenGroup(10 members)");
}

#[test]
fn a_layout_that_does_not_add_up_is_refused() {
    assert!(parse(&[]).is_none());
    assert!(parse(&0u32.to_be_bytes()).is_none());
    let mut p = 1u32.to_be_bytes().to_vec();
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(&5u32.to_be_bytes());
    p.extend_from_slice(b"abcd");
    assert!(parse(&p).is_none(), "a record longer than the rest");
    p.extend_from_slice(b"ef");
    assert!(parse(&p).is_none(), "bytes left over");
    p.pop();
    assert_eq!(parse(&p).unwrap()[0].1, 24..29);
}

proptest! {
    #[test]
    fn payload_ordinals_round_trip(ordinal in any::<u32>(), sealed in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))) {
        let mut out = Vec::new();
        encode_payload(ordinal, sealed.as_deref(), &mut out);
        let (o, s) = decode_payload(&out).unwrap();
        prop_assert_eq!(o, ordinal);
        prop_assert_eq!(s, sealed.as_deref());
    }

    #[test]
    fn groups_round_trip(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40), ordinal in any::<u32>()) {
        let c = DataKey::generate().cipher();
        let m: Vec<(String, String, Vec<u8>)> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("ev-{i}"), format!("in-{}", i % 4), r))
            .collect();
        let sealed = seal(&c, "tenant", ordinal, &m);
        let g = OpenGroup::open(&c, "tenant", ordinal, &sealed, &what).unwrap();
        for (e, i, r) in &m {
            prop_assert_eq!(g.record(e, i), Some(r.as_slice()));
        }
    }
}

#[test]
fn a_truncated_payload_ordinal_is_refused() {
    assert_eq!(decode_payload(&[]), None);
    assert_eq!(decode_payload(&[0x80]), None);
    assert_eq!(decode_payload(&[0xff; 6]), None);
    assert_eq!(decode_payload(&[0x05]), Some((5, None)));
}
