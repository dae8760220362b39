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
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The command line asked for something it cannot mean (a bad flag value, a missing
    /// argument): exit code 2, as clap's own errors.
    #[error("{0}")]
    Usage(String),
    /// Something the command needs is not there (an event, a quarantine entry, a request).
    #[error("{0}")]
    NotFound(String),
    /// The store (or the keyring beside it) is not in a state the command can run on: not a
    /// store, bound to another key, no signed head yet.
    #[error("{0}")]
    Unusable(String),
    /// Someone else changed what the command read (`retry`: running it again may succeed), or
    /// the command asks for what contradicts a choice made once (`retry: false`).
    #[error("{what}; {}", if *retry { "running the command again may succeed" } else { "running the command again will not help" })]
    Conflict { what: String, retry: bool },
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

    /// A conflict: running the command again may succeed (`retry`) or will not.
    pub fn conflict(what: impl Into<String>, retry: bool) -> Self {
        Error::Conflict {
            what: what.into(),
            retry,
        }
    }

    /// 2 for usage errors (as clap: the command line itself is wrong), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            // `--schema-version` names no version; an access change the flags cannot mean
            Error::Usage(_)
            | Error::Job(crate::job::JobError::UnknownVersion(_))
            | Error::Access(crate::access::AccessError::Invalid(_))
            | Error::Export(crate::export::ExportError::Usage(_)) => 2,
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

impl From<crate::storage::lease::LeaseError> for Error {
    fn from(e: crate::storage::lease::LeaseError) -> Self {
        Error::Job(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn only_usage_errors_exit_2_and_conflicts_say_whether_to_retry() {
        assert_eq!(Error::Usage("--now: bad".into()).exit_code(), 2);
        assert_eq!(Error::NotFound("event e1".into()).exit_code(), 1);
        assert_eq!(Error::Unusable("not a store".into()).exit_code(), 1);
        let again = Error::conflict("the hold registry changed meanwhile", true);
        assert_eq!(again.exit_code(), 1);
        assert_eq!(
            again.report(),
            "the hold registry changed meanwhile; running the command again may succeed"
        );
        let never = Error::conflict("store s is bound to KEK a", false);
        assert_eq!(never.exit_code(), 1);
        assert!(
            never
                .report()
                .ends_with("running the command again will not help")
        );
        let access = Error::Access(crate::access::AccessError::NotFound("no request".into()));
        assert_eq!(access.exit_code(), 1);
    }
}
