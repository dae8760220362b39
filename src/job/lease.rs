//! One batch at a time per store: `_batch.lease`, created with a create-only put. A lease
//! whose holder ran on this host and is no longer alive (killed) is taken over.
//!
//! The same mechanism under `_holds.lease` serializes placing a legal hold with a sweep's
//! rewrites (both are short): a hold placed while a sweep computes which records survive
//! could otherwise miss records the sweep is dropping.

use super::JobError;
use crate::lake::layout;
use crate::lake::storage::{Put, Store};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    batch_id: String,
    host: String,
    pid: u32,
    started_at: String,
}

pub(crate) struct Lease {
    path: Path,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Lease {
    /// Takes the lease; returns whether a dead holder's lease was taken over.
    /// Takes the batch lease for `holder` (e.g. `batch <id>`, `sweep-<id>`).
    pub(crate) async fn acquire(
        store: &Store,
        holder: &str,
        started_at: &str,
    ) -> Result<(Lease, bool), JobError> {
        Self::acquire_at(store, layout::LEASE, holder, started_at).await
    }

    /// Takes the lease at `lease`, waiting up to `wait` while a live holder has it.
    pub(crate) async fn acquire_waiting(
        store: &Store,
        lease: &str,
        holder: &str,
        started_at: &str,
        wait: std::time::Duration,
    ) -> Result<(Lease, bool), JobError> {
        let until = std::time::Instant::now() + wait;
        loop {
            match Self::acquire_at(store, lease, holder, started_at).await {
                Err(JobError::Busy { .. }) if std::time::Instant::now() < until => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                other => return other,
            }
        }
    }

    async fn acquire_at(
        store: &Store,
        lease: &str,
        batch_id: &str,
        started_at: &str,
    ) -> Result<(Lease, bool), JobError> {
        let path = Path::from(lease);
        let me = LeaseFile {
            batch_id: batch_id.into(),
            host: hostname(),
            pid: std::process::id(),
            started_at: started_at.into(),
        };
        let body = serde_json::to_vec_pretty(&me).expect("serializes");
        let mut took_over = false;
        for _ in 0..2 {
            if store.put_new(&path, body.clone()).await? == Put::Created {
                return Ok((Lease { path }, took_over));
            }
            let Some(bytes) = store.get_opt(&path).await? else {
                continue;
            };
            let holder: Option<LeaseFile> = serde_json::from_slice(&bytes).ok();
            match holder {
                Some(h) if h.host == me.host && !alive(h.pid) => {
                    store.delete(&path).await?;
                    took_over = true;
                }
                Some(h) => {
                    return Err(JobError::Busy {
                        holder: format!(
                            "{} pid {} on {} since {}",
                            h.batch_id, h.pid, h.host, h.started_at
                        ),
                        path: store.local_path(&path).display().to_string(),
                    });
                }
                None => {
                    return Err(JobError::Busy {
                        holder: "unreadable lease".into(),
                        path: store.local_path(&path).display().to_string(),
                    });
                }
            }
        }
        Err(JobError::Busy {
            holder: "lease changed hands while taking it over".into(),
            path: store.local_path(&path).display().to_string(),
        })
    }

    pub(crate) async fn release(self, store: &Store) -> Result<(), JobError> {
        store.delete(&self.path).await?;
        Ok(())
    }
}
