//! How holdfast's record dictionaries train and compress with a few trainer settings, one
//! dictionary per partition (data file format 1) against one per tenant of the partition
//! (format 2). Takes the first 300,000 lines of an events file, the first 8 (day, type)
//! partitions with at least 3,000 records; trains on records among each partition's first
//! 1,500 (the first N of the partition, or of each tenant) exactly as holdfast's
//! `Dictionary::train` does (fastCover, k 1000, d 8, size a sixteenth of the samples up to
//! 16 KiB), and compresses the partition's later records one by one at level 3 with their
//! dictionary. Prints, per setting: training time (total and per dictionary), bytes per record,
//! dictionary bytes per partition, compression time.
//!
//! Then the prepared tables (zstd `CDict`s): one dictionary per partition or per tenant of
//! each of the first 400,000 lines' partitions, all prepared at once, and every record
//! compressed in the file's order with its own (as a batch interleaves its open files'
//! dictionaries), with the level's default hash and chain tables and with smaller ones.
//!
//! With `--small`, instead: every record of the file grouped by partition and by partition and
//! tenant (a backfill's small files), the bytes a record takes with no dictionary, with one per
//! partition, and with one per tenant of a partition at a few training thresholds (records,
//! bytes, dictionary size), the sealed dictionaries in the footer counted (base64, entry).
//!
//!     CARGO_TARGET_DIR=/tmp/dt cargo run --release --manifest-path \
//!         benches/dictionary_training/Cargo.toml -- bench-out/events-1000000-seed42.ndjson
//!     CARGO_TARGET_DIR=/tmp/dt cargo run --release --manifest-path \
//!         benches/dictionary_training/Cargo.toml -- --small bench-out/backfill-200000.ndjson

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

/// A setting: per tenant or per partition, records trained on, f cap, accel.
struct Setting {
    name: &'static str,
    per_tenant: bool,
    rows: usize,
    max_f: u32,
    accel: u32,
}

fn train(samples: &[&[u8]], s: &Setting) -> Option<Vec<u8>> {
    let total: usize = samples.iter().map(|s| s.len()).sum();
    if samples.len() < 16 || total < 8 * 1024 {
        return None;
    }
    let data: Vec<u8> = samples.concat();
    let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
    let mut raw = vec![0u8; 16384.min((total / 16).max(1024))];
    let params = zstd_sys::ZDICT_fastCover_params_t {
        k: 1000,
        d: 8,
        f: total
            .next_power_of_two()
            .trailing_zeros()
            .clamp(14, s.max_f),
        steps: 0,
        nbThreads: 0,
        splitPoint: 1.0,
        accel: s.accel,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: zstd_sys::ZDICT_params_t {
            compressionLevel: 3,
            notificationLevel: 0,
            dictID: 0,
        },
    };
    // SAFETY: buffers as described to the call, as in holdfast's Dictionary::train.
    let n = unsafe {
        zstd_sys::ZDICT_trainFromBuffer_fastCover(
            raw.as_mut_ptr().cast(),
            raw.len(),
            data.as_ptr().cast(),
            sizes.as_ptr(),
            sizes.len() as u32,
            params,
        )
    };
    // SAFETY: inspects the code only.
    if unsafe { zstd_sys::ZDICT_isError(n) } != 0 {
        return None;
    }
    raw.truncate(n);
    Some(raw)
}

/// Bytes of `records` compressed one by one with `dict` (its tables prepared once).
fn compressed(dict: Option<&[u8]>, records: &[&[u8]]) -> usize {
    let mut cctx = zstd::zstd_safe::CCtx::create();
    cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(3))
        .unwrap();
    let prepared = dict.map(|d| zstd::dict::EncoderDictionary::copy(d, 3));
    let mut buf = Vec::new();
    let mut total = 0;
    for r in records {
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound(r.len()));
        match &prepared {
            Some(p) => cctx.compress_using_cdict(&mut buf, r, p.as_cdict()),
            None => cctx.compress2(&mut buf, r),
        }
        .unwrap();
        total += buf.len();
    }
    total
}

type Partition = Vec<(String, Vec<u8>)>;

fn partitions(path: &str) -> Vec<Partition> {
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("events file"));
    let mut parts: HashMap<(String, String), Partition> = HashMap::new();
    for line in f.lines().take(300_000) {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let day = v["occurredAt"].as_str().unwrap()[..10].to_string();
        let ty = v["interaction"]["interactionType"]
            .as_str()
            .unwrap()
            .to_string();
        let tenant = v["tenantId"].as_str().unwrap().to_string();
        parts
            .entry((day, ty))
            .or_default()
            .push((tenant, line.into_bytes()));
    }
    let mut keys: Vec<_> = parts
        .keys()
        .filter(|k| parts[*k].len() >= 3000)
        .cloned()
        .collect();
    keys.sort();
    keys.truncate(8);
    keys.iter().map(|k| parts.remove(k).unwrap()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path] if flag == "--small" => small_groups(path),
        [path] => {
            trainer_settings(path);
            prepared_tables(path);
        }
        _ => panic!("usage: dictionary_training [--small] EVENTS.ndjson"),
    }
}

fn trainer_settings(path: &str) {
    let parts = partitions(path);
    println!("{} partitions of >= 3000 records", parts.len());
    let settings = [
        Setting {
            name: "per partition, 256, f<=18, accel 1",
            per_tenant: false,
            rows: 256,
            max_f: 18,
            accel: 1,
        },
        Setting {
            name: "per tenant, 256, f<=18, accel 1",
            per_tenant: true,
            rows: 256,
            max_f: 18,
            accel: 1,
        },
        Setting {
            name: "per tenant, 256, f<=15, accel 1",
            per_tenant: true,
            rows: 256,
            max_f: 15,
            accel: 1,
        },
        Setting {
            name: "per tenant, 256, f<=15, accel 2",
            per_tenant: true,
            rows: 256,
            max_f: 15,
            accel: 2,
        },
        Setting {
            name: "per tenant, 256, f<=15, accel 4",
            per_tenant: true,
            rows: 256,
            max_f: 15,
            accel: 4,
        },
        Setting {
            name: "per tenant, 128, f<=15, accel 4",
            per_tenant: true,
            rows: 128,
            max_f: 15,
            accel: 4,
        },
    ];
    println!(
        "setting                               train ms (each)   B/record  dict B/partition  compress ms"
    );
    for s in &settings {
        let (mut train_s, mut trainings, mut bytes, mut n, mut dict_bytes, mut comp_s) =
            (0f64, 0usize, 0usize, 0usize, 0usize, 0f64);
        for p in &parts {
            let scope = |t: &str| {
                if s.per_tenant {
                    t.to_string()
                } else {
                    String::new()
                }
            };
            let mut samples: HashMap<String, Vec<&[u8]>> = HashMap::new();
            for (t, r) in &p[..1500] {
                let e = samples.entry(scope(t)).or_default();
                if e.len() < s.rows {
                    e.push(r);
                }
            }
            let mut tests: HashMap<String, Vec<&[u8]>> = HashMap::new();
            for (t, r) in &p[1500..] {
                tests.entry(scope(t)).or_default().push(r);
            }
            for (scope, samples) in &samples {
                let t0 = Instant::now();
                let d = train(samples, s);
                train_s += t0.elapsed().as_secs_f64();
                trainings += 1;
                dict_bytes += d.as_ref().map_or(0, Vec::len);
                let records = tests.get(scope).map(Vec::as_slice).unwrap_or_default();
                let t0 = Instant::now();
                bytes += compressed(d.as_deref(), records);
                comp_s += t0.elapsed().as_secs_f64();
                n += records.len();
            }
        }
        println!(
            "{:36} {:8.1} ({:4.2})  {:9.1}  {:16}  {:11.1}",
            s.name,
            train_s * 1e3,
            train_s * 1e3 / trainings as f64,
            bytes as f64 / n as f64,
            dict_bytes / parts.len(),
            comp_s * 1e3
        );
    }
}

/// A CDict of `d` at level 3, its hash and chain tables capped at 2^`log` entries (0: the
/// level's defaults).
fn prepare(d: &[u8], log: u32) -> *mut zstd_sys::ZSTD_CDict {
    // SAFETY: pure function of its arguments.
    let mut cp = unsafe { zstd_sys::ZSTD_getCParams(3, 0, d.len()) };
    if log > 0 {
        cp.hashLog = cp.hashLog.min(log);
        cp.chainLog = cp.chainLog.min(log);
    }
    let mem = zstd_sys::ZSTD_customMem {
        customAlloc: None,
        customFree: None,
        opaque: std::ptr::null_mut(),
    };
    // SAFETY: `d` is copied; parameters from zstd, two table sizes lowered within bounds.
    unsafe {
        zstd_sys::ZSTD_createCDict_advanced(
            d.as_ptr().cast(),
            d.len(),
            zstd_sys::ZSTD_dictLoadMethod_e::ZSTD_dlm_byCopy,
            zstd_sys::ZSTD_dictContentType_e::ZSTD_dct_auto,
            cp,
            mem,
        )
    }
}

fn prepared_tables(path: &str) {
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("events file"));
    let mut recs: Vec<(String, String, Vec<u8>)> = Vec::new();
    for line in f.lines().take(400_000) {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let part = format!(
            "{}/{}",
            &v["occurredAt"].as_str().unwrap()[..10],
            v["interaction"]["interactionType"].as_str().unwrap()
        );
        recs.push((
            part,
            v["tenantId"].as_str().unwrap().to_string(),
            line.into_bytes(),
        ));
    }
    let setting = Setting {
        name: "",
        per_tenant: true,
        rows: 256,
        max_f: 15,
        accel: 4,
    };
    println!(
        "\ninterleaved, {} records: dictionaries, tables, MB prepared, us a record, B/record",
        recs.len()
    );
    for per_tenant in [false, true] {
        let key = |p: &str, t: &str| {
            if per_tenant {
                format!("{p}/{t}")
            } else {
                p.to_string()
            }
        };
        let mut samples: HashMap<String, Vec<&[u8]>> = HashMap::new();
        for (p, t, r) in &recs {
            let e = samples.entry(key(p, t)).or_default();
            if e.len() < setting.rows {
                e.push(r);
            }
        }
        let dicts: HashMap<&String, Vec<u8>> = samples
            .iter()
            .filter_map(|(k, s)| Some((k, train(s, &setting)?)))
            .collect();
        for log in [0, 14, 13, 12] {
            let prepared: HashMap<&String, *mut zstd_sys::ZSTD_CDict> =
                dicts.iter().map(|(k, d)| (*k, prepare(d, log))).collect();
            // SAFETY: a fresh context, freed below.
            let cctx = unsafe { zstd_sys::ZSTD_createCCtx() };
            let mut buf = vec![0u8; 1 << 20];
            let (mut bytes, mut n) = (0usize, 0usize);
            let t0 = Instant::now();
            for (p, t, r) in &recs {
                let Some(cd) = prepared.get(&key(p, t)) else {
                    continue;
                };
                // SAFETY: buffers as given; the CDict and context are alive.
                let m = unsafe {
                    zstd_sys::ZSTD_compress_usingCDict(
                        cctx,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        r.as_ptr().cast(),
                        r.len(),
                        *cd,
                    )
                };
                // SAFETY: inspects the code only.
                assert!(unsafe { zstd_sys::ZSTD_isError(m) } == 0);
                bytes += m;
                n += 1;
            }
            let t = t0.elapsed().as_secs_f64();
            // SAFETY: sizes of live objects, then each freed once.
            let mem: usize = prepared
                .values()
                .map(|c| unsafe { zstd_sys::ZSTD_sizeof_CDict(*c) })
                .sum();
            for c in prepared.values() {
                unsafe { zstd_sys::ZSTD_freeCDict(*c) };
            }
            unsafe { zstd_sys::ZSTD_freeCCtx(cctx) };
            println!(
                "{:13} {:4} 2^{:<7} {:6.1}  {:5.2}  {:6.1}",
                if per_tenant {
                    "per tenant"
                } else {
                    "per partition"
                },
                prepared.len(),
                if log == 0 {
                    "default".to_string()
                } else {
                    log.to_string()
                },
                mem as f64 / 1e6,
                t * 1e6 / n as f64,
                bytes as f64 / n as f64
            );
        }
    }
}

/// One record compressed at level 3, with the raw dictionary `d` or none.
fn compress_one(d: Option<&[u8]>, r: &[u8]) -> usize {
    let mut out = vec![0u8; r.len() + 1024];
    // SAFETY: buffers as given; the context is made and freed here.
    let n = unsafe {
        match d {
            Some(d) => {
                let c = zstd_sys::ZSTD_createCCtx();
                let n = zstd_sys::ZSTD_compress_usingDict(
                    c,
                    out.as_mut_ptr().cast(),
                    out.len(),
                    r.as_ptr().cast(),
                    r.len(),
                    d.as_ptr().cast(),
                    d.len(),
                    3,
                );
                zstd_sys::ZSTD_freeCCtx(c);
                n
            }
            None => zstd_sys::ZSTD_compress(
                out.as_mut_ptr().cast(),
                out.len(),
                r.as_ptr().cast(),
                r.len(),
                3,
            ),
        }
    };
    // SAFETY: inspects the code only.
    assert!(unsafe { zstd_sys::ZSTD_isError(n) } == 0);
    n
}

/// A group's bytes: its records compressed with a dictionary trained on them (if it has at
/// least `min_records` and `min_bytes`, sized a `div`th of them, at least `min_size`, at most
/// 16 KiB), plus the dictionary's footer entry (sealed, base64, about 110 bytes of JSON).
fn group_bytes(
    recs: &[Vec<u8>],
    (min_records, min_bytes, div, min_size): (usize, usize, usize, usize),
) -> (usize, bool) {
    let total: usize = recs.iter().map(Vec::len).sum();
    let d = if recs.len() >= min_records && total >= min_bytes {
        let samples: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
        let data = samples.concat();
        let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
        let mut raw = vec![0u8; 16384.min((total / div).max(min_size))];
        let params = zstd_sys::ZDICT_fastCover_params_t {
            k: 1000.min(raw.len() as u32),
            d: 8,
            f: total.next_power_of_two().trailing_zeros().clamp(14, 15),
            steps: 0,
            nbThreads: 0,
            splitPoint: 1.0,
            accel: 4,
            shrinkDict: 0,
            shrinkDictMaxRegression: 0,
            zParams: zstd_sys::ZDICT_params_t {
                compressionLevel: 3,
                notificationLevel: 0,
                dictID: 0,
            },
        };
        // SAFETY: buffers as described to the call.
        let n = unsafe {
            zstd_sys::ZDICT_trainFromBuffer_fastCover(
                raw.as_mut_ptr().cast(),
                raw.len(),
                data.as_ptr().cast(),
                sizes.as_ptr(),
                sizes.len() as u32,
                params,
            )
        };
        // SAFETY: inspects the code only.
        (unsafe { zstd_sys::ZDICT_isError(n) } == 0).then(|| {
            raw.truncate(n);
            raw
        })
    } else {
        None
    };
    let footer = d.as_ref().map_or(0, |d| (d.len() + 28) * 4 / 3 + 110);
    (
        footer
            + recs
                .iter()
                .map(|r| compress_one(d.as_deref(), r))
                .sum::<usize>(),
        d.is_some(),
    )
}

fn small_groups(path: &str) {
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("events file"));
    let mut by_partition: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut by_tenant: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for line in f.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let part = format!(
            "{}/{}",
            &v["occurredAt"].as_str().unwrap()[..10],
            v["interaction"]["interactionType"].as_str().unwrap()
        );
        let tenant = format!("{part}/{}", v["tenantId"].as_str().unwrap());
        by_partition
            .entry(part)
            .or_default()
            .push(line.clone().into_bytes());
        by_tenant.entry(tenant).or_default().push(line.into_bytes());
    }
    let n: usize = by_partition.values().map(Vec::len).sum();
    println!(
        "{n} records, {} partitions, {} (partition, tenant) groups",
        by_partition.len(),
        by_tenant.len()
    );
    let plain: usize = by_partition
        .values()
        .flatten()
        .map(|r| compress_one(None, r))
        .sum();
    println!("no dictionary: {:.1} B/record", plain as f64 / n as f64);
    let holdfast = (16, 8192, 16, 1024);
    let per_partition: usize = by_partition
        .values()
        .map(|g| group_bytes(g, holdfast).0)
        .sum();
    println!(
        "per partition, >= 16 records and 8 KiB, size /16 >= 1 KiB: {:.1} B/record",
        per_partition as f64 / n as f64
    );
    for t in [
        holdfast,
        (8, 4096, 16, 1024),
        (5, 2048, 16, 512),
        (5, 2048, 8, 512),
    ] {
        let (mut bytes, mut with) = (0, 0);
        for g in by_tenant.values() {
            let (b, d) = group_bytes(g, t);
            bytes += b;
            with += usize::from(d);
        }
        println!(
            "per tenant, >= {} records and {} B, size /{} >= {}: {:.1} B/record ({with} groups with a dictionary)",
            t.0,
            t.1,
            t.2,
            t.3,
            bytes as f64 / n as f64
        );
    }
}
