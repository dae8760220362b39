use super::*;
use crate::crypto::kms::WrappedKey;
use crate::format::{altered, golden, ts};
use crate::lake::LakeError;

const OLD: &str = "lake/year=2026/month=01/day=02/interaction_type=CALL/part-20260102T030405Z-0a1b2c3d-FINRA_4511_6Y.parquet";
const NEW: &str = "lake/year=2026/month=01/day=02/interaction_type=CALL/part-20260301T000000Z-00000001-FINRA_4511_6Y.parquet";

fn sample() -> Manifest {
    let file = DataFileEntry {
        path: NEW.into(),
        sha256: "01".repeat(32),
        size_bytes: 4096,
        record_count: 12,
        min_occurred_at: ts("2026-01-02T00:00:01Z"),
        max_occurred_at: ts("2026-01-02T23:59:59.999999Z"),
        earliest_expiry: ts("2032-01-02T00:00:01Z"),
        latest_expiry: ts("2032-01-03T00:00:00Z"),
        tenant_ids: vec!["tenant-1".into(), "tenant-2".into()],
        policy_ids: vec!["FINRA_4511_6Y".into()],
        encryption: FileEncryption {
            algorithm: "AES-256-GCM".into(),
            compression: "zstd".into(),
            aad: "holdfast.record.v1".into(),
            dek_id: "dek-0123".into(),
            wrapped_dek: WrappedKey {
                kek_id: "kek-0011223344556677".into(),
                kek_version: 1,
                ciphertext: vec![9; 8],
            },
        },
        batch_id: "20260301T000000Z-00000001".into(),
        added_at: ts("2026-03-01T00:00:02Z"),
        interactions: None,
        object_version: None,
    };
    Manifest {
        partition: Partition::new(2026, 1, 2, "CALL").unwrap(),
        sequence: 3,
        previous: Some(PreviousVersion {
            sequence: 2,
            sha256: "02".repeat(32),
        }),
        committed_at: ts("2026-03-01T00:00:03Z"),
        batch_id: "20260301T000000Z-00000001".into(),
        files: vec![file],
        removed: vec![RemovedFile {
            path: OLD.into(),
            sha256: "03".repeat(32),
            record_count: 20,
            latest_expiry: ts("2032-01-03T00:00:00Z"),
            removed_at: ts("2026-03-01T00:00:02Z"),
            sweep_id: "20260301T000000Z-00000001".into(),
            replaced_by: Some(NEW.into()),
            records_kept: Some(12),
            deleted_at: None,
        }],
    }
}

#[test]
fn version_1_is_frozen_and_still_reads() {
    let bytes = encode_v1(&sample()).unwrap();
    golden("manifest-v1.json", &bytes);
    assert_eq!(decode(&bytes).unwrap(), sample());
    assert_ne!(
        sample().to_bytes().unwrap(),
        bytes,
        "version 2 is written now"
    );
}

fn sample_v2() -> Manifest {
    let mut m = sample();
    let ids = ["conv-1", "conv-2"].map(super::super::filter::hash);
    m.files[0].interactions = Some(InteractionFilter::of_hashes(&ids.into()));
    m
}

#[test]
fn version_2_is_frozen_and_reads_back() {
    let bytes = encode(&sample_v2()).unwrap();
    golden("manifest-v2.json", &bytes);
    assert_eq!(decode(&bytes).unwrap(), sample_v2());
    assert_eq!(sample_v2().to_bytes().unwrap(), bytes);
    let f = decode(&bytes).unwrap().files[0]
        .interactions
        .clone()
        .unwrap();
    assert!(f.may_contain("conv-1") && f.may_contain("conv-2"));
    // an entry without a filter stays without one
    assert_eq!(decode(&encode(&sample()).unwrap()).unwrap(), sample());
    // a filter of another scheme, or bits that are not a power of two of words, is refused
    let text = String::from_utf8(bytes.clone()).unwrap();
    let other = text.replace("fnv1a64-fmix64", "xxh64");
    assert!(matches!(
        decode(other.as_bytes()),
        Err(FormatError::Invalid { .. })
    ));
}

fn sample_v3() -> Manifest {
    let mut m = sample_v2();
    m.files[0].object_version = Some("3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into());
    m
}

#[test]
fn version_3_is_frozen_reads_back_and_is_written_only_with_object_versions() {
    let bytes = encode(&sample_v3()).unwrap();
    golden("manifest-v3.json", &bytes);
    assert_eq!(decode(&bytes).unwrap(), sample_v3());
    assert_eq!(sample_v3().to_bytes().unwrap(), bytes);
    // without object versions (a local store) the bytes are version 2's, as before
    let v2 = encode(&sample_v2()).unwrap();
    assert!(String::from_utf8(v2).unwrap().contains(r#""version": "2""#));
    // version 2 does not take an object version
    let text = String::from_utf8(bytes).unwrap();
    let as_v2 = text.replace(r#""version": "3""#, r#""version": "2""#);
    assert!(decode(as_v2.as_bytes()).is_err());
}

#[test]
fn other_formats_versions_and_paths_are_refused() {
    let bytes = encode(&sample()).unwrap();
    let e = decode(&altered(&bytes, "version", "4")).unwrap_err();
    assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
    let e = decode(&altered(&bytes, "format", "holdfast.holds")).unwrap_err();
    assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
    let e = decode(&altered(&bytes, "partition", "year=2026/month=1")).unwrap_err();
    assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
    // a file entry naming another kind of object is refused, on read and on write
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace(NEW, "head/v00000000000000000001.json");
    assert!(matches!(
        decode(text.as_bytes()),
        Err(FormatError::Invalid { .. })
    ));
    let mut m = sample();
    m.files[0].path = "_locks/x.lock.json".into();
    assert!(matches!(m.to_bytes(), Err(LakeError::Corrupt { .. })));
    // the typed error reaches the caller as Corrupt, naming the object
    let path =
        "manifests/year=2026/month=01/day=02/interaction_type=CALL/v00000000000000000003.json";
    let e = Manifest::from_bytes(&altered(&bytes, "version", "9"), path).unwrap_err();
    assert!(
        matches!(&e, LakeError::Corrupt { object, problem } if object == path
            && problem.contains("holdfast.manifest version 9 is not one this holdfast reads")),
        "{e}"
    );
}
