//! `serve` (the webhook receiver, src/server) and `token add` (a bearer token for it).

use super::*;

/// Receive events over HTTP, batch them on a schedule, answer health checks and metrics
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Pipeline file with a [serve] section (and the store, retention and batch settings)
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pub pipeline: PathBuf,
    /// Overrides the pipeline's store (a path, file:///path, s3://BUCKET/PREFIX)
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: Option<crate::storage::StoreUrl>,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Check the pipeline, the tokens file, the store and its keys, then exit without
    /// listening
    #[arg(long)]
    pub check: bool,
}

impl ServeArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let ServeArgs {
            pipeline,
            store,
            keyring,
            check,
        } = self;
        let p = Pipeline::load(&pipeline)?;
        let cfg = p.serve.clone().ok_or_else(|| {
            Error::Usage(format!(
                "{}: no [serve] section (listen, tokens, batch_every_secs)",
                pipeline.display()
            ))
        })?;
        let url = store.or_else(|| p.store.path.clone()).ok_or_else(|| {
            Error::Usage(format!(
                "{}: no [store] path; pass --store",
                pipeline.display()
            ))
        })?;
        let tokens = crate::server::auth::Tokens::load(&cfg.tokens, &url).map_err(Error::Usage)?;
        let s = StoreArgs {
            store: url,
            keyring,
        };
        if crate::store::initialised(&s.store).await?.is_none() {
            init_from_pipeline(&s, &p, clock.clone(), &mut std::io::stderr()).await?;
        }
        let (store, kms) = super::kms::open_for(&s, p.kms.as_ref()).await?;
        let (_, policies) = crate::store::policies_for(&store, Some(&pipeline)).await?;
        let ctx = Arc::new(context(store, kms, clock));
        let batch = job::batch_options(Some(&p), policies);
        if check {
            let tls = crate::server::tls::acceptor(&cfg).map_err(Error::Usage)?;
            let _ = writeln!(
                out,
                "ready to serve {} on {} ({}) with {} token(s); batches every {} s",
                ctx.store.describe(),
                cfg.listen,
                if tls.is_some() { "TLS" } else { "plain HTTP" },
                tokens.len(),
                cfg.batch_every_secs
            );
            return Ok(());
        }
        crate::server::serve(ctx, cfg, tokens, batch, |addr, tls| {
            let scheme = if tls { "https" } else { "http" };
            let _ = writeln!(out, "listening on {scheme}://{addr}");
            let _ = out.flush();
        })
        .await
        .map_err(|e| Error::Usage(e.to_string()))
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a bearer token for `holdfast serve`: prints it once, keeps only its SHA-256
    #[command(
        after_help = "Example:\n  holdfast token add --tokens tokens.toml --principal genesys-prod --tenant acme --source genesys-eventbridge"
    )]
    Add {
        /// The tokens file (created 0600 if missing; keep it outside the store)
        #[arg(long)]
        tokens: PathBuf,
        /// Who the token stands for (a sending platform, or a person)
        #[arg(long)]
        principal: String,
        /// The tenant whose events the token sends
        #[arg(long)]
        tenant: Option<String>,
        /// The payload shape its events have (default: recognise each line)
        #[arg(long, value_enum)]
        source: Option<SourceKind>,
        /// The platform signs its bodies: make a shared secret too (printed once after the
        /// token, kept in the tokens file), and require X-Holdfast-Signature
        #[arg(long)]
        signed: bool,
    },
}

impl TokenCommand {
    pub(super) async fn run(self, _clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let TokenCommand::Add {
            tokens,
            principal,
            tenant,
            source,
            signed,
        } = self;
        let token = format!("hf_{}", hex::encode(rand::random::<[u8; 24]>()));
        let mut entry = format!(
            "\n[[token]]\nsha256 = \"{}\"\nprincipal = {}\n",
            crate::server::auth::token_hash(&token),
            toml_string(&principal)
        );
        if let Some(t) = &tenant {
            entry.push_str(&format!("tenant = {}\n", toml_string(t)));
        }
        if let Some(s) = source {
            entry.push_str(&format!("source = \"{}\"\n", s.name()));
        }
        let secret = signed.then(|| hex::encode(rand::random::<[u8; 32]>()));
        if let Some(secret) = &secret {
            entry.push_str(&format!("hmac_secret = \"{secret}\"\n"));
        }
        files::append_private(&tokens, entry.as_bytes())
            .map_err(|e| Error::Usage(format!("tokens file {}: {e}", tokens.display())))?;
        let _ = writeln!(out, "{token}");
        if let Some(secret) = secret {
            let _ = writeln!(out, "{secret}");
        }
        eprintln!(
            "added a token for {principal} to {}; this is the only time it is shown",
            tokens.display()
        );
        Ok(())
    }
}

/// A TOML basic string: JSON's string escapes are all valid there.
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
