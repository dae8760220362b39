//! Load generator for `holdfast serve` (benches/serve_load.py runs it): keep-alive HTTP/1.1
//! connections, each posting its share of an NDJSON file, one event per request or `--batch`
//! events as NDJSON, with the token of each line's tenant. Prints one JSON summary line and,
//! with `--acked FILE`, writes the event id of every acknowledged (202) event.
//!
//! usage: load --url http://127.0.0.1:PORT --tokens TENANTS.json --input EVENTS.ndjson
//!             [--concurrency 64] [--batch 1] [--seconds 10] [--acked FILE]

// a benchmark client: it reads its own input files and writes its results, outside any store
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The value of `"key":"…"` in a JSON line (the generator's lines have no spaces there).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":\"");
    line.find(&pat)
        .map(|i| &line[i + pat.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// One request on a kept-alive connection: the status.
fn post(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    token: &str,
    ct: &str,
    body: &[u8],
) -> Option<u16> {
    let head = format!(
        "POST /v1/metadata/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = conn.get_mut();
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    Some(status)
}

/// What one connection did.
#[derive(Default)]
struct Worker {
    latencies: Vec<f64>,
    statuses: HashMap<u16, u64>,
    acked: Vec<String>,
}

/// Posts worker `w`'s share of `lines` (of `conc`) until `deadline`.
fn work(
    w: usize,
    conc: usize,
    batch: usize,
    lines: &[&str],
    tokens: &HashMap<String, String>,
    host: &str,
    deadline: Instant,
) -> Worker {
    let mut out = Worker::default();
    let Ok(stream) = TcpStream::connect(host) else {
        return out;
    };
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    // this worker's lines, grouped by tenant into bodies of `batch`
    let mut by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in lines.iter().skip(w).step_by(conc) {
        by_tenant.entry(field(l, "tenantId")).or_default().push(l);
    }
    let bodies: Vec<(&str, &[&str])> = by_tenant
        .iter()
        .flat_map(|(t, ls)| ls.chunks(batch).map(move |c| (*t, c)))
        .collect();
    for (tenant, chunk) in bodies {
        if Instant::now() >= deadline {
            break;
        }
        let Some(token) = tokens.get(tenant) else {
            continue;
        };
        let (ct, body) = if batch == 1 {
            ("application/json", chunk[0].as_bytes().to_vec())
        } else {
            ("application/x-ndjson", chunk.join("\n").into_bytes())
        };
        let t = Instant::now();
        let Some(status) = post(&mut conn, host, token, ct, &body) else {
            break; // the server went away
        };
        out.latencies.push(t.elapsed().as_secs_f64());
        *out.statuses.entry(status).or_default() += 1;
        if status == 202 {
            out.acked
                .extend(chunk.iter().map(|l| field(l, "eventId").to_string()));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url").expect("--url");
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let tokens: HashMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(arg(&args, "--tokens").expect("--tokens")).unwrap(),
    )
    .unwrap();
    let input = std::fs::read_to_string(arg(&args, "--input").expect("--input")).unwrap();
    let conc: usize = arg(&args, "--concurrency").map_or(64, |v| v.parse().unwrap());
    let batch: usize = arg(&args, "--batch").map_or(1, |v| v.parse().unwrap());
    let seconds: f64 = arg(&args, "--seconds").map_or(10.0, |v| v.parse().unwrap());
    let lines: Vec<&str> = input.lines().filter(|l| !l.is_empty()).collect();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let results: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conc)
            .map(|w| {
                let (lines, tokens, host) = (&lines, &tokens, &host);
                scope.spawn(move || work(w, conc, batch, lines, tokens, host, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    for r in &results {
        for (k, v) in &r.statuses {
            *statuses.entry(*k).or_default() += v;
        }
    }
    let acked: Vec<&String> = results.iter().flat_map(|r| r.acked.iter()).collect();
    if let Some(path) = arg(&args, "--acked") {
        let text: String = acked.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text).unwrap();
    }
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let summary = serde_json::json!({
        "requests": lat.len(),
        "events_acked": acked.len(),
        "seconds": wall,
        "requests_per_s": lat.len() as f64 / wall,
        "events_per_s": acked.len() as f64 / wall,
        "p50_ms": pct(0.5) * 1000.0,
        "p99_ms": pct(0.99) * 1000.0,
        "statuses": statuses,
    });
    println!("{summary}");
}
