//! The embedded default KMS: a local keyring file (mode 0600, never inside a store) holding
//! versioned AES-256 KEKs, the blind-index master secret and the head-signing key.

use super::format::{self, KeyringEntry, Ring};
use super::*;

struct Kek {
    version: u32,
    created_at: String,
    material: Zeroizing<[u8; 32]>,
}

struct Versions {
    primary: u32,
    keks: Vec<Kek>,
    /// Versions below it are retired (keyring version 3).
    min_decryption: u32,
}

/// The embedded default KMS: a local keyring file (mode 0600, never inside a store).
pub struct LocalKeyring {
    path: PathBuf,
    kek_id: String,
    /// As the file held them when loaded or last rotated by this process.
    versions: std::sync::RwLock<Versions>,
    index_master: Zeroizing<[u8; 32]>,
    /// The head-signing key (zeroized on drop); `None` for a version-1 file until first use.
    signing: std::sync::Mutex<Option<ed25519_dalek::SigningKey>>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalKeyring({}, {} v{})",
            self.path.display(),
            self.kek_id,
            self.primary_version()
        )
    }
}

fn dek_aad(kek_id: &str, version: u32, dek_id: &str) -> Vec<u8> {
    aad(&[
        b"holdfast.dek.v1",
        kek_id.as_bytes(),
        version.to_string().as_bytes(),
        dek_id.as_bytes(),
    ])
}

#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
impl LocalKeyring {
    /// Creates a keyring with one fresh KEK. Refuses to overwrite an existing file.
    pub fn create(path: &Path, created_at: &str) -> Result<Self, KmsError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| KmsError::KeyringIo {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let mut material = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(material.as_mut());
        let mut index_master = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(index_master.as_mut());
        let ring = LocalKeyring {
            path: path.to_path_buf(),
            kek_id: format!("kek-{}", hex::encode(id)),
            versions: std::sync::RwLock::new(Versions {
                primary: 1,
                keks: vec![Kek {
                    version: 1,
                    created_at: created_at.to_string(),
                    material,
                }],
                min_decryption: 1,
            }),
            index_master,
            signing: std::sync::Mutex::new(Some(new_signing_key())),
        };
        let text = ring.to_json();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(ring)
    }

    /// Loads a keyring; refuses one readable or writable by group or others.
    pub fn load(path: &Path) -> Result<Self, KmsError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| KmsError::KeyringIo {
            path: path.to_path_buf(),
            source,
        };
        let bad = |problem: String| KmsError::Keyring {
            path: path.to_path_buf(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "permissions are {mode:o}; a keyring must be 0600 (run: chmod 600 {})",
                path.display()
            )));
        }
        let mut file = read_file(path)?;
        let mut keks = Vec::new();
        for k in &file.keys {
            let raw = Zeroizing::new(
                B64.decode(&k.material)
                    .map_err(|_| bad(format!("KEK v{} is not base64", k.version)))?,
            );
            let material: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("KEK v{} is not 32 bytes", k.version)))?;
            keks.push(Kek {
                version: k.version,
                created_at: k.created_at.clone(),
                material: Zeroizing::new(material),
            });
        }
        if !keks.iter().any(|k| k.version == file.primary) {
            return Err(bad(format!("primary KEK v{} missing", file.primary)));
        }
        let raw = Zeroizing::new(
            B64.decode(&file.index_master)
                .map_err(|_| bad("index master is not base64".into()))?,
        );
        let index_master = Zeroizing::new(
            <[u8; 32]>::try_from(raw.as_slice())
                .map_err(|_| bad("index master is not 32 bytes".into()))?,
        );
        let signing = file
            .signing_key
            .as_deref()
            .map(|s| {
                signing_key_from(s)
                    .ok_or_else(|| bad("signing key is not a base64 32-byte seed".into()))
            })
            .transpose()?;
        file.zeroize();
        Ok(LocalKeyring {
            path: path.to_path_buf(),
            kek_id: file.kek_id,
            versions: std::sync::RwLock::new(Versions {
                primary: file.primary,
                keks,
                min_decryption: file.min_decryption_version,
            }),
            index_master,
            signing: std::sync::Mutex::new(signing),
        })
    }

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let signing_key = self
            .signing
            .lock()
            .expect("signing key lock")
            .as_ref()
            .map(|k| B64.encode(k.as_bytes()));
        let v = self.versions();
        format::encode(Ring {
            kek_id: self.kek_id.clone(),
            primary: v.primary,
            keys: v
                .keks
                .iter()
                .map(|k| KeyringEntry {
                    version: k.version,
                    created_at: k.created_at.clone(),
                    material: B64.encode(k.material.as_ref()),
                })
                .collect(),
            index_master: B64.encode(self.index_master.as_ref()),
            signing_key,
            min_decryption_version: v.min_decryption,
        })
    }

    /// The signing key, adding one to a version-1 keyring file first. The file is rewritten
    /// under an exclusive `flock` (re-read inside it, so two processes upgrading at once agree
    /// on one key), through a 0600 temporary file in the same directory, fsync'd and renamed
    /// over the old one, then the directory is fsync'd: a crash leaves the old or the new file,
    /// never a mix. Chosen over refusing: a store must not stop committing because its
    /// keyring predates head signing, and the upgrade adds a key without touching the KEKs.
    fn signing_key_or_create(&self) -> Result<ed25519_dalek::SigningKey, KmsError> {
        let mut slot = self.signing.lock().expect("signing key lock");
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let key = upgrade_file(&self.path)?;
        *slot = Some(key.clone());
        Ok(key)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn primary_version(&self) -> u32 {
        self.versions().primary
    }

    fn versions(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        self.versions.read().expect("keyring versions lock")
    }

    fn kek(&self, version: u32) -> Result<Cipher, KmsError> {
        let v = self.versions();
        if version < v.min_decryption {
            return Err(KmsError::Retired {
                backend: self.describe(),
                kek_id: self.kek_id.clone(),
                version,
                min: v.min_decryption,
            });
        }
        let k = v
            .keks
            .iter()
            .find(|k| k.version == version)
            .ok_or_else(|| KmsError::KeyNotFound {
                backend: self.describe(),
                kek_id: self.kek_id.clone(),
                version,
            })?;
        Ok(DataKey::from_parts(format!("{}/v{}", self.kek_id, version), *k.material).cipher())
    }
}

fn new_signing_key() -> ed25519_dalek::SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn signing_key_from(b64: &str) -> Option<ed25519_dalek::SigningKey> {
    let raw = Zeroizing::new(B64.decode(b64).ok()?);
    let seed = Zeroizing::new(<[u8; 32]>::try_from(raw.as_slice()).ok()?);
    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Reads and checks a keyring file (versions 1 and 2).
#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
fn read_file(path: &Path) -> Result<Ring, KmsError> {
    let bad = |problem: String| KmsError::Keyring {
        path: path.to_path_buf(),
        problem,
    };
    let text = Zeroizing::new(std::fs::read(path).map_err(|source| KmsError::KeyringIo {
        path: path.to_path_buf(),
        source,
    })?);
    format::decode(&text).map_err(|e| bad(format!("not a keyring file this holdfast reads: {e}")))
}

/// Adds a signing key to the keyring file at `path` (see `signing_key_or_create`); returns
/// the key the file holds afterwards (another process's, if it upgraded first).
fn upgrade_file(path: &Path) -> Result<ed25519_dalek::SigningKey, KmsError> {
    edit_file(path, |file| {
        if let Some(k) = file.signing_key.as_deref() {
            let key = signing_key_from(k).ok_or_else(|| KmsError::Keyring {
                path: path.to_path_buf(),
                problem: "signing key is not a base64 32-byte seed".into(),
            })?;
            return Ok((key, false));
        }
        let key = new_signing_key();
        file.signing_key = Some(B64.encode(key.as_bytes()));
        Ok((key, true))
    })
}

/// Adds a fresh KEK version to the keyring file at `path` and makes it the primary one;
/// returns its number.
fn rotate_file(path: &Path, created_at: &str) -> Result<u32, KmsError> {
    edit_file(path, |file| {
        let version = file.keys.iter().map(|k| k.version).max().unwrap_or(0) + 1;
        let mut material = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(material.as_mut());
        file.keys.push(KeyringEntry {
            version,
            created_at: created_at.to_string(),
            material: B64.encode(material.as_ref()),
        });
        file.primary = version;
        Ok((version, true))
    })
}

/// Changes the keyring file at `path` under an exclusive `flock`: the file is re-read inside
/// the lock (so two processes changing it at once both keep their change), `edit` changes it
/// and says whether to write, and a write goes through a 0600 temporary file in the same
/// directory, fsync'd and renamed over the old one, then the directory is fsync'd: a crash
/// leaves the old or the new file, never a mix. The secrets read are wiped afterwards.
#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
fn edit_file<T>(
    path: &Path,
    edit: impl FnOnce(&mut Ring) -> Result<(T, bool), KmsError>,
) -> Result<T, KmsError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KmsError::KeyringIo {
        path: path.to_path_buf(),
        source,
    };
    let guard = std::fs::File::open(path).map_err(io)?;
    // SAFETY: flock on a file descriptor we own; released when `guard` closes.
    if unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    let mut file = read_file(path)?;
    let edited = edit(&mut file);
    let (out, write) = match edited {
        Ok(v) => v,
        Err(e) => {
            file.zeroize();
            return Err(e);
        }
    };
    if !write {
        file.zeroize();
        return Ok(out);
    }
    let text = format::encode(file);
    let tmp = path.with_extension(format!("edit-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let written = f
        .write_all(&text)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    drop(guard);
    Ok(out)
}

impl LocalKeyring {
    /// Wraps `dek` under the primary version.
    fn wrap_now(&self, dek: &DataKey) -> Result<WrappedKey, KmsError> {
        let primary = self.primary_version();
        let cipher = self.kek(primary)?;
        let ciphertext = cipher.seal(dek.expose(), &dek_aad(&self.kek_id, primary, dek.id()));
        Ok(WrappedKey {
            kek_id: self.kek_id.clone(),
            kek_version: primary,
            ciphertext,
        })
    }

    fn unwrap_now(&self, dek_id: &str, wrapped: &WrappedKey) -> Result<DataKey, KmsError> {
        let invalid = || wrapped.invalid(dek_id);
        wrapped.check_kek(self, &self.kek_id)?;
        let cipher = self.kek(wrapped.kek_version)?;
        let plain = Zeroizing::new(
            cipher
                .open(
                    &wrapped.ciphertext,
                    &dek_aad(&self.kek_id, wrapped.kek_version, dek_id),
                    &|| dek_id.to_string(),
                )
                .map_err(|_| invalid())?,
        );
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| invalid())?;
        Ok(DataKey::from_parts(dek_id.to_string(), bytes))
    }

    /// Adds a KEK version (made at `now`) to the file and to this keyring, as the primary one.
    pub fn rotate_at(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u32, KmsError> {
        let version = rotate_file(&self.path, &crate::clock::fmt_ts(now))?;
        self.reload()?;
        Ok(version)
    }

    /// Records in the file that versions up to `through` no longer unwrap (their material
    /// stays: whoever holds the file could undo it; a KMS enforces it, a file cannot).
    pub fn retire_through(&self, through: u32) -> Result<(), KmsError> {
        let path = self.path.clone();
        edit_file(&self.path, |file| {
            if through >= file.primary {
                return Err(KmsError::Keyring {
                    path,
                    problem: format!(
                        "v{through} cannot be retired: the primary version is v{}",
                        file.primary
                    ),
                });
            }
            let min = file.min_decryption_version.max(through + 1);
            let changed = min != file.min_decryption_version;
            file.min_decryption_version = min;
            Ok(((), changed))
        })?;
        self.reload()
    }

    fn reload(&self) -> Result<(), KmsError> {
        let fresh = LocalKeyring::load(&self.path)?;
        let fresh = fresh.versions.into_inner().expect("keyring versions lock");
        *self.versions.write().expect("keyring versions lock") = fresh;
        Ok(())
    }

    fn kek_info(&self) -> KekInfo {
        let v = self.versions();
        let versions: Vec<KekVersion> = v
            .keks
            .iter()
            .map(|k| KekVersion {
                version: k.version,
                created_at: chrono::DateTime::parse_from_rfc3339(&k.created_at)
                    .ok()
                    .map(|t| t.to_utc()),
            })
            .collect();
        KekInfo {
            kek_id: self.kek_id.clone(),
            backend: self.describe(),
            primary: v.primary,
            min_decryption_version: v.min_decryption,
            versions,
        }
    }
}

impl Kms for LocalKeyring {
    fn describe(&self) -> String {
        format!("local keyring {}", self.path.display())
    }
    fn kek_id(&self) -> &str {
        &self.kek_id
    }
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        Box::pin(async move { self.wrap_now(dek) })
    }
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        Box::pin(async move { Ok(derive_index_key(&self.index_master, tenant)) })
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>> {
        Box::pin(async move {
            use ed25519_dalek::Signer;
            let key = self.signing_key_or_create()?;
            Ok(Signed {
                public_key: PublicKey(key.verifying_key().to_bytes()),
                signature: key.sign(message).to_bytes().to_vec(),
            })
        })
    }
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>> {
        Box::pin(async move {
            Ok(self
                .signing
                .lock()
                .expect("signing key lock")
                .as_ref()
                .map(|k| PublicKey(k.verifying_key().to_bytes())))
        })
    }
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(async move { self.unwrap_now(dek_id, wrapped) })
    }
    fn info(&self) -> BoxFuture<'_, Result<KekInfo, KmsError>> {
        Box::pin(async move { Ok(self.kek_info()) })
    }
    fn rotate(&self, now: chrono::DateTime<chrono::Utc>) -> BoxFuture<'_, Result<u32, KmsError>> {
        Box::pin(async move { self.rotate_at(now) })
    }
    fn retire(&self, through: u32) -> BoxFuture<'_, Result<(), KmsError>> {
        Box::pin(async move { self.retire_through(through) })
    }
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        Box::pin(async move {
            keys.iter()
                .map(|(id, w)| self.wrap_now(&self.unwrap_now(id, w)?))
                .collect()
        })
    }
}
