//! Helpers shared by the integration tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

/// This host's name, as a lease records it.
pub fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test-build hook that stands in for the OS user (see `src/hooks.rs`).
pub const OS_USER_VAR: &str = "HOLDFAST_TEST_OS_USER";
/// The OS user every command runs as unless a test says otherwise; it ran `init`, so it is
/// the store's only administrator and holds every role.
pub const OPERATOR: &str = "test-operator";

/// A store and a keyring in a fresh temporary directory (keyring outside the store), or a
/// store in a moto bucket ([`Env::s3`], [`Env::on`]).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub keyring: PathBuf,
    /// An S3 store's URL (`HOLDFAST_STORE` then names it instead of `store`).
    pub url: Option<String>,
    /// Variables every command gets (an S3 store's endpoint and credentials).
    pub vars: Vec<(&'static str, String)>,
    /// On S3: moto's clock for the bucket follows each command's (see [`Env::cmd_at`]).
    pub clock_follows: bool,
    /// moto's clock for the bucket is set (not the real time).
    clock_set: std::sync::atomic::AtomicBool,
}

/// moto's address (tests/run.sh starts it): `None`, saying why, when it is missing; a panic
/// under `CI=true`.
pub fn moto(test: &str) -> Option<String> {
    match std::env::var("HOLDFAST_TEST_MOTO_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: CI=true and no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset); run tests/run.sh"
            )
        }
        Err(_) => {
            eprintln!("{test}: skipped: no moto (HOLDFAST_TEST_MOTO_ENDPOINT unset)");
            None
        }
    }
}

/// The test Python environment (`HOLDFAST_TEST_PYTHON`, with boto3, pyarrow, DuckDB):
/// `None`, saying why, when it is missing; a panic under `CI=true`.
pub fn python(test: &str) -> Option<std::ffi::OsString> {
    match std::env::var_os("HOLDFAST_TEST_PYTHON") {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: CI=true but HOLDFAST_TEST_PYTHON is not set: run tests/run.sh")
        }
        None => {
            eprintln!("{test}: skipped: HOLDFAST_TEST_PYTHON not set (tests/run.sh sets it)");
            None
        }
    }
}

/// A plain HTTP/1.1 request to moto (which does not check signatures unless told to): the
/// status code. The object it writes is public: moto refuses an unsigned overwrite of one
/// that is not.
fn moto_http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    let headers = [
        ("x-amz-acl", "public-read"),
        ("content-type", "application/octet-stream"),
    ];
    http(endpoint, method, path, &headers, body).0
}

/// One HTTP/1.1 request over a new connection (`base`: `http://host:port`): the status and
/// the body.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    try_http(base, method, path, headers, body)
        .unwrap_or_else(|| panic!("{method} {base}{path}: no answer"))
}

/// [`http`], or `None` when the connection fails or ends before a status line.
pub fn try_http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::Read;
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).ok()?;
    let _ = s.write_all(body); // a server may answer (413) before reading it all
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// The variables that reach moto as S3 (and nothing of the machine's own AWS setup).
pub fn moto_vars(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIDHOLDFASTTEST".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "holdfast-test-secret-0123456789".into(),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
    ]
}

/// A bucket name no other test uses.
pub fn unique_bucket(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}-{:x}",
        std::process::id(),
        n & 0xffff_ffff_ffff
    )
}

/// Where a test's store lives: a local directory, or a bucket on moto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

impl Backend {
    /// `Some(Backend::S3)` when moto runs; `None`, saying why, without it (a panic under
    /// `CI=true`: see [`moto`]).
    pub fn s3(test: &str) -> Option<Self> {
        moto(test).map(|_| Backend::S3)
    }
}

/// Runs each named test function (`fn NAME(backend: Backend)`) on both backends: as test
/// `NAME::local` on a local store and `NAME::s3` in a moto bucket. The function makes its
/// store with [`Env::on`]; a function left out of the list is dead code, which the lints
/// refuse.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name($crate::common::Backend::Local)
            }
            #[test]
            fn s3() {
                if let Some(b) = $crate::common::Backend::s3(module_path!()) {
                    super::$name(b)
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;

impl Env {
    pub fn new() -> Self {
        Self::init_with(&[])
    }

    /// A fresh store on `backend`.
    pub fn on(backend: Backend) -> Self {
        Self::on_with(backend, &[])
    }

    /// A fresh store on `backend`, initialised with extra `init` arguments.
    pub fn on_with(backend: Backend, extra: &[&str]) -> Self {
        match backend {
            Backend::Local => Self::init_with(extra),
            Backend::S3 => {
                let mut env = Self::s3_with("Env::on(S3)", extra)
                    .expect("a test on S3 runs only when moto does (Backend::s3)");
                env.clock_follows = true;
                env
            }
        }
    }

    /// A local store initialised with extra `init` arguments (e.g.
    /// `--retention-floor-days`, `--group-readable`).
    pub fn init_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let keyring = dir.path().join("keys").join("keyring.json");
        let env = Env {
            dir,
            store,
            keyring,
            url: None,
            vars: Vec::new(),
            clock_follows: false,
            clock_set: Default::default(),
        };
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        env.ok(&args);
        env
    }

    /// A store at `s3://<new bucket>/store` on moto, made by `init --create-bucket`; `None`
    /// without moto (outside CI).
    pub fn s3(test: &str) -> Option<Self> {
        Self::s3_with(test, &[])
    }

    /// [`Env::s3`] with extra `init` arguments.
    pub fn s3_with(test: &str, extra: &[&str]) -> Option<Self> {
        let endpoint = moto(test)?;
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            store: dir.path().join("no-local-store"),
            keyring: dir.path().join("keys").join("keyring.json"),
            dir,
            url: Some(format!("s3://{}/store", unique_bucket("holdfast-it"))),
            vars: moto_vars(&endpoint),
            clock_follows: false,
            clock_set: Default::default(),
        };
        let mut args = vec!["init", "--create-bucket"];
        args.extend_from_slice(extra);
        env.ok(&args);
        Some(env)
    }

    /// What an S3 store holds under `sub` (`tests/s3/objects.py`: current keys, versions and
    /// delete markers), read with boto3 from the test Python environment.
    pub fn s3_objects(&self, sub: &str) -> serde_json::Value {
        self.s3_objects_with(sub, &[])
    }

    /// [`Env::s3_objects`] with the script's options (`--modes`).
    pub fn s3_objects_with(&self, sub: &str, options: &[&str]) -> serde_json::Value {
        let prefix = format!("store/{sub}");
        let args: Vec<&str> = [prefix.as_str()]
            .into_iter()
            .chain(options.iter().copied())
            .collect();
        serde_json::from_str(&self.s3_script("objects.py", &args)).unwrap()
    }

    /// Runs `tests/s3/SCRIPT` (boto3 on moto) against the store's bucket; its stdout.
    fn s3_script(&self, script: &str, args: &[&str]) -> String {
        let python = python(script).expect("HOLDFAST_TEST_PYTHON for S3 tests");
        let out = Command::new(python)
            .arg(repo().join("tests/s3").join(script))
            .arg(&self.vars[0].1)
            .arg(self.bucket())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The S3 store's bucket.
    pub fn bucket(&self) -> &str {
        let url = self.url.as_deref().expect("an S3 store");
        url["s3://".len()..].split('/').next().unwrap()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        use std::sync::atomic::Ordering;
        if self.clock_follows && self.clock_set.swap(false, Ordering::SeqCst) {
            self.set_s3_clock("real");
        }
        let mut c = Command::new(bin());
        c.args(args)
            .env("HOLDFAST_STORE", &self.store)
            .env("HOLDFAST_KEYRING", &self.keyring)
            .env(OS_USER_VAR, OPERATOR)
            .env_remove("HOLDFAST_ACTOR")
            .env_remove("HOLDFAST_FAILPOINT")
            .env_remove("HOLDFAST_NOW")
            .current_dir(repo());
        if let Some(url) = &self.url {
            c.env("HOLDFAST_STORE", url);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// A command run by another OS user (`HOLDFAST_TEST_OS_USER`, a test-build hook).
    pub fn cmd_as(&self, os_user: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env(OS_USER_VAR, os_user);
        c
    }

    pub fn run_as(&self, os_user: &str, args: &[&str]) -> Output {
        self.cmd_as(os_user, args).output().unwrap()
    }

    /// Runs as `os_user` and asserts exit 0; returns stdout.
    pub fn ok_as(&self, os_user: &str, args: &[&str]) -> String {
        let out = self.run_as(os_user, args);
        assert!(
            out.status.success(),
            "holdfast {args:?} as {os_user} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Adds `os_user` as the second administrator, with `roles` besides (the one change the
    /// sole administrator makes alone), so that two-person actions can run.
    pub fn second_person(&self, os_user: &str, roles: &[&str]) {
        let mut args = vec!["access", "grant", "--user", os_user, "--role", "admin"];
        for r in roles {
            args.extend(["--role", r]);
        }
        let out = self.ok(&args);
        assert!(out.contains("applied"), "{out}");
    }

    /// Asks for a policy change as the operator and approves it as `approver`, an
    /// administrator added with [`Env::second_person`].
    pub fn change_policy(&self, approver: &str, args: &[&str]) {
        let out = self.ok(args);
        let id = out
            .split_whitespace()
            .nth(1)
            .filter(|id| id.starts_with('R'))
            .unwrap_or_else(|| panic!("no request id in {out:?}"))
            .to_string();
        self.ok_as(approver, &["access", "approve", "--request", &id]);
    }

    /// A command whose clock is pinned at `now` (`HOLDFAST_NOW`, a test-build hook). On a
    /// store made by [`Env::on`] moto's clock for the bucket moves to `now` as well (its
    /// Object Lock checks and its `Date`), so that a sweep years ahead finds S3 agreeing;
    /// the next command without a pinned clock moves it back to the real time.
    pub fn cmd_at(&self, now: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        if self.clock_follows {
            self.set_s3_clock(now);
            self.clock_set
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        c.env("HOLDFAST_NOW", now);
        c
    }

    /// Sets the time moto uses for this store's bucket (tests/s3/moto_server.py); `real`:
    /// the real time.
    fn set_s3_clock(&self, now: &str) {
        let endpoint = &self.vars[0].1;
        let created = moto_http(endpoint, "PUT", "/holdfast-test-clock", b"");
        assert!(created == 200 || created == 409, "clock bucket: {created}");
        let path = format!("/holdfast-test-clock/{}", self.bucket());
        let status = moto_http(endpoint, "PUT", &path, now.as_bytes());
        assert_eq!(status, 200, "setting moto's clock for {path}");
    }

    pub fn run_at(&self, now: &str, args: &[&str]) -> Output {
        self.cmd_at(now, args).output().unwrap()
    }

    /// Runs at `now` and asserts exit 0; returns stdout.
    pub fn ok_at(&self, now: &str, args: &[&str]) -> String {
        let out = self.run_at(now, args);
        assert!(
            out.status.success(),
            "holdfast {args:?} at {now} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `args` with the test build's failpoint `point` armed (the run is expected to die
    /// there; the caller checks).
    pub fn run_failing_at(&self, point: &str, args: &[&str]) -> Output {
        self.cmd(args)
            .env("HOLDFAST_FAILPOINT", point)
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "holdfast {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    pub fn ingest(&self, path: &Path) {
        self.ok(&["ingest", path.to_str().unwrap()]);
    }

    /// Ingests with the clock pinned at `now` (the lines' arrival time).
    pub fn ingest_at(&self, now: &str, path: &Path) {
        self.ok_at(now, &["ingest", path.to_str().unwrap()]);
    }

    pub fn batch(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["batch", "--format", "json"])).unwrap()
    }

    /// A batch with the clock pinned at `now`; its JSON report.
    pub fn batch_at(&self, now: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok_at(now, &["batch", "--format", "json"])).unwrap()
    }

    /// Rows of a query as JSON objects.
    pub fn query(&self, sql: &str) -> Vec<serde_json::Value> {
        self.ok(&["query", "--format", "ndjson", sql])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows[0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_i64()
            .unwrap()
    }

    pub fn verify(&self) -> (bool, serde_json::Value) {
        let out = self.run(&["verify", "--format", "json"]);
        (
            out.status.success(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    }

    /// Every file under the store, recursively (an S3 store's current objects, downloaded
    /// to a folder of their own).
    pub fn store_files(&self) -> Vec<PathBuf> {
        self.store_files_in().1
    }

    /// The folder [`Env::store_files`] lists (the store, or an S3 store's download), and the
    /// files.
    fn store_files_in(&self) -> (PathBuf, Vec<PathBuf>) {
        if self.url.is_some() {
            // a folder of its own per call: tests sharing one store list it at once
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let mirror = self.dir.path().join(format!("s3-mirror-{n}"));
            let r = self.s3_objects_with("", &["--download", mirror.to_str().unwrap()]);
            let mut v: Vec<PathBuf> = r["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| PathBuf::from(f.as_str().unwrap()))
                .collect();
            v.sort();
            return (mirror, v);
        }
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out)
                } else {
                    out.push(p)
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.store, &mut v);
        v.sort();
        (self.store.clone(), v)
    }

    /// Every file of the store as (path relative to the store, bytes), sorted: the same on
    /// both backends, so that two snapshots compare.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let (root, files) = self.store_files_in();
        files
            .into_iter()
            .map(|p| {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let bytes = std::fs::read(&p).unwrap();
                (rel, bytes)
            })
            .collect()
    }

    /// Whether store file `rel` is there (on S3: a current version, no delete marker).
    pub fn exists(&self, rel: &str) -> bool {
        self.keys(rel).iter().any(|k| k == rel)
    }

    /// The store's files under `sub` (relative to the store, sorted), on either backend.
    pub fn keys(&self, sub: &str) -> Vec<String> {
        if self.url.is_some() {
            let r = self.s3_objects(sub);
            let strip = "store/";
            return r["current"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap()[strip.len()..].to_string())
                .collect();
        }
        let (root, files) = self.store_files_in();
        files
            .into_iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|k| k.starts_with(sub))
            .collect()
    }

    /// Runs `tests/s3/tamper.py` against the S3 store's bucket; what it prints.
    pub fn s3_tamper(&self, args: &[&str]) -> String {
        self.s3_script("tamper.py", args).trim().to_string()
    }

    /// The bytes of store file `rel` (its current version on S3).
    pub fn read_file(&self, rel: &str) -> Vec<u8> {
        if self.url.is_none() {
            return std::fs::read(self.store.join(rel)).unwrap();
        }
        let out = self.dir.path().join("s3-get");
        self.s3_tamper(&["get", &format!("store/{rel}"), out.to_str().unwrap()]);
        std::fs::read(out).unwrap()
    }

    /// Replaces store file `rel` with `bytes` behind holdfast's back: in place on disk (file
    /// modes stop no attacker), as a new version on S3.
    pub fn tamper_write(&self, rel: &str, bytes: &[u8]) {
        if self.url.is_none() {
            use std::os::unix::fs::PermissionsExt;
            let p = self.store.join(rel);
            if p.exists() {
                let mode = std::fs::Permissions::from_mode(0o644);
                std::fs::set_permissions(&p, mode).unwrap();
            }
            std::fs::write(p, bytes).unwrap();
            return;
        }
        let file = self.write("s3-put", bytes);
        self.s3_tamper(&["overwrite", &format!("store/{rel}"), file.to_str().unwrap()]);
    }

    /// Removes store file `rel`, or every file under folder `rel/`, behind holdfast's back:
    /// gone from disk; on S3 every version the bucket lets go is deleted, and a delete marker
    /// hides each key whose versions Object Lock kept.
    pub fn tamper_remove(&self, rel: &str) {
        if self.url.is_none() {
            let p = self.store.join(rel.trim_end_matches('/'));
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
            return;
        }
        self.s3_tamper(&["wipe", &format!("store/{rel}")]);
    }

    /// The local store opened in this process, and a runtime to drive it.
    fn local_store(&self) -> (holdfast::storage::Store, tokio::runtime::Runtime) {
        assert!(self.url.is_none(), "an S3 store is read through boto3");
        let url = holdfast::storage::StoreUrl::local(&self.store);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (holdfast::storage::Store::open(&url, false).unwrap(), rt)
    }

    /// The storage layer's lock on store file `rel` (on S3: its Object Lock, read with
    /// boto3).
    pub fn storage_lock(&self, rel: &str) -> holdfast::storage::Lock {
        if self.url.is_some() {
            let out = self.s3_tamper(&["lock", &format!("store/{rel}")]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            return holdfast::storage::Lock {
                legal_hold: v["legal_hold"].as_bool().unwrap(),
                retain_until: v["retain_until"]
                    .as_str()
                    .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc()),
            };
        }
        let (store, rt) = self.local_store();
        rt.block_on(store.lock(&object_store::path::Path::from(rel)))
            .unwrap()
    }

    /// Sets or clears the storage layer's legal-hold flag on `rel` behind holdfast's back.
    pub fn set_storage_legal_hold(&self, rel: &str, on: bool) {
        if self.url.is_some() {
            let status = if on { "ON" } else { "OFF" };
            self.s3_tamper(&["legal-hold", &format!("store/{rel}"), status]);
            return;
        }
        let (store, rt) = self.local_store();
        rt.block_on(store.legal_hold(&object_store::path::Path::from(rel), on))
            .unwrap();
    }

    /// The newest version of the hold registry, as stored (empty before the first hold).
    pub fn hold_registry(&self) -> holdfast::retention::hold::Registry {
        match self.keys("holds/").pop() {
            Some(newest) => serde_json::from_slice(&self.read_file(&newest)).unwrap(),
            None => holdfast::retention::hold::Registry {
                sequence: 0,
                previous_sha256: None,
                holds: Vec::new(),
            },
        }
    }

    /// Plants a version of lease `name` (`batch`, `holds`) as another holder would have
    /// written it.
    pub fn plant_lease(&self, name: &str, token: u64, host: &str, pid: u32, expires_at: &str) {
        let dir = self.store.join("_leases").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let v = serde_json::json!({
            "format": "holdfast.lease", "version": "1", "token": token,
            "holder": format!("{name} of another process"), "host": host, "pid": pid,
            "acquired_at": "2026-01-01T00:00:00Z", "expires_at": expires_at, "released": false
        });
        std::fs::write(dir.join(format!("v{token:020}.json")), v.to_string()).unwrap();
    }

    /// The latest version of lease `name`, if any.
    pub fn lease(&self, name: &str) -> Option<serde_json::Value> {
        let dir = self.store.join("_leases").join(name);
        let latest = std::fs::read_dir(dir)
            .ok()?
            .map(|e| e.unwrap().path())
            .max()?;
        Some(serde_json::from_slice(&std::fs::read(latest).unwrap()).unwrap())
    }

    pub fn landing_segments(&self) -> usize {
        if self.url.is_some() {
            return self.s3_objects("landing/")["current"]
                .as_array()
                .unwrap()
                .len();
        }
        std::fs::read_dir(self.store.join("landing"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    }
}

/// The real time plus `n` times two lease expiries: a run pinned there finds the lease of a
/// run killed before it expired (liveness is the expiry alone, not the holder's pid).
pub fn after_lease_expiry(n: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = 2 * holdfast::job::LEASE_EXPIRY.as_secs() as i64;
    chrono::DateTime::from_timestamp(now + i64::from(n) * step, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Deterministic canonical events with secrets that must never appear in plaintext.
pub struct Gen {
    pub ndjson: Vec<u8>,
    pub unique: usize,
    pub customer_addresses: Vec<String>,
    pub notes: Vec<String>,
}

const TYPES: [&str; 4] = ["CALL", "CHAT", "SMS", "EMAIL"];
const STATES: [&str; 3] = ["CREATED", "UPDATED", "COMPLETED"];

/// `unique` events over `days` days from 2025-10-01, then `dups` byte-identical
/// re-deliveries of earlier lines, interleaved.
pub fn generate(seed: u64, unique: usize, dups: usize, days: u32) -> Gen {
    let mut lines: Vec<String> = Vec::with_capacity(unique + dups);
    let mut customer_addresses = Vec::new();
    let mut notes = Vec::new();
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    for i in 0..unique {
        let inter = i / 3;
        let t = TYPES[inter % 4];
        let secs = (next() % (days as u64 * 86_400)) as i64;
        let at = chrono::DateTime::from_timestamp(1_759_276_800 + secs, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let addr = format!("+1202{:07}", (seed * 1_000_003 + i as u64) % 10_000_000);
        let note = format!(
            "Zq{seed}x{i}Wv customer disputes invoice {}",
            next() % 100000
        );
        let line = serde_json::json!({
            "eventId": format!("evt-{seed}-{i}"),
            "eventType": "INTERACTION",
            "state": STATES[i % 3],
            "sourcePlatform": if i % 2 == 0 { "GENESYS_CX" } else { "NICE_CXONE" },
            "tenantId": format!("tenant-{}", inter % 3),
            "occurredAt": at,
            "interaction": {
                "schemaVersion": "2.1.0",
                "interactionId": format!("int-{seed}-{inter}"),
                "interactionType": t,
                "direction": "INBOUND",
                "routingMetadata": {"queueId": format!("q-{}", i % 7), "queueName": "Billing", "wrapUpCode": null, "disposition": null},
                "participants": [
                    {"participantId": format!("p-{i}-c"), "type": "CUSTOMER", "address": addr, "joinedTimestamp": at, "leftTimestamp": null},
                    {"participantId": format!("p-{i}-a"), "type": "AGENT", "address": format!("agent{}@cc.example", i % 11), "joinedTimestamp": at}
                ],
                "notes": note
            }
        });
        customer_addresses.push(addr);
        notes.push(note);
        lines.push(line.to_string());
    }
    for _ in 0..dups {
        let j = (next() as usize) % unique;
        let pos = j + 1 + (next() as usize) % (lines.len() - j);
        let dup = lines[j].clone();
        lines.insert(pos.min(lines.len()), dup);
    }
    let mut ndjson = lines.join("\n").into_bytes();
    ndjson.push(b'\n');
    Gen {
        ndjson,
        unique,
        customer_addresses,
        notes,
    }
}

/// Lines that must each be quarantined, with a secret in each.
pub fn malformed() -> (Vec<u8>, usize) {
    let lines: Vec<&[u8]> = vec![
        b"{\"eventId\": \"bad-1\", \"address\": \"+19995550001\"",
        b"[\"+19995550002\"]",
        b"{\"eventId\":\"bad-3\",\"eventType\":\"INTERACTION\",\"state\":\"CREATED\",\"sourcePlatform\":\"X\",\"tenantId\":\"t\",\"occurredAt\":\"2025-10-01T00:00:00Z\",\"interaction\":{\"schemaVersion\":\"2.1.0\",\"interactionId\":\"i\",\"interactionType\":\"CALL\",\"participants\":[{\"type\":\"CUSTOMER\",\"address\":\"+19995550003\"}]}}",
        b"\xff\xfe+19995550004",
    ];
    let mut out = lines.join(&b'\n');
    out.extend_from_slice(b"\n\n");
    (out, 4)
}

/// Runs `args` (a batch) `rounds` times, each killed with SIGKILL at a pseudo-random instant
/// within `window` (plus 20 ms) unless it ended first; round `r` runs after the lease that
/// round `r - 1` may have left has expired (`after_lease_expiry(first_lease + r)`). The kill
/// times follow `seed`. Returns how many rounds were killed.
pub fn kill_at_random(
    env: &Env,
    args: &[&str],
    rounds: u32,
    first_lease: u32,
    window: std::time::Duration,
    seed: u64,
) -> u32 {
    let window = (window.as_millis() as u64).max(1);
    let mut x = seed | 1;
    let mut killed = 0;
    for round in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = std::time::Duration::from_millis(20 + x % window);
        let mut child = env
            .cmd_at(&after_lease_expiry(first_lease + round), args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            eprintln!("round {round}: killed at {at:?}");
        } else {
            eprintln!("round {round}: finished before {at:?}");
        }
        child.wait().unwrap();
    }
    killed
}

/// A store whose KEK is in a key service (OpenBao, moto), driven through the binary: every
/// command gets the variables that reach the service and nothing of the machine's own setup,
/// and no command may print `secret`.
pub struct RemoteStore {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub pipeline: PathBuf,
    vars: Vec<(&'static str, std::ffi::OsString)>,
    removed: Vec<&'static str>,
    secret: String,
}

impl RemoteStore {
    /// A fresh directory with `pipeline` (the text of `pipeline.toml`) and no store yet.
    pub fn new(pipeline: &str, secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, pipeline).unwrap();
        RemoteStore {
            store: dir.path().join("store"),
            pipeline: path,
            dir,
            vars: Vec::new(),
            removed: vec!["HOLDFAST_PIPELINE", "HOLDFAST_NOW"],
            secret: secret.to_string(),
        }
    }

    /// Sets `name` on every command.
    pub fn var(mut self, name: &'static str, value: impl Into<std::ffi::OsString>) -> Self {
        self.vars.push((name, value.into()));
        self
    }

    /// Removes `name` from every command's environment.
    pub fn unset(mut self, name: &'static str) -> Self {
        self.removed.push(name);
        self
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("HOLDFAST_STORE", &self.store)
            .env(OS_USER_VAR, OPERATOR)
            .current_dir(repo());
        for v in &self.removed {
            c.env_remove(v);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs a command; asserts it printed no secret.
    pub fn out(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        for text in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(text);
            assert!(!text.contains(&self.secret), "a secret was printed");
        }
        out
    }

    /// Runs a command and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.out(args);
        assert!(
            out.status.success(),
            "holdfast {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Every `.json` file under `dir` (manifests, key objects), sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
