//! The connection of the S3 backend: its own I/O runtime, the AWS configuration (credential
//! chain, region, endpoint: the SDK's loader, as for AWS KMS), the `AmazonS3` client that
//! reads and writes objects, and signed requests for the calls `object_store` has no API for
//! (versions, Object Lock, bucket settings), with retries.
//!
//! Everything that touches the network runs on the backend's runtime, so callers wait on it
//! from any executor, and the connection pool stays with the runtime that opened it.

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential, Checksum};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpResponse, SpawnedReqwestConnector,
};
use object_store::{ClientOptions, CredentialProvider, RetryConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts of one control call (the first and the retries), and the first backoff.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The backend's runtime, shut down without waiting when the backend goes.
pub(super) struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Rt {
    fn new() -> Result<Self, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("holdfast-s3")
            .enable_all()
            .build()
            .map(|rt| Rt(Some(rt)))
            .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))
    }

    pub(super) fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime until drop")
            .handle()
            .clone()
    }

    /// Runs `f` on the backend's runtime and waits for it from any executor.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.handle()
            .spawn(f)
            .await
            .map_err(|e| format!("the request task failed: {e}"))
    }

    /// Runs `f` to completion from synchronous code (opening a store), also when the caller
    /// is itself inside a runtime: it waits on a thread of its own.
    pub(super) fn block_on<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        let handle = self.handle();
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(f))
                .join()
                .expect("the S3 open thread")
        })
    }
}

/// Where the bucket is and how to reach it.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) bucket: String,
    pub(super) region: String,
    /// The endpoint as configured (`AWS_ENDPOINT_URL`), or `None` for AWS itself.
    pub(super) endpoint: Option<String>,
    http: HttpClient,
    creds: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3({}, {})", self.bucket, self.region)
    }
}

/// What may replace the SDK's chain: tests point at moto with fixed credentials; the CLI
/// leaves everything to the chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) credentials: Option<aws_sdk_kms::config::Credentials>,
}

/// Loads the AWS configuration the usual way (environment, profile, web identity, ECS,
/// IMDS) and builds the clients. Returns the runtime they run on.
pub(super) fn connect(bucket: &str, over: &Overrides) -> Result<(Rt, Conn, AmazonS3), String> {
    let rt = Rt::new()?;
    let sdk = rt.block_on(loader(over).load());
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        "no AWS region for the S3 store: set AWS_REGION or a region in the profile".to_string()
    })?;
    let endpoint = sdk
        .endpoint_url()
        .map(|e| e.trim_end_matches('/').to_string());
    let provider = sdk.credentials_provider().ok_or_else(|| {
        "no AWS credentials for the S3 store: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or run with a role".to_string()
    })?;
    let creds: Arc<dyn CredentialProvider<Credential = AwsCredential>> = Arc::new(SdkCredentials {
        provider,
        handle: rt.handle(),
        cached: Mutex::new(None),
    });
    let plain_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    let options = ClientOptions::new()
        .with_allow_http(plain_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    let connector = SpawnedReqwestConnector::new(rt.handle());
    let http = connector
        .connect(&options)
        .map_err(|e| format!("cannot build the S3 HTTP client: {e}"))?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&region)
        .with_credentials(creds.clone())
        .with_checksum_algorithm(Checksum::SHA256)
        .with_client_options(options)
        .with_retry(RetryConfig {
            max_retries: ATTEMPTS as usize - 1,
            ..RetryConfig::default()
        })
        .with_http_connector(SpawnedReqwestConnector::new(rt.handle()));
    builder = match &endpoint {
        Some(e) => builder.with_endpoint(e),
        None => builder.with_virtual_hosted_style_request(true),
    };
    let s3 = builder
        .build()
        .map_err(|e| format!("cannot build the S3 client: {e}"))?;
    let conn = Conn {
        bucket: bucket.to_string(),
        region,
        endpoint,
        http,
        creds,
    };
    Ok((rt, conn, s3))
}

fn loader(over: &Overrides) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &over.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &over.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(c) = &over.credentials {
        loader = loader.credentials_provider(c.clone());
    }
    loader
}

/// The SDK's credential chain as `object_store` credentials, cached until five minutes
/// before they expire.
#[derive(Debug)]
struct SdkCredentials {
    provider: aws_sdk_kms::config::SharedCredentialsProvider,
    handle: tokio::runtime::Handle,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<std::time::SystemTime>)>>,
}

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        if let Some((c, expiry)) = self.cached.lock().expect("credentials").as_ref() {
            let fresh = expiry.is_none_or(|e| {
                e.duration_since(std::time::SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        use aws_sdk_kms::config::ProvideCredentials;
        let provider = self.provider.clone();
        let got = self
            .handle
            .spawn(async move { provider.provide_credentials().await })
            .await
            .map_err(|e| generic(format!("the credential task failed: {e}")))?
            .map_err(|e| generic(format!("no AWS credentials: {e}")))?;
        let c = Arc::new(AwsCredential {
            key_id: got.access_key_id().to_string(),
            secret_key: got.secret_access_key().to_string(),
            token: got.session_token().map(str::to_string),
        });
        *self.cached.lock().expect("credentials") = Some((c.clone(), got.expiry()));
        Ok(c)
    }
}

pub(super) fn generic(msg: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: msg.into(),
    }
}

/// A control call's answer: status, headers and body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: object_store::HeaderMap,
    pub(super) body: bytes::Bytes,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// S3's error code (`AccessDenied`, `NoSuchBucket`, …) from the body, else the status.
    pub(super) fn code(&self) -> String {
        super::xml::error_code(&self.body).unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// One control call: method, the key (`None`: the bucket), query, headers and body.
pub(super) struct Call<'a> {
    pub(super) method: reqwest::Method,
    pub(super) key: Option<&'a str>,
    pub(super) query: &'a [(&'a str, &'a str)],
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: bytes::Bytes,
}

impl<'a> Call<'a> {
    pub(super) fn new(method: reqwest::Method, key: Option<&'a str>) -> Self {
        Call {
            method,
            key,
            query: &[],
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }
    }
}

impl Conn {
    /// The URL of the bucket, or of `key` in it (path style at a configured endpoint,
    /// virtual-hosted at AWS).
    fn url(&self, key: Option<&str>, query: &[(&str, &str)]) -> String {
        let base = match &self.endpoint {
            Some(e) => format!("{e}/{}", self.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com", self.bucket, self.region),
        };
        let mut url = match key {
            Some(k) => format!("{base}/{}", encode(k, false)),
            None => format!("{base}/"),
        };
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode(k, true));
            url.push('=');
            url.push_str(&encode(v, true));
        }
        url
    }

    /// Sends a signed control call, retrying connection failures, 500s and throttling
    /// (503 SlowDown) with exponential backoff.
    pub(super) async fn send(&self, call: Call<'_>) -> Result<Answer, object_store::Error> {
        let url = self.url(call.key, call.query);
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            super::counted(1);
            let credential = self.creds.get_credential().await?;
            let mut req = HttpRequest::new(call.body.clone().into());
            *req.method_mut() = call.method.clone();
            *req.uri_mut() = url
                .parse()
                .map_err(|e| generic(format!("bad request URL {url}: {e}")))?;
            for (name, value) in &call.headers {
                let value = object_store::HeaderValue::from_str(value)
                    .map_err(|e| generic(format!("bad header {name}: {e}")))?;
                req.headers_mut().insert(*name, value);
            }
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut req, None);
            let retry = match self.http.execute(req).await {
                Ok(resp) => {
                    let answer = collect(resp).await?;
                    if !matches!(answer.status, 500 | 502 | 503 | 504) {
                        return Ok(answer);
                    }
                    last = format!("{} ({})", answer.code(), answer.status);
                    true
                }
                Err(e) => {
                    last = e.to_string();
                    true
                }
            };
            if retry && attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        Err(generic(format!(
            "{} {url}: gave up after {ATTEMPTS} attempts: {last}",
            call.method
        )))
    }
}

async fn collect(resp: HttpResponse) -> Result<Answer, object_store::Error> {
    let (parts, body) = resp.into_parts();
    let body = body
        .bytes()
        .await
        .map_err(|e| generic(format!("reading the answer: {e}")))?;
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// URI-encodes `s` as SigV4 and S3 expect: every byte but `A-Za-z0-9-._~` (and `/` in a
/// key) as `%XX`.
pub(super) fn encode(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !query => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn keys_and_query_values_are_encoded_as_sigv4_wants() {
        assert_eq!(
            encode("lake/year=2026/a b+c.parquet", false),
            "lake/year%3D2026/a%20b%2Bc.parquet"
        );
        assert_eq!(encode("a/b", true), "a%2Fb");
        assert_eq!(encode("~x-y_z.", false), "~x-y_z.");
    }
}
