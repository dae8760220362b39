//! Audited decryption in SQL. With `--decrypt`, the session gets `decrypt_payload(payload,
//! tenant_id, event_id, interaction_id, dek_id)` (the canonical record as JSON text), a view
//! `decrypted` (= `events` plus a `record` column) and `json_get(json, key, …)`. DEKs are
//! unwrapped on first use; the [`Decryptor`] remembers which DEKs it unwrapped and which events
//! it opened, for the audit entry the caller writes before showing anything.

use crate::crypto::kms::{Kms, WrappedKey};
use crate::lake::datafile;
use crate::lake::manifest::Loaded;
use crate::storage::Store;
use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Distinct (tenant, address) blind indexes one statement may compute. A search names a few
/// addresses; computing more is enumerating, which the blind index exists to prevent. A
/// constant: no flag, setting or environment of the caller raises it.
pub const MAX_BLIND_INDEXES_PER_STATEMENT: usize = 100;

/// Files whose opened record groups a statement keeps (those its last calls read). The key
/// cache holds up to [`crate::crypto::cache::DEFAULT_CAPACITY`] files' DEKs; a file that
/// falls out of this list keeps its DEK but closes its groups (each up to 16 of at most
/// 256 KiB of plaintext), so a statement over thousands of files holds at most this many
/// files' groups, however many it reads. A scan reads a file's rows in order, a few
/// files at a time (one per partition of the plan).
const WARM_FILES: usize = 8;

/// A file's records, opened with its DEK (formats 1 and 2: each tenant's dictionary on its
/// first record; format 3: the groups the rows of one call name).
struct FileKey {
    records: Mutex<datafile::Records>,
    path: object_store::path::Path,
}

/// Opens records of committed files, unwrapping each file's DEK once.
pub struct Decryptor {
    store: Store,
    kms: Arc<dyn Kms>,
    files: HashMap<String, (object_store::path::Path, u64, WrappedKey)>,
    /// Unwrapped DEKs (and dictionaries), bounded in count and age.
    keys: Mutex<crate::crypto::cache::KeyCache<Arc<FileKey>>>,
    opened: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
    /// The files the last calls read, most recent first (at most [`WARM_FILES`]).
    warm: Mutex<Warm<Arc<FileKey>>>,
    index_keys: crate::crypto::IndexKeyCache,
    /// Blind indexes computed for this statement, by (tenant, address).
    blind_indexes: Mutex<HashMap<(String, String), [u8; crate::crypto::BLIND_INDEX_BYTES]>>,
    /// The tenants whose rows may be opened (`None`: every tenant); set by the access gate.
    scope: Mutex<Option<BTreeSet<String>>>,
}

/// An error the decryption functions raise themselves. Its message is their own (tenant,
/// event and DEK ids, never plaintext), so the access gate may show it as it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OwnError {
    /// `outside_scope`, `unreadable_record` or `usage`.
    pub kind: &'static str,
    pub message: String,
}

fn own(kind: &'static str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(OwnError { kind, message }))
}

fn unreadable(message: String) -> DataFusionError {
    own("unreadable_record", message)
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decryptor({} files)", self.files.len())
    }
}

impl Decryptor {
    pub fn new(store: Store, kms: Arc<dyn Kms>, latest: &[Loaded]) -> Self {
        let files = latest
            .iter()
            .flat_map(|l| l.manifest.files.iter())
            // every entry of a loaded manifest is a data file path (checked when read)
            .filter_map(|f| Some((f, f.location().ok()?)))
            .map(|(f, location)| {
                (
                    f.encryption.dek_id.clone(),
                    (location, f.size_bytes, f.encryption.wrapped_dek.clone()),
                )
            })
            .collect();
        Decryptor {
            store,
            kms,
            files,
            keys: Mutex::new(crate::crypto::cache::KeyCache::default()),
            opened: Mutex::default(),
            warm: Mutex::new(Warm::new(WARM_FILES)),
            index_keys: Default::default(),
            blind_indexes: Default::default(),
            scope: Mutex::default(),
        }
    }

    /// Opens only rows of these tenants from now on (`None`: every tenant).
    pub fn restrict(&self, tenants: Option<BTreeSet<String>>) {
        *self.scope.lock().expect("lock") = tenants;
    }

    fn allow(&self, tenant: &str) -> DfResult<()> {
        match &*self.scope.lock().expect("lock") {
            Some(t) if !t.contains(tenant) => Err(own(
                "outside_scope",
                format!("a row of tenant {tenant} is outside the tenants this actor may decrypt"),
            )),
            _ => Ok(()),
        }
    }

    fn key(&self, dek_id: &str) -> Result<Arc<FileKey>, String> {
        if let Some(k) = self.keys.lock().expect("lock").get(dek_id) {
            return Ok(k);
        }
        let (path, size, wrapped) = self
            .files
            .get(dek_id)
            .ok_or_else(|| format!("DEK {dek_id} is not in any committed manifest"))?;
        let load = async {
            let dek = self
                .kms
                .unwrap_key(dek_id, wrapped)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let md = datafile::footer(&self.store, path, *size)
                .await
                .map_err(|e| e.to_string())?;
            let records =
                datafile::Records::from_footer(md.file_metadata(), dek.cipher(), path.as_ref())
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>(FileKey {
                records: Mutex::new(records),
                path: path.clone(),
            })
        };
        let key = Arc::new(tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(load)
        })?);
        self.keys.lock().expect("lock").insert(dek_id, key.clone());
        self.opened
            .lock()
            .expect("lock")
            .1
            .insert(dek_id.to_string());
        Ok(key)
    }

    /// Marks the files of one call as the most recently read; the groups of a file that
    /// falls past [`WARM_FILES`] are closed.
    fn touch(&self, keys: &HashMap<&str, Arc<FileKey>>) {
        let cold: Vec<Arc<FileKey>> = {
            let mut warm = self.warm.lock().expect("lock");
            keys.iter()
                .flat_map(|(d, k)| warm.touch(d, k.clone()))
                .collect()
        };
        for k in cold {
            k.records.lock().expect("lock").close();
        }
    }

    /// Gives each format 3 file the groups the rows of one call name: those their first rows
    /// in the call carry, then the rest read from the file.
    fn carry(
        &self,
        keys: &HashMap<&str, Arc<FileKey>>,
        payload: &arrow::array::BinaryArray,
        dek: &arrow::array::StringArray,
    ) -> DfResult<()> {
        let mut missing: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        for i in (0..payload.len()).filter(|&i| !payload.is_null(i)) {
            keys[dek.value(i)]
                .records
                .lock()
                .expect("lock")
                .carry(payload.value(i));
        }
        for i in (0..payload.len()).filter(|&i| !payload.is_null(i)) {
            let records = keys[dek.value(i)].records.lock().expect("lock");
            if let Some(ordinal) = records.missing(payload.value(i)) {
                missing.entry(dek.value(i)).or_default().insert(ordinal);
            }
        }
        for (dek_id, wanted) in missing {
            let key = &keys[dek_id];
            let load = self.store.get(&key.path);
            let bytes =
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(load))
                    .map_err(|e| unreadable(format!("{}: {e}", key.path)))?;
            key.records
                .lock()
                .expect("lock")
                .carry_from_file(bytes, &wanted)
                .map_err(|e| unreadable(e.to_string()))?;
        }
        Ok(())
    }

    /// The blind index of `value` for `tenant`; refused past
    /// [`MAX_BLIND_INDEXES_PER_STATEMENT`] distinct ones.
    fn blind_index(
        &self,
        tenant: &str,
        value: &str,
    ) -> Result<[u8; crate::crypto::BLIND_INDEX_BYTES], String> {
        let mut done = self.blind_indexes.lock().expect("lock");
        let k = (tenant.to_string(), value.to_string());
        if let Some(h) = done.get(&k) {
            return Ok(*h);
        }
        if done.len() >= MAX_BLIND_INDEXES_PER_STATEMENT {
            return Err(format!(
                "this statement computes more than {MAX_BLIND_INDEXES_PER_STATEMENT} blind indexes, \
                 the most one statement may: search for fewer addresses at a time"
            ));
        }
        let h = futures::executor::block_on(self.index_keys.blind_index(
            self.kms.as_ref(),
            tenant,
            value,
        ))
        .map_err(|e| e.to_string())?;
        done.insert(k, h);
        Ok(h)
    }

    /// How many distinct (tenant, address) blind indexes were computed.
    pub fn blind_indexes(&self) -> u64 {
        self.blind_indexes.lock().expect("lock").len() as u64
    }

    /// Calls made to the key service so far (where it counts them).
    pub fn kms_calls(&self) -> crate::crypto::kms::KmsCalls {
        self.kms.calls()
    }

    /// (event ids opened, DEKs unwrapped) so far.
    pub fn opened(&self) -> (Vec<String>, Vec<String>) {
        let o = self.opened.lock().expect("lock");
        (o.0.iter().cloned().collect(), o.1.iter().cloned().collect())
    }
}

fn strings(a: &ArrayRef) -> DfResult<ArrayRef> {
    Ok(arrow::compute::cast(a, &DataType::Utf8)?)
}

/// The files the last calls read, most recent first, at most `cap` of them.
struct Warm<T> {
    cap: usize,
    files: std::collections::VecDeque<(String, T)>,
}

impl<T> Warm<T> {
    fn new(cap: usize) -> Self {
        Warm {
            cap,
            files: Default::default(),
        }
    }

    /// `id` becomes the most recent; what falls past the cap is handed back.
    fn touch(&mut self, id: &str, value: T) -> Vec<T> {
        self.files.retain(|(d, _)| d != id);
        self.files.push_front((id.to_string(), value));
        let mut cold = Vec::new();
        while self.files.len() > self.cap {
            cold.extend(self.files.pop_back().map(|(_, v)| v));
        }
        cold
    }
}

/// The session's decryptor, compared and hashed by identity (UDFs must be `Eq + Hash`).
#[derive(Debug, Clone)]
struct Shared(Arc<Decryptor>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Shared {}
impl std::hash::Hash for Shared {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DecryptPayload {
    signature: Signature,
    decryptor: Shared,
}

impl ScalarUDFImpl for DecryptPayload {
    fn name(&self) -> &str {
        "decrypt_payload"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let payload = arrow::compute::cast(&arrays[0], &DataType::Binary)?;
        let payload = payload.as_binary::<i32>();
        let cols: Vec<ArrayRef> = arrays[1..5].iter().map(strings).collect::<DfResult<_>>()?;
        let (tenant, event, interaction, dek) = (
            cols[0].as_string::<i32>(),
            cols[1].as_string::<i32>(),
            cols[2].as_string::<i32>(),
            cols[3].as_string::<i32>(),
        );
        let mut keys = HashMap::new();
        for i in (0..payload.len()).filter(|&i| !payload.is_null(i)) {
            self.decryptor.0.allow(tenant.value(i))?;
            if !keys.contains_key(dek.value(i)) {
                let key = self.decryptor.0.key(dek.value(i)).map_err(unreadable)?;
                keys.insert(dek.value(i), key);
            }
        }
        self.decryptor.0.carry(&keys, payload, dek)?;
        let mut out = StringBuilder::new();
        let mut opened = Vec::new();
        for i in 0..payload.len() {
            if payload.is_null(i) {
                out.append_null();
                continue;
            }
            let ids = datafile::RowIds {
                tenant_id: tenant.value(i),
                event_id: event.value(i),
                interaction_id: interaction.value(i),
            };
            let plain = keys[dek.value(i)]
                .records
                .lock()
                .expect("lock")
                .open(ids, payload.value(i))
                .map_err(|e| unreadable(e.to_string()))?;
            out.append_value(String::from_utf8_lossy(&plain));
            opened.push(event.value(i).to_string());
        }
        // the sealed groups of this call are not kept for the next one
        keys.values()
            .for_each(|k| k.records.lock().expect("lock").forget());
        self.decryptor.0.touch(&keys);
        self.decryptor
            .0
            .opened
            .lock()
            .expect("lock")
            .0
            .extend(opened);
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `blind_index([tenant_id,] address)`: the HMAC a participant address has in `address_hmacs`
/// (per-tenant key; the one-argument form uses the query's `--tenant`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct BlindIndex {
    signature: Signature,
    decryptor: Shared,
    tenant: Option<String>,
}

impl ScalarUDFImpl for BlindIndex {
    fn name(&self) -> &str {
        "blind_index"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::FixedSizeBinary(
            crate::crypto::BLIND_INDEX_BYTES as i32,
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols: Vec<ArrayRef> = arrays.iter().map(strings).collect::<DfResult<_>>()?;
        let (tenants, values) = match cols.len() {
            2 => (Some(cols[0].as_string::<i32>()), cols[1].as_string::<i32>()),
            _ => (None, cols[0].as_string::<i32>()),
        };
        let mut out = arrow::array::FixedSizeBinaryBuilder::with_capacity(
            values.len(),
            crate::crypto::BLIND_INDEX_BYTES as i32,
        );
        for i in 0..values.len() {
            let tenant = match tenants {
                Some(t) if !t.is_null(i) => t.value(i).to_string(),
                Some(_) => {
                    out.append_null();
                    continue;
                }
                None => self.tenant.clone().ok_or_else(|| own("usage", "blind_index(address) needs --tenant; or call blind_index(tenant_id, address)".into()))?,
            };
            if values.is_null(i) {
                out.append_null();
                continue;
            }
            self.decryptor.0.allow(&tenant)?;
            // the cap's refusal is a usage error the gate may show as it is
            let h = self
                .decryptor
                .0
                .blind_index(&tenant, values.value(i))
                .map_err(|e| own("usage", e))?;
            out.append_value(h)?;
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `json_get(json, key, …)`: the value at that path; strings unquoted, others as JSON text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonGet {
    signature: Signature,
}

impl ScalarUDFImpl for JsonGet {
    fn name(&self) -> &str {
        "json_get"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols: Vec<ArrayRef> = arrays.iter().map(strings).collect::<DfResult<_>>()?;
        let json = cols[0].as_string::<i32>();
        let mut out = StringBuilder::new();
        for i in 0..json.len() {
            let v = if json.is_null(i) {
                None
            } else {
                serde_json::from_str::<serde_json::Value>(json.value(i)).ok()
            };
            let found = v.as_ref().and_then(|v| {
                cols[1..].iter().try_fold(v, |v, k| {
                    let k = k.as_string::<i32>().value(i);
                    match v {
                        serde_json::Value::Array(a) => {
                            k.parse::<usize>().ok().and_then(|n| a.get(n))
                        }
                        _ => v.get(k),
                    }
                })
            });
            match found {
                Some(serde_json::Value::String(s)) => out.append_value(s),
                Some(serde_json::Value::Null) | None => out.append_null(),
                Some(other) => out.append_value(other.to_string()),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Registers the decryption functions and the `decrypted` view.
pub async fn enable(
    ctx: &datafusion::prelude::SessionContext,
    decryptor: Arc<Decryptor>,
    tenant: Option<String>,
) -> DfResult<()> {
    let one_or_two = Signature::one_of(
        vec![TypeSignature::Any(1), TypeSignature::Any(2)],
        Volatility::Immutable,
    );
    ctx.register_udf(ScalarUDF::new_from_impl(BlindIndex {
        signature: one_or_two,
        decryptor: Shared(decryptor.clone()),
        tenant,
    }));
    let any = TypeSignature::Any(5);
    ctx.register_udf(ScalarUDF::new_from_impl(DecryptPayload {
        signature: Signature::new(any, Volatility::Immutable),
        decryptor: Shared(decryptor),
    }));
    ctx.sql("CREATE VIEW decrypted AS SELECT *, decrypt_payload(payload, tenant_id, event_id, interaction_id, dek_id) AS record FROM events").await?;
    Ok(())
}

/// `json_get` is useful without decryption too (on any JSON text).
pub fn register_json(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(JsonGet {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
}

#[cfg(test)]
mod tests {
    use super::Warm;

    /// The most recently read files stay; the one read longest ago is handed back, once.
    #[test]
    fn warm_files_hand_back_the_least_recently_read() {
        let mut w = Warm::new(2);
        assert!(w.touch("a", 1).is_empty());
        assert!(w.touch("b", 2).is_empty());
        assert!(w.touch("a", 1).is_empty(), "a read again is not a new file");
        assert_eq!(w.touch("c", 3), vec![2], "b was read longest ago");
        assert_eq!(w.touch("d", 4), vec![1]);
        assert_eq!(w.files.len(), 2);
    }
}
