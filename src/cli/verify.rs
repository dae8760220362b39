//! `verify`: hashes, counts and chains, with no key (`--deep` decrypts, audited).

use super::*;

/// Check the store against its signed head: manifests, data files, audit trail, holds and locks (no key needed); exit 1 on any problem
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Also decrypt every record, check its AAD and record_hash, and recompute its index columns (needs the keyring; audited)
    #[arg(long)]
    pub deep: bool,
    /// Case reference the deep check is for, if any (audited)
    #[arg(long = "case", requires = "deep")]
    pub case_ref: Option<String>,
    #[command(flatten)]
    pub who: ActorArg,
    /// A line `holdfast anchor` printed earlier and published outside the store: its head
    /// must be in the chain, and the chain must extend it
    #[arg(long)]
    pub anchor: Option<String>,
    /// Output format
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
            anchor,
            format,
        } = self;
        let anchor = anchor
            .as_deref()
            .map(str::parse::<crate::head::Anchor>)
            .transpose()
            .map_err(|e| Error::Usage(format!("--anchor: {e}")))?;
        // a deep check decrypts every record: through the gate (investigator, every tenant);
        // otherwise the keyring, when at hand, must hold the key the heads are signed with
        let (store, kms, gate) = if deep {
            let d = Decrypting { s, case_ref, who };
            let (kms, gate) = d
                .open(crate::access::gate::Purpose::DeepVerify, clock.clone())
                .await?;
            (gate.session().store.clone(), Some(kms), Some(gate))
        } else {
            match open(&s).await {
                Ok((st, k)) => (st, Some(k), None),
                Err(_) => (crate::store::open_unkeyed(&s.store).await?, None, None),
            }
        };
        let req = crate::head::verify::Request {
            keyring: kms.as_deref(),
            deep: gate.as_ref(),
            anchor: anchor.as_ref(),
        };
        let report = crate::head::verify::verify(&store, clock, req).await?;
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
        match &self.head {
            Some(h) => writeln!(
                f,
                "head v{} {} signed by {} ({} version(s)); audit trail {} entr(ies)",
                h.sequence, h.sha256, h.key_fingerprint, self.head_versions, self.audit_entries
            )?,
            None => writeln!(f, "no signed head yet")?,
        }
        if let Some(a) = &self.anchor {
            writeln!(f, "checked against the published anchor: {a}")?;
        }
        for o in &self.leftovers {
            writeln!(
                f,
                "note: uncommitted file {o} (left by an interrupted batch or sweep; the next batch removes it, audited)"
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
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
