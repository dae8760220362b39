//! What a failed AWS KMS call means: one [`KmsError`] per fault, naming the backend, the key
//! and what to do. The SDK has already retried what its standard mode retries (throttling,
//! 5xx, connection errors and timeouts) when an error gets here.

use super::{AwsKms, KmsError};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};

/// An SDK call's error.
pub(super) type SdkError<E> = aws_sdk_kms::error::SdkError<E>;

/// The operation errors of the SDK (`EncryptError`, `DecryptError`, …).
pub(super) trait ServiceError:
    ProvideErrorMetadata + std::error::Error + Send + Sync + 'static
{
}
impl<T: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static> ServiceError for T {}

/// A failed call, before it becomes a [`KmsError`].
#[derive(Debug)]
pub(super) enum Fault {
    /// No answer: connection refused, DNS, TLS, timeouts (after every attempt).
    Unreachable(String),
    /// An answer with an error: its code (empty when the body named none), message, status.
    Service {
        code: String,
        message: String,
        status: u16,
    },
    /// Anything else (no credentials found, a request that could not be built, …).
    Other(String),
}

pub(super) fn classify<E: ServiceError>(e: SdkError<E>) -> Fault {
    match e {
        SdkError::ServiceError(ctx) => Fault::Service {
            code: ctx.err().code().unwrap_or_default().to_string(),
            message: ctx
                .err()
                .message()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect(),
            status: ctx.raw().status().as_u16(),
        },
        SdkError::TimeoutError(_) => Fault::Unreachable("timed out".into()),
        // refused, reset, hung up (`TransientError`), timed out: the SDK retried it
        SdkError::DispatchFailure(d)
            if d.is_io()
                || d.is_timeout()
                || d.as_other() == Some(aws_config::retry::ErrorKind::TransientError) =>
        {
            let detail = d
                .as_connector_error()
                .map(|c| DisplayErrorContext(c).to_string());
            Fault::Unreachable(detail.unwrap_or_else(|| "no connection".into()))
        }
        SdkError::ResponseError(r) => Fault::Service {
            code: String::new(),
            message: "an answer that is not KMS's".into(),
            status: r.raw().status().as_u16(),
        },
        other => Fault::Other(DisplayErrorContext(&other).to_string()),
    }
}

/// Codes KMS answers a ciphertext with that does not open under the key and context given.
pub(super) fn refuses_ciphertext(code: &str) -> bool {
    matches!(code, "InvalidCiphertextException" | "IncorrectKeyException")
}

const CREDENTIAL_CHAIN: &str = "set valid credentials in the AWS credential chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN for temporary ones, AWS_PROFILE, or the instance's or task's role)";

/// The error of a key KMS will not use now (`state` as `DescribeKey` or the error says).
pub(super) fn disabled(kms: &AwsKms, state: &str) -> KmsError {
    let hint = match state {
        "Disabled" => format!(
            "AWS KMS neither wraps nor unwraps under a disabled key: enable it (`aws kms enable-key --key-id {}`) or configure another key",
            kms.key
        ),
        "PendingDeletion" => format!(
            "it is scheduled for deletion, and everything it wrapped becomes unreadable when it is deleted: cancel that now (`aws kms cancel-key-deletion --key-id {}`), then enable it",
            kms.key
        ),
        _ => "check its state with `aws kms describe-key` and make it usable (Enabled)".into(),
    };
    KmsError::KeyDisabled {
        backend: kms.backend(),
        key: kms.key.clone(),
        state: state.to_string(),
        hint,
    }
}

/// The error `f` of the call `action` (the KMS API name) means.
pub(super) fn fault(kms: &AwsKms, f: Fault, action: &str) -> KmsError {
    let backend = kms.backend();
    let key = kms.key.clone();
    match f {
        Fault::Unreachable(detail) => KmsError::Unreachable {
                backend,
                detail,
                attempts: kms.attempts,
                hint: "check the endpoint (AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_KMS, if set), the region, and the network or proxy".into(),
        },
        Fault::Other(detail) if detail.contains("credentials") => KmsError::BadCredentials {
                backend,
                detail,
                hint: format!("none were found; {CREDENTIAL_CHAIN}"),
        },
        Fault::Other(detail) => KmsError::Backend {
                backend,
                key,
                problem: format!("kms:{action} failed: {detail}"),
        },
        Fault::Service {
            code,
            message,
            status,
        } => service(kms, &code, &message, status, action),
    }
}

/// The error an answer of KMS with `code` (empty: none), `message` and `status` means.
fn service(kms: &AwsKms, code: &str, message: &str, status: u16, action: &str) -> KmsError {
    let backend = kms.backend();
    let key = kms.key.clone();
    let said = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    match code {
        "ThrottlingException" | "Throttling" | "ThrottledException" | "TooManyRequestsException"
        | "RequestLimitExceeded" => KmsError::Throttled {
            backend,
            key,
            attempts: kms.attempts,
            hint: "AWS KMS answered ThrottlingException each time; wait, lower the request rate, or raise the account's KMS request quota (Service Quotas), then rerun".into(),
        },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "MissingAuthenticationToken"
        | "InvalidAccessKeyId" => KmsError::BadCredentials {
            backend,
            detail: said,
            hint: format!("they are wrong, expired or revoked; {CREDENTIAL_CHAIN}"),
        },
        // no code KMS names (an answer of another shape, like a proxy's or an emulator's)
        "" if status == 401 || status == 403 => KmsError::BadCredentials {
            backend,
            detail: format!("HTTP {status} on kms:{action}"),
            hint: format!("they are wrong, expired or revoked; {CREDENTIAL_CHAIN}"),
        },
        "AccessDeniedException" | "AccessDenied" => KmsError::PermissionDenied {
            backend,
            key,
            path: format!("kms:{action}"),
            hint: format!(
                "the credentials are valid, but neither the key policy nor an IAM policy allows kms:{action} on this key for them; grant it"
            ),
        },
        "NotFoundException" => KmsError::NoSuchKey {
            backend,
            key,
            hint: "create it or fix `key` in [kms] (an alias or key id must exist in this region and account)".into(),
        },
        "DisabledException" => disabled(kms, "Disabled"),
        "KMSInvalidStateException" => disabled(kms, &format!("not usable now ({said})")),
        _ if status >= 500
            || matches!(
                code,
                "KMSInternalException" | "DependencyTimeoutException" | "KeyUnavailableException"
            ) =>
        {
            KmsError::Backend {
                backend,
                key,
                problem: format!(
                    "kms:{action} answered {status} ({said}) after {} attempt(s); AWS KMS or the key's key store is unavailable: rerun later",
                    kms.attempts
                ),
            }
        }
        _ => KmsError::Backend {
            backend,
            key,
            problem: format!("kms:{action} answered {status}: {said}"),
        },
    }
}
