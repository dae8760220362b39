//! The floor of a durable acknowledgement (benches/serve_load.py `--durable-floor`): the
//! do-nothing server of `null_server.rs` (hyper 1, HTTP/1.1, tokio), except that a request is
//! answered only once its body is on stable storage. Bodies are appended to one file by a
//! group commit (every body that arrived while the last `fdatasync` ran, written together and
//! synced once), the cheapest durable write there is on a filesystem: no parsing, no
//! validation, no encryption, no new file per group, no directory sync. What this server
//! reaches is an upper bound on any server that acknowledges only durable events on the same
//! machine and stack.
//!
//! With `--objects` the group is instead written as a new file in the folder DIR (created
//! exclusively, written, fsynced, then the folder fsynced): what a store of create-only
//! objects, as holdfast's landing zone is (S3 has no append), costs at the least.
//!
//! usage: durable_null_server [--objects] FILE|DIR [ADDRESS]
//!        (default 127.0.0.1:0; prints "listening on http://ADDR")

// a benchmark server: it writes only the file or folder named on its command line
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

/// Bodies waiting for the next commit, and who waits for it.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    waiting: Vec<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Group {
    pending: Mutex<Pending>,
    arrived: Condvar,
}

impl Group {
    /// Queues a body; the receiver fires once it is synced.
    fn add(&self, body: &[u8]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock().expect("not poisoned");
        p.bytes.extend_from_slice(body);
        if !body.ends_with(b"\n") {
            p.bytes.push(b'\n');
        }
        p.waiting.push(tx);
        drop(p);
        self.arrived.notify_one();
        rx
    }

    /// The committer: takes whatever is pending, writes it durably, acknowledges; forever.
    fn commit_forever(&self, mut sink: Sink) {
        loop {
            let taken = {
                let mut p = self.pending.lock().expect("not poisoned");
                while p.waiting.is_empty() {
                    p = self.arrived.wait(p).expect("not poisoned");
                }
                std::mem::take(&mut *p)
            };
            if let Err(e) = sink.write(&taken.bytes) {
                // nobody is acknowledged; the benchmark sees the server gone
                eprintln!("durable_null_server: appending: {e}");
                std::process::exit(1);
            }
            for tx in taken.waiting {
                let _ = tx.send(());
            }
        }
    }
}

/// Where a group goes: appended to one file, or a new file in a folder.
enum Sink {
    Append(std::fs::File),
    Objects(std::path::PathBuf, u64),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Append(file) => {
                file.write_all(bytes)?;
                file.sync_data()
            }
            Sink::Objects(dir, n) => {
                *n += 1;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir.join(format!("{n:020}.seg")))?;
                f.write_all(bytes)?;
                f.sync_all()?;
                std::fs::File::open(&*dir)?.sync_all()
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let usage = "usage: durable_null_server [--objects] FILE|DIR [ADDRESS]";
    let mut args = std::env::args().skip(1).peekable();
    let objects = args.next_if(|a| a == "--objects").is_some();
    let path = std::path::PathBuf::from(args.next().expect(usage));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let sink = if objects {
        std::fs::create_dir_all(&path).expect("create the folder");
        Sink::Objects(path, 0)
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the append file");
        Sink::Append(file)
    };
    let group = Arc::new(Group::default());
    let committer = group.clone();
    std::thread::spawn(move || committer.commit_forever(sink));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let group = group.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service =
                hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                    let group = group.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let synced = group.add(&body).await.is_ok();
                        let lines = body.iter().filter(|b| **b == b'\n').count().max(1);
                        let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                            "{{\"accepted\":{lines}}}"
                        ))));
                        if !synced {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        } else {
                            *r.status_mut() = hyper::StatusCode::ACCEPTED;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
