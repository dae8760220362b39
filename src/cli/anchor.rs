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
        use crate::head::verify::Anchoring;
        let keyring = open(&self.s).await.ok();
        let store = match &keyring {
            Some((st, _)) => st.clone(),
            None => crate::store::open_unkeyed(&self.s.store).await?,
        };
        let kms = keyring.as_ref().map(|(_, k)| k.as_ref());
        match crate::head::verify::anchor(&store, kms, clock).await? {
            Anchoring::Ready(a) => {
                let _ = writeln!(out, "{a}");
                Ok(())
            }
            Anchoring::BadSignature { sequence } => {
                eprintln!(
                    "head v{sequence} does not verify with the key it names; run `holdfast verify`"
                );
                Err(Error::VerifyFailed(1))
            }
            Anchoring::OtherKey {
                sequence,
                signed_by,
                keyring,
            } => {
                eprintln!(
                    "head v{sequence} is signed by {signed_by}, not by the keyring's {keyring}; run `holdfast verify`"
                );
                Err(Error::VerifyFailed(1))
            }
        }
    }
}
