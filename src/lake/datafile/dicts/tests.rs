use super::*;
use crate::crypto::kms::WrappedKey;
use crate::crypto::{DataKey, RecordCompressor, open_record, record_aad, seal_record};
use footer::TenantDictionaryV2;
use parquet::file::metadata::KeyValue;

const OBJECT: &str = "lake/year=2025/month=10/day=01/interaction_type=CALL/part-x.parquet";

fn records(tenant: &str) -> Vec<Vec<u8>> {
    (0..120)
        .map(|i| format!(r#"{{"eventId":"{tenant}-{i}","notes":"{tenant} asked about the parcel tracking number and the refund of order {i}"}}"#).into_bytes())
        .collect()
}

fn train(records: &[Vec<u8>]) -> Dictionary {
    let samples: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    Dictionary::train(&samples).unwrap()
}

fn md(version: &str, extra: Vec<KeyValue>) -> FileMetaData {
    let w = WrappedKey {
        kek_id: "kek-1".into(),
        kek_version: 1,
        ciphertext: vec![1],
    };
    let mut kv = super::super::file_metadata("b", "p", "dek-x", &w);
    kv[1] = KeyValue::new(footer::VERSION_KEY.into(), version.to_string());
    kv.extend(extra);
    let schema = parquet::schema::types::Type::group_type_builder("schema")
        .build()
        .unwrap();
    let descr = std::sync::Arc::new(parquet::schema::types::SchemaDescriptor::new(
        std::sync::Arc::new(schema),
    ));
    FileMetaData::new(1, 0, None, Some(kv), descr, None)
}

fn b64(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
}

fn entry(tenant: &str, dek_id: &str, sealed: &[u8]) -> TenantDictionaryV2 {
    TenantDictionaryV2 {
        tenant_id: tenant.into(),
        dek_id: dek_id.into(),
        sealed: b64(sealed),
    }
}

fn tenants_kv(entries: Vec<TenantDictionaryV2>) -> KeyValue {
    KeyValue::new(
        footer::DICTIONARIES.into(),
        footer::encode_dictionaries(entries),
    )
}

/// A record of tenant A sealed as a batch seals it, with A's dictionary.
fn sealed_record(k: &DataKey, dict: &Dictionary, tenant: &str, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let aad = record_aad(tenant, "e", "i", k.id());
    seal_record(
        &k.cipher(),
        &mut RecordCompressor::default(),
        Some(dict),
        record,
        &aad,
        &mut out,
    );
    out
}

#[test]
fn records_open_with_their_own_tenants_dictionary_only() {
    let (ra, rb) = (records("tenant-a"), records("tenant-b"));
    let (da, db) = (train(&ra), train(&rb));
    let k = DataKey::generate();
    let c = k.cipher();
    let (sa, sb) = (
        da.seal(&c, DictionaryScope::Tenant("tenant-a")),
        db.seal(&c, DictionaryScope::Tenant("tenant-b")),
    );
    let good = md(
        "2",
        vec![tenants_kv(vec![
            entry("tenant-a", k.id(), &sa),
            entry("tenant-b", k.id(), &sb),
        ])],
    );
    let dicts = FileDictionaries::from_footer(&good, c.clone(), OBJECT).unwrap();
    assert_eq!(dicts.tenants(), ["tenant-a", "tenant-b"]);
    let record = sealed_record(&k, &da, "tenant-a", &ra[3]);
    let aad = record_aad("tenant-a", "e", "i", k.id());
    let a = dicts.for_tenant("tenant-a").unwrap();
    assert_eq!(
        open_record(&c, a.as_deref(), &record, &aad, &|| "r".into()).unwrap(),
        ra[3]
    );
    // B's dictionary does not decompress A's record
    let b = dicts.for_tenant("tenant-b").unwrap();
    let e = open_record(&c, b.as_deref(), &record, &aad, &|| {
        format!("event e in {OBJECT}")
    });
    let e = e.unwrap_err().to_string();
    assert!(e.contains(OBJECT) && !e.contains("parcel"), "{e}");
    assert!(
        dicts.for_tenant("tenant-c").unwrap().is_none(),
        "no dictionary: plain zstd"
    );

    // A's dictionary listed as B's (moved to another tenant's records) does not open
    let moved = md("2", vec![tenants_kv(vec![entry("tenant-b", k.id(), &sa)])]);
    let dicts = FileDictionaries::from_footer(&moved, c.clone(), OBJECT).unwrap();
    let e = dicts.for_tenant("tenant-b").err().expect("refused");
    assert!(matches!(e, CryptoError::Authentication { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains(&format!("dictionary of tenant tenant-b in {OBJECT}")),
        "{e}"
    );
    assert!(!e.contains("parcel"), "{e}");

    // sealed under another DEK: named, not tried
    let other = md(
        "2",
        vec![tenants_kv(vec![entry("tenant-a", "dek-other", &sa)])],
    );
    let dicts = FileDictionaries::from_footer(&other, c.clone(), OBJECT).unwrap();
    let e = dicts
        .for_tenant("tenant-a")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("dek-other") && e.contains(OBJECT), "{e}");
    assert!(dicts.sealed("tenant-a").is_err());
}

#[test]
fn a_version_1_file_has_one_dictionary_for_every_tenant() {
    let mut both = records("tenant-a");
    both.extend(records("tenant-b"));
    let d = train(&both);
    let k = DataKey::generate();
    let c = k.cipher();
    let shared = KeyValue::new(
        footer::DICTIONARY.into(),
        b64(&d.seal(&c, DictionaryScope::File)),
    );
    let dicts =
        FileDictionaries::from_footer(&md("1", vec![shared.clone()]), c.clone(), OBJECT).unwrap();
    assert!(dicts.shared() && dicts.tenants().is_empty());
    for (t, r) in [("tenant-a", &both[1]), ("tenant-b", &both[170])] {
        let sealed = sealed_record(&k, &d, t, r);
        let dict = dicts.for_tenant(t).unwrap();
        let aad = record_aad(t, "e", "i", k.id());
        assert_eq!(
            &open_record(&c, dict.as_deref(), &sealed, &aad, &|| "r".into()).unwrap(),
            r
        );
    }
    // the shared dictionary under another DEK fails, naming the file
    let e = FileDictionaries::from_footer(
        &md("1", vec![shared.clone()]),
        DataKey::generate().cipher(),
        OBJECT,
    )
    .unwrap()
    .for_tenant("tenant-a")
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains(&format!("dictionary of {OBJECT}")), "{e}");
    // each version's key only in its own version
    let e = FileDictionaries::from_footer(&md("2", vec![shared]), c.clone(), OBJECT).unwrap_err();
    assert!(e.to_string().contains(footer::DICTIONARY), "{e}");
    let listed = tenants_kv(vec![]);
    let e = FileDictionaries::from_footer(&md("1", vec![listed]), c, OBJECT).unwrap_err();
    assert!(e.to_string().contains(footer::DICTIONARIES), "{e}");
}
