//! Object locks, modelled on S3 Object Lock in compliance mode: per object a retain-until that
//! can only be extended and a legal-hold flag with no expiry. One rule decides whether an
//! object may go ([`Lock::refusal`]: under legal hold, or retained until after now); every
//! delete of committed data goes through [`Store::delete_checked`], which applies it.
//!
//! A backend keeps the lock state through [`ObjectLock`]: the local backend as a lock record
//! per object under `_locks/` (apart from manifests and any hold registry, so wiping or
//! rolling those back unlocks nothing) plus read-only file modes; the memory backend in a map
//! beside its objects. The lock record's on-disk format is [`LockFile`] (`holdfast.lock`,
//! version 1), read back with [`crate::format::decode`].

use super::{Durability, Store};
use crate::lake::LakeError;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

/// Lock state of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    pub retain_until: Option<DateTime<Utc>>,
    pub legal_hold: bool,
}

impl Lock {
    /// The one rule: why the storage layer refuses to delete this object at `now`, if it
    /// does (a legal hold, or a retain-until still ahead).
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<String> {
        if self.legal_hold {
            Some("under legal hold".to_string())
        } else {
            self.retain_until
                .filter(|u| *u > now)
                .map(|u| format!("retained until {u}"))
        }
    }
}

/// Where a backend keeps lock state. Only [`Store`] calls it, after checking the rules.
#[async_trait::async_trait]
pub(crate) trait ObjectLock: Send + Sync {
    /// The lock of `path` (the default, unlocked, when it has none).
    async fn get_lock(&self, path: &Path) -> Result<Lock, LakeError>;
    /// Records `lock` as the lock of `path`.
    async fn put_lock(&self, path: &Path, lock: &Lock, d: Durability) -> Result<(), LakeError>;
    /// Forgets the lock of `path`, which was just deleted.
    async fn forget_lock(&self, path: &Path, d: Durability) -> Result<(), LakeError>;
}

/// Name of the lock record format.
pub(crate) const FORMAT: &str = "holdfast.lock";

/// A lock record as stored (local backend). Frozen: a new layout is a new variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum LockFile {
    #[serde(rename = "1")]
    V1(LockV1),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockV1 {
    format: String,
    retain_until: Option<DateTime<Utc>>,
    legal_hold: bool,
}

impl From<&Lock> for LockFile {
    fn from(l: &Lock) -> Self {
        LockFile::V1(LockV1 {
            format: FORMAT.into(),
            retain_until: l.retain_until,
            legal_hold: l.legal_hold,
        })
    }
}

impl From<LockFile> for Lock {
    fn from(f: LockFile) -> Self {
        match f {
            LockFile::V1(v) => Lock {
                retain_until: v.retain_until,
                legal_hold: v.legal_hold,
            },
        }
    }
}

impl LockFile {
    pub(crate) fn encode(lock: &Lock) -> Vec<u8> {
        crate::format::encode(&LockFile::from(lock))
    }

    /// Reads a lock record; another format or an unknown version is `Corrupt`.
    pub(crate) fn decode(object: &Path, bytes: &[u8]) -> Result<Lock, LakeError> {
        crate::format::decode::<LockFile>(bytes, FORMAT, &["1"])
            .map(Lock::from)
            .map_err(|e| LakeError::Corrupt {
                object: object.to_string(),
                problem: e.to_string(),
            })
    }
}

fn locked(path: &Path, reason: String) -> LakeError {
    LakeError::ObjectLocked {
        object: path.to_string(),
        reason,
    }
}

impl Store {
    /// The lock of an object (unlocked when it has none).
    pub async fn lock(&self, path: &Path) -> Result<Lock, LakeError> {
        self.backend.get_lock(path).await
    }

    /// Sets or extends an object's retain-until; shortening it is refused.
    pub async fn retain_until(&self, path: &Path, until: DateTime<Utc>) -> Result<(), LakeError> {
        let lock = self.lock(path).await?;
        self.retain_from(path, lock, until).await
    }

    /// [`Store::retain_until`] from the lock just read.
    async fn retain_from(
        &self,
        path: &Path,
        mut lock: Lock,
        until: DateTime<Utc>,
    ) -> Result<(), LakeError> {
        match lock.retain_until {
            Some(current) if until < current => {
                return Err(locked(
                    path,
                    format!("retain-until {current} can only be extended (asked {until})"),
                ));
            }
            Some(current) if until == current => return Ok(()),
            _ => {}
        }
        lock.retain_until = Some(until);
        self.backend.put_lock(path, &lock, self.durability).await
    }

    /// Makes sure an object is retained at least until `until` (extends; never shortens).
    pub async fn ensure_retained(
        &self,
        path: &Path,
        until: DateTime<Utc>,
    ) -> Result<(), LakeError> {
        let lock = self.lock(path).await?;
        match lock.retain_until {
            Some(current) if current >= until => Ok(()),
            _ => self.retain_from(path, lock, until).await,
        }
    }

    /// Sets or clears an object's legal-hold flag.
    pub async fn legal_hold(&self, path: &Path, on: bool) -> Result<(), LakeError> {
        let mut lock = self.lock(path).await?;
        if lock.legal_hold != on {
            lock.legal_hold = on;
            self.backend.put_lock(path, &lock, self.durability).await?;
        }
        Ok(())
    }

    /// Why the storage layer refuses to delete an object with `lock` at `now`, if it does:
    /// [`Lock::refusal`] at `now`, or at the provider's clock where that is earlier (S3
    /// judges retain-until by its own clock, so a commit never counts on a delete the
    /// provider will refuse). Read the lock first ([`Store::lock`]).
    pub fn refusal(&self, lock: &Lock, now: DateTime<Utc>) -> Option<String> {
        let at = self.backend.provider_now().map_or(now, |p| p.min(now));
        lock.refusal(at)
    }

    /// Deletes an object unless its lock forbids it at `now` ([`Store::refusal`]; then
    /// `ObjectLocked`), and its lock with it.
    pub async fn delete_checked(&self, path: &Path, now: DateTime<Utc>) -> Result<(), LakeError> {
        let lock = self.lock(path).await?;
        if let Some(reason) = self.refusal(&lock, now) {
            return Err(locked(path, reason));
        }
        self.delete(path).await?;
        self.backend.forget_lock(path, self.durability).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_one_rule() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let day = chrono::Duration::days(1);
        let lock = |until: Option<DateTime<Utc>>, hold| Lock {
            retain_until: until,
            legal_hold: hold,
        };
        assert_eq!(lock(None, false).refusal(now), None);
        assert_eq!(lock(Some(now), false).refusal(now), None, "until now: free");
        assert_eq!(lock(Some(now - day), false).refusal(now), None);
        assert!(
            lock(Some(now + day), false)
                .refusal(now)
                .unwrap()
                .starts_with("retained until")
        );
        assert_eq!(
            lock(Some(now - day), true).refusal(now).as_deref(),
            Some("under legal hold"),
            "a legal hold outlives retain-until"
        );
        assert!(lock(None, true).refusal(now).is_some());
    }

    #[test]
    fn the_lock_record_format_is_frozen_and_checked_on_read() {
        let lock = Lock {
            retain_until: Some(Utc.with_ymd_and_hms(2031, 6, 30, 12, 0, 0).unwrap()),
            legal_hold: true,
        };
        let bytes = LockFile::encode(&lock);
        crate::format::golden("lock-v1.json", &bytes);
        let p = Path::from("_locks/x.lock.json");
        assert_eq!(LockFile::decode(&p, &bytes).unwrap(), lock);
        let newer = String::from_utf8(bytes.clone())
            .unwrap()
            .replace(r#""version": "1""#, r#""version": "2""#);
        let err = LockFile::decode(&p, newer.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, LakeError::Corrupt { problem, .. } if problem.contains("version 2 is not one")),
            "{err}"
        );
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace(FORMAT, "holdfast.lease");
        assert!(LockFile::decode(&p, other.as_bytes()).is_err());
        // today's unversioned record is refused, not read as unlocked
        let old = br#"{"retain_until":"2031-06-30T12:00:00Z","legal_hold":true}"#;
        assert!(LockFile::decode(&p, old).is_err());
    }
}
