//! The stored head (`holdfast.head` version 1) is frozen: golden bytes and typed refusals.

use super::*;
use crate::format::{altered, golden, ts};

fn sample() -> Head {
    Head {
        sequence: 3,
        previous: Some(Position {
            sequence: 2,
            sha256: "ab".repeat(32),
        }),
        committed_at: ts("2026-01-02T03:04:05Z"),
        change: "batch 20260102T030405Z-0a1b2c3d".into(),
        partitions: [(
            Partition::new(2026, 1, 2, "CALL").unwrap(),
            Position {
                sequence: 7,
                sha256: "cd".repeat(32),
            },
        )]
        .into(),
        registries: [
            (
                AUDIT.to_string(),
                Position {
                    sequence: 9,
                    sha256: "ef".repeat(32),
                },
            ),
            (
                HOLDS.to_string(),
                Position {
                    sequence: 1,
                    sha256: "12".repeat(32),
                },
            ),
        ]
        .into(),
        public_key: PublicKey([5; 32]),
        signature: vec![6; 64],
    }
}

#[test]
fn version_1_is_frozen_and_reads_back() {
    let bytes = sample().to_bytes();
    golden("head-v1.json", &bytes);
    assert_eq!(Head::from_bytes(&bytes, "head/x").unwrap(), sample());
}

#[test]
fn other_formats_and_versions_are_refused_naming_the_object() {
    let bytes = sample().to_bytes();
    let path = layout::HeadPath::new(3).to_path().to_string();
    let e = Head::from_bytes(&altered(&bytes, "version", "2"), &path).unwrap_err();
    assert!(
        matches!(&e, LakeError::Corrupt { object, problem } if *object == path
            && problem.contains("holdfast.head version 2 is not one this holdfast reads")),
        "{e}"
    );
    let e = Head::from_bytes(&altered(&bytes, "format", "holdfast.manifest"), &path).unwrap_err();
    assert!(e.to_string().contains("\"holdfast.manifest\""), "{e}");
}
