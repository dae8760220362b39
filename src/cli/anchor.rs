//! `anchor`: one line naming the newest signed head, to publish outside the store.

use super::*;

/// Print the newest store head's digest and the signing key's fingerprint, to publish outside the store
#[derive(Debug, clap::Args)]
pub struct AnchorArgs {
    #[command(flatten)]
    pub s: StoreArgs,
}

impl AnchorArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let keyring = open(&self.s).await.ok();
        let store = match &keyring {
            Some((st, _)) => st.clone(),
            None => {
                let st = Store::open(&self.s.store, false)?;
                read_marker(&st).await?;
                st
            }
        };
        let newest = match crate::head::newest(&store).await? {
            Some(n) => n,
            // a store from before signed heads: start its chain now (needs the keyring)
            None => {
                let Some((_, kms)) = &keyring else {
                    return Err(Error::Unusable(
                        "the store has no signed head yet; run this once with its keyring to start one".into(),
                    ));
                };
                let audit = crate::audit::Audit::new(store.clone(), clock.clone());
                let c = crate::head::Committer {
                    store: &store,
                    kms: kms.as_ref(),
                    audit: &audit,
                };
                crate::head::commit(c, &crate::head::Change::new("anchor"), clock.now()).await?;
                crate::head::newest(&store)
                    .await?
                    .ok_or_else(|| Error::Unusable("no head after committing one".into()))?
            }
        };
        if !newest.head.signature_ok() {
            eprintln!(
                "head v{} does not verify with the key it names; run `holdfast verify`",
                newest.head.sequence
            );
            return Err(Error::VerifyFailed(1));
        }
        if let Some((_, kms)) = &keyring
            && let Some(k) = kms.signing_key().await?
            && k != newest.head.public_key
        {
            eprintln!(
                "head v{} is signed by {}, not by the keyring's {}; run `holdfast verify`",
                newest.head.sequence,
                newest.head.public_key.fingerprint(),
                k.fingerprint()
            );
            return Err(Error::VerifyFailed(1));
        }
        let _ = writeln!(out, "{}", newest.anchor());
        Ok(())
    }
}
