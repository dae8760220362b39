//! `forward!`: the [`Kms`](super::Kms) methods a decorator passes to the service it wraps
//! unchanged, named once each, so that each decorator spells out only what it changes.

/// Inside `impl Kms for T`, forwards each named method to `self.<field>`.
macro_rules! forward {
    ($f:ident; $($m:ident),+ $(,)?) => { $( $crate::crypto::kms::forward!(@ $f $m); )+ };
    (@ $f:ident describe) => {
        fn describe(&self) -> String { self.$f.describe() }
    };
    (@ $f:ident kek_id) => {
        fn kek_id(&self) -> &str { self.$f.kek_id() }
    };
    (@ $f:ident wrap) => {
        fn wrap<'a>(
            &'a self,
            dek: &'a $crate::crypto::DataKey,
        ) -> futures::future::BoxFuture<'a, Result<$crate::crypto::kms::WrappedKey, $crate::crypto::kms::KmsError>> {
            self.$f.wrap(dek)
        }
    };
    (@ $f:ident unwrap_key) => {
        fn unwrap_key<'a>(
            &'a self,
            dek_id: &'a str,
            wrapped: &'a $crate::crypto::kms::WrappedKey,
        ) -> futures::future::BoxFuture<'a, Result<$crate::crypto::DataKey, $crate::crypto::kms::KmsError>> {
            self.$f.unwrap_key(dek_id, wrapped)
        }
    };
    (@ $f:ident index_key) => {
        fn index_key<'a>(
            &'a self,
            tenant: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<$crate::crypto::kms::IndexKey, $crate::crypto::kms::KmsError>> {
            self.$f.index_key(tenant)
        }
    };
    (@ $f:ident sign) => {
        fn sign<'a>(
            &'a self,
            message: &'a [u8],
        ) -> futures::future::BoxFuture<'a, Result<$crate::crypto::kms::Signed, $crate::crypto::kms::KmsError>> {
            self.$f.sign(message)
        }
    };
    (@ $f:ident signing_key) => {
        fn signing_key(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<Option<$crate::crypto::kms::PublicKey>, $crate::crypto::kms::KmsError>> {
            self.$f.signing_key()
        }
    };
    (@ $f:ident info) => {
        fn info(&self) -> futures::future::BoxFuture<'_, Result<$crate::crypto::kms::KekInfo, $crate::crypto::kms::KmsError>> {
            self.$f.info()
        }
    };
    (@ $f:ident rotate) => {
        fn rotate(
            &self,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<'_, Result<u32, $crate::crypto::kms::KmsError>> {
            self.$f.rotate(now)
        }
    };
    (@ $f:ident retire) => {
        fn retire(&self, through: u32) -> futures::future::BoxFuture<'_, Result<(), $crate::crypto::kms::KmsError>> {
            self.$f.retire(through)
        }
    };
    (@ $f:ident rewrap) => {
        fn rewrap<'a>(
            &'a self,
            keys: &'a [(&'a str, &'a $crate::crypto::kms::WrappedKey)],
        ) -> futures::future::BoxFuture<'a, Result<Vec<$crate::crypto::kms::WrappedKey>, $crate::crypto::kms::KmsError>> {
            self.$f.rewrap(keys)
        }
    };
    (@ $f:ident calls) => {
        fn calls(&self) -> $crate::crypto::kms::KmsCalls { self.$f.calls() }
    };
    (@ $f:ident tenant) => {
        fn tenant(&self, tenant: &str) -> Option<std::sync::Arc<dyn $crate::crypto::kms::Kms>> {
            self.$f.tenant(tenant)
        }
    };
    (@ $f:ident tenants) => {
        fn tenants(&self) -> Vec<(String, std::sync::Arc<dyn $crate::crypto::kms::Kms>)> {
            self.$f.tenants()
        }
    };
    (@ $f:ident wrap_under) => {
        fn wrap_under<'a>(
            &'a self,
            dek: &'a $crate::crypto::DataKey,
            kek_id: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<$crate::crypto::kms::WrappedKey, $crate::crypto::kms::KmsError>> {
            self.$f.wrap_under(dek, kek_id)
        }
    };
}
pub(crate) use forward;
