//! `holdfast serve`: the webhook receiver acknowledges events only once they are durable,
//! batches them on its schedule, refuses what it must with the right status, and loses no
//! acknowledged event when killed mid-stream.

use crate::common::{self, Env};
use std::io::{BufRead, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running `holdfast serve` on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tokens file of `env`: one platform token per tenant of the generated events
/// (`tenant-0` .. `tenant-2`), returned in that order.
fn tokens(env: &Env) -> Vec<String> {
    let file = env.dir.path().join("tokens.toml");
    (0..3)
        .map(|i| {
            env.ok(&[
                "token",
                "add",
                "--tokens",
                file.to_str().unwrap(),
                "--principal",
                &format!("platform-{i}"),
                "--tenant",
                &format!("tenant-{i}"),
                "--source",
                "canonical",
            ])
            .trim()
            .to_string()
        })
        .collect()
}

/// Starts `serve` with `extra` lines under `[serve]`.
fn start(env: &Env, extra: &str) -> Server {
    // defaults for what `extra` does not set
    let mut text = format!(
        "[serve]\ntokens = \"{}\"\n{extra}\n",
        env.dir.path().join("tokens.toml").display()
    );
    for (key, default) in [("listen", "\"127.0.0.1:0\""), ("batch_every_secs", "1")] {
        if !extra.contains(key) {
            text.push_str(&format!("{key} = {default}\n"));
        }
    }
    let pipeline = env.write("serve.toml", text.as_bytes());
    let mut child = env
        .cmd(&["serve", "--pipeline", pipeline.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(env.dir.path().join("serve.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_string();
    Server { child, base }
}

/// The lines of `g` for tenant `i`.
fn lines_of(g: &common::Gen, i: usize) -> Vec<String> {
    let tenant = format!("\"tenantId\":\"tenant-{i}\"");
    String::from_utf8_lossy(&g.ndjson)
        .lines()
        .filter(|l| l.contains(&tenant))
        .map(str::to_string)
        .collect()
}

fn post(s: &Server, token: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let (status, text) = common::http(
        &s.base,
        "POST",
        "/v1/metadata/events",
        &[("authorization", &auth), ("content-type", content_type)],
        body,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls until `events` holds `n` rows (the schedule batches every second).
fn wait_for(env: &Env, n: i64) {
    for _ in 0..120 {
        if env.count("SELECT count(*) FROM events") == n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!(
        "events holds {} rows, not {n}",
        env.count("SELECT count(*) FROM events")
    );
}

#[test]
fn events_are_acknowledged_once_durable_and_batched_on_schedule() {
    let env = Env::new();
    let tok = tokens(&env);
    let s = start(&env, "");
    let g = common::generate(90, 300, 0, 2);
    // tenant-0 as NDJSON, tenant-1 as one JSON array, tenant-2 one event per request
    let (st, r) = post(
        &s,
        &tok[0],
        "application/x-ndjson",
        lines_of(&g, 0).join("\n").as_bytes(),
    );
    assert_eq!(
        (st, r["accepted"].as_u64()),
        (202, Some(lines_of(&g, 0).len() as u64)),
        "{r}"
    );
    let array = format!("[{}]", lines_of(&g, 1).join(",\n"));
    let (st, r) = post(&s, &tok[1], "application/json", array.as_bytes());
    assert_eq!(
        (st, r["accepted"].as_u64()),
        (202, Some(lines_of(&g, 1).len() as u64)),
        "{r}"
    );
    for l in lines_of(&g, 2) {
        let (st, r) = post(&s, &tok[2], "application/json", l.as_bytes());
        assert_eq!((st, r["accepted"].as_u64()), (202, Some(1)), "{r}");
    }
    // acknowledged means landed: before any batch, or after, every line is somewhere
    wait_for(&env, 300);
    assert_eq!(env.count("SELECT count(DISTINCT tenant_id) FROM events"), 3);
    // the same events again: the batch's dedupe absorbs them
    let (st, _) = post(
        &s,
        &tok[0],
        "application/x-ndjson",
        lines_of(&g, 0).join("\n").as_bytes(),
    );
    assert_eq!(st, 202);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(env.count("SELECT count(*) FROM events"), 300);
    let (st, metrics) = common::http(&s.base, "GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    assert!(
        metrics
            .contains("holdfast_events_accepted_total{tenant=\"tenant-2\",source=\"canonical\"}")
            && metrics.contains("holdfast_events_stored_total 300")
            && metrics.contains("holdfast_kms_calls{call=\"wrap\"}"),
        "{metrics}"
    );
    assert_eq!(common::http(&s.base, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(common::http(&s.base, "GET", "/readyz", &[], b"").0, 200);
    // SIGTERM stops it cleanly
    let mut s = s;
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let status = s.child.wait().unwrap();
    let said = std::fs::read_to_string(env.dir.path().join("serve.stderr")).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(said.contains("\"event\":\"stopped\""), "{said}");
}

#[test]
fn requests_it_cannot_take_are_refused_with_their_status_and_nothing_lands() {
    let env = Env::new();
    let tok = tokens(&env);
    let s = start(&env, "max_body_mb = 1\nmax_events_per_request = 5");
    let g = common::generate(91, 30, 0, 1);
    let t0 = lines_of(&g, 0);
    let cases: Vec<(u16, Option<&str>, &str, Vec<u8>)> = vec![
        (
            401,
            None,
            "application/x-ndjson",
            t0[0].clone().into_bytes(),
        ),
        (
            401,
            Some("not-a-token"),
            "application/x-ndjson",
            t0[0].clone().into_bytes(),
        ),
        (415, Some(&tok[0]), "text/plain", t0[0].clone().into_bytes()),
        (
            400,
            Some(&tok[0]),
            "application/json",
            b"{not json".to_vec(),
        ),
        // a token decides its tenant: tenant-1's events under tenant-0's token
        (
            403,
            Some(&tok[0]),
            "application/x-ndjson",
            lines_of(&g, 1)[0].clone().into_bytes(),
        ),
        (
            413,
            Some(&tok[0]),
            "application/x-ndjson",
            t0[..6].join("\n").into_bytes(),
        ),
        (
            413,
            Some(&tok[0]),
            "application/x-ndjson",
            vec![b'x'; 2 << 20],
        ),
    ];
    for (want, token, ct, body) in cases {
        let (st, r) = match token {
            Some(t) => post(&s, t, ct, &body),
            None => {
                let (st, text) = common::http(
                    &s.base,
                    "POST",
                    "/v1/metadata/events",
                    &[("content-type", ct)],
                    &body,
                );
                (st, serde_json::from_str(&text).unwrap_or_default())
            }
        };
        assert_eq!(st, want, "{ct} with {token:?}: {r}");
        assert!(r["error"].is_string(), "a JSON error body: {r}");
    }
    let (st, _) = common::http(
        &s.base,
        "POST",
        "/v1/metadata/events",
        &[
            ("authorization", &format!("Bearer {}", tok[0])),
            ("content-type", "application/json"),
            ("x-tenant-id", "tenant-1"),
        ],
        t0[0].as_bytes(),
    );
    assert_eq!(st, 403, "a header naming another tenant");
    assert_eq!(env.landing_segments(), 0, "nothing refused was landed");
    // a line that is not an event is still taken, and quarantined by the batch
    let (st, r) = post(&s, &tok[0], "application/x-ndjson", b"{\"eventId\": 12}\n");
    assert_eq!((st, r["accepted"].as_u64()), (202, Some(1)), "{r}");
    for _ in 0..40 {
        let metrics = common::http(&s.base, "GET", "/metrics", &[], b"").1;
        let listed = env.ok(&["quarantine", "list", "--format", "ndjson"]);
        if listed.lines().count() == 1 && metrics.contains("holdfast_quarantine_entries 1") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the invalid line was not quarantined");
}

#[test]
fn past_the_backlog_bound_requests_get_429_with_retry_after() {
    let env = Env::new();
    let tok = tokens(&env);
    let s = start(&env, "max_backlog_mb = 0");
    let g = common::generate(92, 3, 0, 1);
    let auth = format!("Bearer {}", tok[0]);
    let (st, body) = common::http(
        &s.base,
        "POST",
        "/v1/metadata/events",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
        ],
        lines_of(&g, 0)[0].as_bytes(),
    );
    assert_eq!(st, 429, "{body}");
    assert_eq!(common::http(&s.base, "GET", "/readyz", &[], b"").0, 503);
    assert_eq!(env.landing_segments(), 0);
}

#[test]
fn plain_http_off_loopback_and_readable_tokens_are_refused() {
    let env = Env::new();
    tokens(&env);
    let file = env.dir.path().join("tokens.toml");
    let pipeline = env.write(
        "wide.toml",
        format!(
            "[serve]\nlisten = \"0.0.0.0:0\"\ntokens = \"{}\"\n",
            file.display()
        )
        .as_bytes(),
    );
    let out = env.run(&["serve", "--pipeline", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pipeline = env.write(
        "open.toml",
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntokens = \"{}\"\n",
            file.display()
        )
        .as_bytes(),
    );
    let out = env.run(&["serve", "--pipeline", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Clients post single events at once while the server is killed with SIGKILL mid-stream;
/// a batch after the lease expires stores every acknowledged event exactly once.
#[test]
fn a_server_killed_under_load_loses_no_acknowledged_event() {
    let env = Env::new();
    let tok = tokens(&env);
    let mut s = start(&env, "");
    let g = common::generate(93, 6000, 0, 2);
    let acked = std::sync::Mutex::new(Vec::<String>::new());
    let base = s.base.clone();
    // each client sends the tenants' events in turn, so that a group commit holds several
    let per_tenant: Vec<Vec<String>> = (0..tok.len()).map(|i| lines_of(&g, i)).collect();
    let longest = per_tenant.iter().map(Vec::len).max().unwrap();
    let mut mixed: Vec<(usize, &String)> = Vec::new();
    for k in 0..longest {
        for (i, lines) in per_tenant.iter().enumerate() {
            mixed.extend(lines.get(k).map(|l| (i, l)));
        }
    }
    std::thread::scope(|scope| {
        for c in 0..8 {
            let (acked, base, tok, mixed) = (&acked, &base, &tok, &mixed);
            scope.spawn(move || {
                for (i, line) in mixed.iter().skip(c).step_by(8) {
                    let token = &tok[*i];
                    let auth = format!("Bearer {token}");
                    let headers = [
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                    ];
                    let path = "/v1/metadata/events";
                    let Some(r) = common::try_http(base, "POST", path, &headers, line.as_bytes())
                    else {
                        return; // the server is gone
                    };
                    if r.0 == 202 {
                        let v: serde_json::Value = serde_json::from_str(line).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["eventId"].as_str().unwrap().to_string());
                    }
                }
            });
        }
        // the kill lands mid-stream, however fast the server is: once 500 are acknowledged
        let t0 = std::time::Instant::now();
        while acked.lock().unwrap().len() < 500 && t0.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        s.child.kill().unwrap(); // SIGKILL
        s.child.wait().unwrap();
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() > 50,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(acked.len() < 6000, "the kill came after every request");
    // the groups held several tenants: their segments landed back to back in one object
    let several = std::fs::read_dir(env.store.join("landing"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("segs".as_ref()))
        .count();
    assert!(several > 0, "no landing object of several segments");
    // the killed server may hold the batch lease: a batch after its expiry takes it over
    env.batch_at(&common::after_lease_expiry(1));
    let stored: std::collections::HashSet<String> = env
        .query("SELECT event_id FROM events")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged, missing: {missing:?}",
        acked.len()
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        env.count("SELECT count(DISTINCT event_id) FROM events")
    );
    eprintln!(
        "{} events acknowledged before SIGKILL, {} stored",
        acked.len(),
        stored.len()
    );
}

/// Holds over HTTP: placed by a person with the compliance role (from the store's policy,
/// through the token's principal), pinned at the storage layer before the 200, listed, and
/// released by two people.
#[test]
fn holds_are_placed_listed_and_released_by_two_people_over_http() {
    let env = Env::new();
    let tok = tokens(&env);
    let file = env.dir.path().join("tokens.toml");
    let person = |name: &str| {
        let f = file.to_str().unwrap();
        env.ok(&["token", "add", "--tokens", f, "--principal", name])
            .trim()
            .to_string()
    };
    let (operator, bob) = (person(common::OPERATOR), person("bob"));
    env.second_person("bob", &["compliance"]);
    env.ingest(&env.write("e.ndjson", &common::generate(94, 300, 0, 2).ndjson));
    env.batch();
    let s = start(&env, "");
    let call = |token: &str, method: &str, path: &str, body: &str| {
        let auth = format!("Bearer {token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("x-tenant-id", "tenant-0"),
        ];
        let (st, text) = common::http(&s.base, method, path, &headers, body.as_bytes());
        (
            st,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    let body = r#"{"holdId": "LIT-1", "scope": {"interactionIds": ["int-94-0", "int-94-3"]}}"#;
    let holds = "/api/v2/retention/holds";
    // a platform's principal holds no role in the store's policy
    let (st, r) = call(&tok[0], "PATCH", holds, body);
    assert_eq!(st, 403, "{r}");
    let (st, r) = call(&operator, "PATCH", holds, body);
    assert_eq!(st, 200, "{r}");
    assert!(r["filesPinned"].as_u64().unwrap() >= 1, "{r}");
    // pinned at the storage layer by the time the answer came
    let registry = env.hold_registry();
    assert_eq!(registry.holds[0].tenant_id.as_deref(), Some("tenant-0"));
    for f in &registry.holds[0].files {
        assert!(env.storage_lock(f).legal_hold, "{f} not pinned");
    }
    // one placement timed (the 403 above placed nothing)
    let metrics = common::http(&s.base, "GET", "/metrics", &[], b"").1;
    assert!(
        metrics.contains("holdfast_hold_sync_seconds_count 1"),
        "{metrics}"
    );
    let (st, r) = call(&operator, "GET", holds, "");
    assert_eq!(
        (st, r["holds"][0]["holdId"].as_str()),
        (200, Some("LIT-1")),
        "{r}"
    );
    assert_eq!(call(&operator, "GET", &format!("{holds}/LIT-1"), "").0, 200);
    assert_eq!(call(&operator, "GET", &format!("{holds}/NOPE"), "").0, 404);
    // two people: the one who asked for the release cannot approve it
    let (st, r) = call(&operator, "POST", &format!("{holds}/LIT-1/release"), "");
    assert_eq!(st, 200, "{r}");
    let (st, r) = call(&operator, "POST", &format!("{holds}/LIT-1/approve"), "");
    assert_eq!(st, 403, "{r}");
    let (st, r) = call(&bob, "POST", &format!("{holds}/LIT-1/approve"), "");
    assert_eq!((st, r["status"].as_str()), (200, Some("RELEASED")), "{r}");
    for f in &registry.holds[0].files {
        assert!(!env.storage_lock(f).legal_hold, "{f} still pinned");
    }
    let audit = env.ok(&["audit", "list", "--format", "ndjson"]);
    assert!(audit.contains("\"bob\""), "the approval is audited as bob");
}

/// TLS from PEM files (a self-signed certificate made with openssl): HTTPS answers, plain
/// HTTP on the same port does not, a key others may read is refused, and TLS lets the server
/// listen beyond loopback.
#[test]
fn tls_from_pem_files_and_a_private_key_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let tok = tokens(&env);
    let (cert, key) = (
        env.dir.path().join("cert.pem"),
        env.dir.path().join("key.pem"),
    );
    // a test CA, and a certificate for localhost and 127.0.0.1 it signs
    let dir = env.dir.path();
    let ext = env.write(
        "leaf.ext",
        b"subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    );
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (to make a test certificate)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=holdfast-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "cert.pem",
        "-extfile",
        ext.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let pipeline = env.write(
        "open-key.toml",
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntokens = \"{}\"\n{tls}\n",
            env.dir.path().join("tokens.toml").display()
        )
        .as_bytes(),
    );
    let out = env.run(&["serve", "--pipeline", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // beyond loopback is allowed with TLS
    let s = start(&env, &format!("{tls}\nlisten = \"0.0.0.0:0\""));
    assert!(s.base.starts_with("https://0.0.0.0:"), "{}", s.base);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let g = common::generate(95, 9, 0, 1);
    let line = lines_of(&g, 0)[0].clone();
    let (health, posted) = rt.block_on(async {
        let h = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        let p = client
            .post(format!("https://localhost:{port}/v1/metadata/events"))
            .bearer_auth(&tok[0])
            .header("content-type", "application/json")
            .body(line)
            .send()
            .await
            .unwrap()
            .status();
        (h, p)
    });
    assert_eq!((health.as_u16(), posted.as_u16()), (200, 202));
    let plain = common::try_http(
        &format!("http://127.0.0.1:{port}"),
        "GET",
        "/healthz",
        &[],
        b"",
    );
    assert!(plain.is_none(), "plain HTTP got an answer: {plain:?}");
}

/// A platform that signs its bodies: its token alone is not enough, the HMAC-SHA256 of
/// "<timestamp>.<body>" under its shared secret must match, within the time window.
#[test]
fn signed_platforms_need_a_valid_recent_signature() {
    use hmac::{KeyInit, Mac};
    let env = Env::new();
    tokens(&env);
    let file = env.dir.path().join("tokens.toml");
    let out = env.ok(&[
        "token",
        "add",
        "--tokens",
        file.to_str().unwrap(),
        "--principal",
        "signer",
        "--tenant",
        "tenant-0",
        "--source",
        "canonical",
        "--signed",
    ]);
    let mut it = out.lines();
    let (token, secret) = (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
    );
    assert!(std::fs::read_to_string(&file).unwrap().contains(&secret));
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains(&token),
        "only the token's hash"
    );
    let s = start(&env, "");
    let g = common::generate(96, 9, 0, 1);
    let body = lines_of(&g, 0)[0].clone();
    let sign = |secret: &str, t: i64| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(format!("{t}.").as_bytes());
        m.update(body.as_bytes());
        format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
    };
    let now = chrono::Utc::now().timestamp();
    let auth = format!("Bearer {token}");
    let post = |sig: Option<String>| {
        let mut headers = vec![
            ("authorization", auth.clone()),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(sig) = sig {
            headers.push(("x-holdfast-signature", sig));
        }
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::http(&s.base, "POST", "/v1/metadata/events", &h, body.as_bytes()).0
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(sign("not-the-secret", now))), 401);
    assert_eq!(
        post(Some(sign(&secret, now - 3600))),
        401,
        "an old signature is a replay"
    );
    assert_eq!(post(Some(sign(&secret, now))), 202);
    wait_for(&env, 1);
}

/// Segments of one tenant within a minute share one wrapped DEK (one key-service call per
/// tenant and minute, not per flush); another tenant's have their own.
#[test]
fn a_tenants_segments_share_a_dek_for_a_minute() {
    let env = Env::new();
    let tok = tokens(&env);
    let s = start(&env, "batch_every_secs = 3600");
    let g = common::generate(97, 60, 0, 1);
    for line in lines_of(&g, 0).iter().take(3) {
        assert_eq!(
            post(&s, &tok[0], "application/json", line.as_bytes()).0,
            202
        );
    }
    assert_eq!(
        post(
            &s,
            &tok[1],
            "application/json",
            lines_of(&g, 1)[0].as_bytes()
        )
        .0,
        202
    );
    let headers: Vec<serde_json::Value> = env
        .keys("landing/")
        .iter()
        .map(|k| {
            let b = env.read_file(k);
            assert_eq!(&b[..8], b"HFSEG001");
            let n = u32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
            serde_json::from_slice(&b[12..12 + n]).unwrap()
        })
        .collect();
    assert_eq!(headers.len(), 4, "one segment per request here");
    // nothing batched yet: the backlog gauges count what the server landed
    std::thread::sleep(std::time::Duration::from_millis(600));
    let metrics = common::http(&s.base, "GET", "/metrics", &[], b"").1;
    assert!(
        metrics.contains("holdfast_landing_backlog_segments 4"),
        "{metrics}"
    );
    let age: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("holdfast_landing_oldest_age_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(age > 0.0, "{metrics}");
    let dek = |tenant: &str| -> std::collections::BTreeSet<String> {
        headers
            .iter()
            .filter(|h| h["tenant"] == tenant)
            .map(|h| h["dek_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(dek("tenant-0").len(), 1, "{headers:?}");
    assert_eq!(dek("tenant-1").len(), 1);
    assert_ne!(dek("tenant-0"), dek("tenant-1"));
}

/// Past `max_connections` a new connection waits in the listen queue, unanswered, until one
/// of those being served closes.
#[test]
fn connections_past_the_cap_wait_for_one_to_close() {
    use std::io::Read;
    let env = Env::new();
    tokens(&env);
    let s = start(&env, "max_connections = 2");
    let host = s.base.trim_start_matches("http://").to_string();
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&host).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(&host).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut answer = Vec::new();
    let waited = third.read_to_end(&mut answer);
    assert!(
        waited.is_err() && answer.is_empty(),
        "{waited:?} {answer:?}"
    );
    drop(idle);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    third.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
