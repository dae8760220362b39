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
    /// Case reference the deep check is for, if any (audited)
    #[arg(long = "case", requires = "deep")]
    pub case_ref: Option<String>,
    #[command(flatten)]
    pub who: ActorArg,
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl VerifyArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let VerifyArgs {
            s,
            deep,
            case_ref,
            who,
            format,
        } = self;
        // a deep check decrypts every record: through the gate (investigator, every tenant)
        let (store, kms, gate) = if deep {
            let d = Decrypting { s, case_ref, who };
            let (kms, gate) = d
                .open(crate::access::gate::Purpose::DeepVerify, clock.clone())
                .await?;
            (gate.session().store.clone(), Some(kms), Some(gate))
        } else {
            let st = Store::open_local(&s.store, false)?;
            read_marker(&st).await?;
            (st, None, None)
        };
        let mut report = crate::lake::verify::verify(&store, kms.as_deref()).await?;
        // the access policy's versions form a chain too
        for (object, problem) in crate::access::policy::verify_chain(&store).await? {
            report
                .problems
                .push(crate::lake::verify::Problem { object, problem });
        }
        if let Some(gate) = &gate {
            let event = crate::audit::DeepVerified {
                files: report.files,
                records: report.deep_records,
                problems: report.problems.len(),
            };
            gate.record(&event).await?;
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
