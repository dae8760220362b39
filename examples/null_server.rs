//! The do-nothing server of the serve benchmark (benches/serve_load.py): the same HTTP stack
//! as `holdfast serve` (hyper 1, HTTP/1.1, tokio), reading each request's body and answering
//! 202 with a small JSON body. holdfast's request rate is reported as a ratio to this one's on
//! the same machine in the same run.
//!
//! By default it keeps nothing. With `--append FILE` or `--objects DIR` (serve_load.py
//! `--durable-floor`) it answers only once the body is on stable storage, through a group
//! commit (every body that arrived while the last write ran, written together): appended to
//! FILE and `fdatasync`ed, the cheapest durable write there is; or as a new file in DIR,
//! fsynced, then DIR fsynced, the least a store of create-only objects costs (holdfast's
//! landing zone is one; S3 has no append). Neither parses, checks a token or encrypts, so
//! what they reach bounds any server that acknowledges only durable events on the same
//! machine and stack.
//!
//! usage: null_server [--append FILE | --objects DIR] [ADDRESS]
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
                eprintln!("null_server: writing a group: {e}");
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

/// The committer of `--append FILE` or `--objects DIR`, started; none without either.
fn durability(args: &mut std::iter::Peekable<impl Iterator<Item = String>>) -> Option<Arc<Group>> {
    let mode = args.next_if(|a| a == "--append" || a == "--objects")?;
    let usage = "usage: null_server [--append FILE | --objects DIR] [ADDRESS]";
    let path = std::path::PathBuf::from(args.next().expect(usage));
    let sink = if mode == "--objects" {
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
    Some(group)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let group = durability(&mut args);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
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
                        let status = match group {
                            Some(g) if g.add(&body).await.is_err() => {
                                hyper::StatusCode::SERVICE_UNAVAILABLE
                            }
                            _ => hyper::StatusCode::ACCEPTED,
                        };
                        let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                            "{{\"accepted\":{}}}",
                            body.iter().filter(|b| **b == b'\n').count().max(1)
                        ))));
                        *r.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
