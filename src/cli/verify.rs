//! `verify`: hashes, counts and chains, with no key (`--deep` decrypts, audited).

use super::*;

/// Check manifests and data files (hashes, sizes, counts, chains) without a key; exit 1 on mismatch
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Also decrypt every record and check its AAD and record_hash (needs the keyring; audited)
    #[arg(long)]
    pub deep: bool,
    /// Who runs the deep check (recorded in the audit trail)
    #[arg(long, env = "HOLDFAST_ACTOR", default_value = "holdfast-verify")]
    pub actor: String,
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl VerifyArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let VerifyArgs {
            s,
            deep,
            actor,
            format,
        } = self;
        let (store, kms) = if deep {
            let (st, k) = open(&s).await?;
            (st, Some(k))
        } else {
            let st = Store::open_local(&s.store, false)?;
            read_marker(&st).await?;
            (st, None)
        };
        let report = crate::lake::verify::verify(&store, kms.as_deref()).await?;
        if deep {
            let event = crate::audit::DeepVerified {
                files: report.files,
                records: report.deep_records,
                problems: report.problems.len(),
            };
            crate::audit::Audit::new(store.clone(), clock.clone())
                .record(&actor, None, &event)
                .await?;
        }
        output::write_report(format.unwrap_or(Format::Table), &report, out)?;
        if report.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::VerifyFailed(report.problems.len()))
        }
    }
}

impl std::fmt::Display for crate::lake::verify::VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verified {} partition(s), {} manifest version(s), {} file(s), {} record(s), {} bytes",
            self.partitions, self.manifest_versions, self.files, self.records, self.bytes
        )?;
        if self.deep_records > 0 {
            writeln!(
                f,
                "deep: {} record(s) decrypted and checked against record_hash and AAD",
                self.deep_records
            )?;
        }
        for o in &self.orphans {
            writeln!(
                f,
                "note: uncommitted file {o} (left by an interrupted batch; the next batch removes it)"
            )?;
        }
        if self.removed_files > 0 {
            writeln!(
                f,
                "history: {} file(s) and {} record(s) removed by retention sweeps (see the removals table)",
                self.removed_files, self.removed_records
            )?;
        }
        for a in &self.awaiting_deletion {
            writeln!(
                f,
                "note: {a} was rewritten by a retention sweep and is deleted once its storage lock runs out"
            )?;
        }
        for p in &self.problems {
            writeln!(f, "MISMATCH {}: {}", p.object, p.problem)?;
        }
        write!(
            f,
            "{}",
            if self.problems.is_empty() {
                "OK"
            } else {
                "FAILED"
            }
        )
    }
}
