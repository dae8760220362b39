//! A data file's record dictionaries as its footer holds them ([`FileDictionaries`]): for
//! format 1 one for every record (or none), for format 2 one per tenant (or none). Every
//! reader of records (query decryption, deep verify, a sweep's rewrite) picks a record's
//! dictionary by its `tenant_id` here. A dictionary is opened on first use, so a reader that
//! opens one tenant's records never decrypts another tenant's dictionary.

use super::footer;
use crate::crypto::{Cipher, CryptoError, Dictionary, DictionaryScope};
use crate::lake::LakeError;
use parquet::file::metadata::FileMetaData;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zstd::dict::DecoderDictionary;

/// A sealed dictionary and the DEK id it names.
struct Sealed {
    dek_id: String,
    bytes: Vec<u8>,
}

enum Layout {
    /// Format 1: the file's one dictionary, if it has one.
    File(Option<Sealed>),
    /// Format 2: by tenant.
    Tenants(HashMap<String, Sealed>),
}

/// An opened dictionary, shared by the records that use it.
pub type Decoder = Arc<DecoderDictionary<'static>>;

/// The record dictionaries of one data file, opened with its DEK as records need them.
pub struct FileDictionaries {
    object: String,
    cipher: Cipher,
    layout: Layout,
    opened: Mutex<HashMap<String, Option<Decoder>>>,
}

impl std::fmt::Debug for FileDictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileDictionaries({})", self.object)
    }
}

fn corrupt(object: &str, problem: String) -> LakeError {
    LakeError::Corrupt {
        object: object.to_string(),
        problem,
    }
}

fn base64(object: &str, key: &str, v: &str) -> Result<Vec<u8>, LakeError> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v)
        .map_err(|_| corrupt(object, format!("footer {key} is not base64")))
}

impl FileDictionaries {
    /// The dictionaries a footer lists (checked by [`footer::check`] first); `cipher` is the
    /// file's DEK, `object` names the file in every error.
    pub fn from_footer(md: &FileMetaData, cipher: Cipher, object: &str) -> Result<Self, LakeError> {
        footer::check(md, object)?;
        let shared = footer::value(md, footer::DICTIONARY);
        let tenants = footer::value(md, footer::DICTIONARIES);
        let layout = match footer::value(md, footer::VERSION_KEY) {
            Some("1") => {
                if tenants.is_some() {
                    return Err(corrupt(
                        object,
                        format!("a version 1 footer with {}", footer::DICTIONARIES),
                    ));
                }
                let sealed = shared
                    .map(|v| base64(object, footer::DICTIONARY, v))
                    .transpose()?
                    .map(|bytes| Sealed {
                        dek_id: cipher.dek_id().to_string(),
                        bytes,
                    });
                Layout::File(sealed)
            }
            _ => {
                if shared.is_some() {
                    return Err(corrupt(
                        object,
                        format!("a version 2 footer with {}", footer::DICTIONARY),
                    ));
                }
                let entries = match tenants {
                    Some(v) => footer::decode_dictionaries(v)
                        .map_err(|e| corrupt(object, format!("data file footer: {e}")))?,
                    None => Vec::new(),
                };
                let mut by_tenant = HashMap::with_capacity(entries.len());
                for e in entries {
                    let bytes = base64(object, footer::DICTIONARIES, &e.sealed)?;
                    let sealed = Sealed {
                        dek_id: e.dek_id,
                        bytes,
                    };
                    by_tenant.insert(e.tenant_id, sealed);
                }
                Layout::Tenants(by_tenant)
            }
        };
        Ok(FileDictionaries {
            object: object.to_string(),
            cipher,
            layout,
            opened: Mutex::default(),
        })
    }

    /// Whether the file is of format 1 (one dictionary for every tenant).
    #[cfg(test)]
    pub fn shared(&self) -> bool {
        matches!(self.layout, Layout::File(_))
    }

    /// The file's DEK.
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }

    /// The tenants with a dictionary of their own (format 2), sorted.
    #[cfg(test)]
    pub fn tenants(&self) -> Vec<&str> {
        let mut t: Vec<&str> = match &self.layout {
            Layout::Tenants(m) => m.keys().map(String::as_str).collect(),
            Layout::File(_) => Vec::new(),
        };
        t.sort_unstable();
        t
    }

    /// The sealed dictionary of `tenant` in a format 2 file, after checking which DEK seals it.
    #[cfg(test)]
    pub fn sealed(&self, tenant: &str) -> Result<Option<&[u8]>, CryptoError> {
        let Layout::Tenants(m) = &self.layout else {
            return Ok(None);
        };
        match m.get(tenant) {
            Some(s) => self.check_key(s, tenant).map(|()| Some(s.bytes.as_slice())),
            None => Ok(None),
        }
    }

    fn what(&self, tenant: &str) -> String {
        match self.layout {
            Layout::File(_) => format!("dictionary of {}", self.object),
            Layout::Tenants(_) => format!("dictionary of tenant {tenant} in {}", self.object),
        }
    }

    fn check_key(&self, s: &Sealed, tenant: &str) -> Result<(), CryptoError> {
        if s.dek_id == self.cipher.dek_id() {
            return Ok(());
        }
        Err(CryptoError::OtherKey {
            what: self.what(tenant),
            dek_id: s.dek_id.clone(),
        })
    }

    /// The dictionary the records of `tenant` were compressed with (`None`: plain zstd),
    /// opened on first use. Fails, naming the file and tenant, when it does not authenticate
    /// as that tenant's under the file's DEK.
    pub fn for_tenant(&self, tenant: &str) -> Result<Option<Decoder>, CryptoError> {
        let (key, sealed, scope) = match &self.layout {
            Layout::File(s) => ("", s.as_ref(), DictionaryScope::File),
            Layout::Tenants(m) => (tenant, m.get(tenant), DictionaryScope::Tenant(tenant)),
        };
        let mut opened = self.opened.lock().expect("dictionaries lock");
        if let Some(d) = opened.get(key) {
            return Ok(d.clone());
        }
        let d = match sealed {
            Some(s) => {
                self.check_key(s, tenant)?;
                let what = || self.what(tenant);
                Some(Arc::new(Dictionary::open(
                    &self.cipher,
                    scope,
                    &s.bytes,
                    &what,
                )?))
            }
            None => None,
        };
        opened.insert(key.to_string(), d.clone());
        Ok(d)
    }
}

#[cfg(test)]
mod tests;
