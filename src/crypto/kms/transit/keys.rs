//! The Transit key's lifecycle: its versions (`GET keys/<key>`), a new version
//! (`POST keys/<key>/rotate`) and rewrapping many DEKs at once (`POST rewrap/<key>` with
//! `batch_input`): Transit decrypts and encrypts inside the server, so holdfast never sees
//! the DEKs it moves. Each item keeps its own context (`holdfast.dek.v1/<dek-id>`).

use super::*;
use crate::crypto::kms::KekVersion;

/// DEKs per `rewrap` request. OpenBao refuses a JSON body of more than 1,000 strings ("high
/// complexity"), and each item is four (two names, two values): 200 items stay under it.
const REWRAP_BATCH: usize = 200;

impl Transit {
    pub(super) async fn key_info(&self) -> Result<KekInfo, KmsError> {
        let path = format!("keys/{}", self.key);
        let data = match self.http.get(&path).await {
            Ok(v) => v,
            Err(Failure::NotFound) => return Err(self.no_such_key(&self.key)),
            Err(f) => return Err(self.http.error(f, &self.key, &path).await),
        };
        let d = &data["data"];
        let bad = |what: &str| KmsError::Backend {
            backend: self.http.backend(),
            key: self.key.clone(),
            problem: format!("`GET {path}` answered without {what}"),
        };
        let number = |field: &str| {
            d[field]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(field))
        };
        let primary = number("latest_version")?;
        let min_decryption_version = number("min_decryption_version")?;
        let mut versions = Vec::new();
        for (v, made) in d["keys"].as_object().ok_or_else(|| bad("keys"))? {
            let version: u32 = v.parse().map_err(|_| bad("numbered versions"))?;
            // symmetric keys give the creation time as Unix seconds
            let created_at = made
                .as_i64()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
            versions.push(KekVersion {
                version,
                created_at,
            });
        }
        // Transit lists only the versions it still decrypts under: the retired ones are
        // known by number alone
        for version in 1..min_decryption_version {
            if !versions.iter().any(|k| k.version == version) {
                versions.push(KekVersion {
                    version,
                    created_at: None,
                });
            }
        }
        versions.sort_by_key(|k| k.version);
        Ok(KekInfo {
            kek_id: self.kek_id.clone(),
            backend: self.describe(),
            primary,
            min_decryption_version,
            versions,
        })
    }

    pub(super) async fn rotate_key(&self) -> Result<u32, KmsError> {
        let path = format!("keys/{}/rotate", self.key);
        match self.http.post(&path, b"{}").await {
            Ok(_) => {}
            Err(Failure::NotFound) => return Err(self.no_such_key(&self.key)),
            Err(f) => return Err(self.http.error(f, &self.key, &path).await),
        }
        Ok(self.key_info().await?.primary)
    }

    /// Raises the key's `min_decryption_version` past `through` (never lowers it).
    pub(super) async fn retire_through(&self, through: u32) -> Result<(), KmsError> {
        let info = self.key_info().await?;
        if through >= info.primary {
            return Err(KmsError::Backend {
                backend: self.http.backend(),
                key: self.key.clone(),
                problem: format!(
                    "v{through} cannot be retired: the primary version is v{}",
                    info.primary
                ),
            });
        }
        if info.min_decryption_version > through {
            return Ok(());
        }
        let path = format!("keys/{}/config", self.key);
        let body = serde_json::to_vec(&json!({ "min_decryption_version": through + 1 }))
            .expect("serializes");
        match self.http.post(&path, &body).await {
            Ok(_) => Ok(()),
            Err(Failure::NotFound) => Err(self.no_such_key(&self.key)),
            Err(f) => Err(self.http.error(f, &self.key, &path).await),
        }
    }

    /// Rewraps `keys` in requests of [`REWRAP_BATCH`]. A request Transit refuses as a whole
    /// (400) is split in halves and sent again, down to single keys, so that a server with a
    /// lower limit still gets batches, and an error names the DEK it could not move.
    pub(super) async fn rewrap_keys(
        &self,
        keys: &[(&str, &WrappedKey)],
    ) -> Result<Vec<WrappedKey>, KmsError> {
        let mut out = Vec::with_capacity(keys.len());
        // ranges still to send, in order (a stack: the next one is last)
        let mut todo: Vec<std::ops::Range<usize>> = (0..keys.len())
            .step_by(REWRAP_BATCH)
            .map(|i| i..(i + REWRAP_BATCH).min(keys.len()))
            .rev()
            .collect();
        while let Some(r) = todo.pop() {
            let chunk = &keys[r.clone()];
            match self.rewrap_batch(chunk).await {
                Ok(mut done) => out.append(&mut done),
                Err(Failure::Status { status: 400, .. }) if chunk.len() > 1 => {
                    let mid = r.start + chunk.len() / 2;
                    todo.push(mid..r.end);
                    todo.push(r.start..mid);
                }
                Err(f) => return Err(self.rewrap_error(f, chunk).await),
            }
        }
        Ok(out)
    }

    async fn rewrap_error(&self, f: Failure, chunk: &[(&str, &WrappedKey)]) -> KmsError {
        match (chunk, f) {
            ([(id, w)], f) => self.unwrap_error(f, id, w).await,
            (_, f) => {
                let path = format!("rewrap/{}", self.key);
                self.http.error(f, &self.key, &path).await
            }
        }
    }

    async fn rewrap_batch(
        &self,
        chunk: &[(&str, &WrappedKey)],
    ) -> Result<Vec<WrappedKey>, Failure> {
        let mut items = Vec::with_capacity(chunk.len());
        for (id, w) in chunk {
            let text = match std::str::from_utf8(&w.ciphertext) {
                Ok(t) if w.kek_id == self.kek_id => t,
                _ => {
                    return Err(Failure::Status {
                        status: 400,
                        message: format!("{id}: not a ciphertext of {}", self.kek_id),
                    });
                }
            };
            items.push(json!({ "ciphertext": text, "context": self.context(id) }));
        }
        let body = serde_json::to_vec(&json!({ "batch_input": items })).expect("serializes");
        let data = self
            .http
            .post(&format!("rewrap/{}", self.key), &body)
            .await?;
        let results = data["data"]["batch_results"]
            .as_array()
            .ok_or(Failure::BadAnswer)?;
        if results.len() != chunk.len() {
            return Err(Failure::BadAnswer);
        }
        let mut out = Vec::with_capacity(chunk.len());
        for r in results {
            if let Some(e) = r["error"].as_str().filter(|e| !e.is_empty()) {
                return Err(Failure::Status {
                    status: 400,
                    message: e.to_string(),
                });
            }
            let text = r["ciphertext"].as_str().ok_or(Failure::BadAnswer)?;
            let (version, _) = split_version(text).ok_or(Failure::BadAnswer)?;
            out.push(WrappedKey {
                kek_id: self.kek_id.clone(),
                kek_version: version,
                ciphertext: text.as_bytes().to_vec(),
            });
        }
        Ok(out)
    }
}
