//! Top-level error: wraps each module's error so that `cli` can pick an exit code and print
//! the cause chain. Messages never contain payload plaintext or key material.

use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error(transparent)]
    Landing(#[from] crate::landing::LandingError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Job(#[from] crate::job::JobError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error("audit trail broken at {0}")]
    AuditBroken(String),
    #[error("refused (audited): {0}")]
    Refused(String),
    #[error(transparent)]
    Sweep(#[from] crate::retention::SweepError),
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("verification failed: {0} problem(s) found")]
    VerifyFailed(usize),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// 2 for usage errors (as clap), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::Job(crate::job::JobError::UnknownVersion(_))
            | Error::Access(crate::access::AccessError::Invalid(_)) => 2,
            _ => 1,
        }
    }

    /// The error and its causes, one per line.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut src = std::error::Error::source(self);
        let mut last = out.clone();
        while let Some(e) = src {
            let s = e.to_string();
            if !last.contains(&s) {
                let _ = write!(out, "\n  caused by: {s}");
            }
            last = s;
            src = e.source();
        }
        out
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
