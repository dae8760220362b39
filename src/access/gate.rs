//! The decryption gate: the one way to plaintext, for every command that decrypts (`query` and
//! `sql --decrypt`, `quarantine show` and `replay`, `validate`, `verify --deep`), and later
//! for the HTTP server.
//!
//! [`open`] checks, from the store's policy, that the session's OS user holds the
//! investigator role for the tenants concerned, and that a case names the purpose where the
//! command needs one; a refusal is audited (`decrypt.refused`). [`query`] runs one SQL
//! statement through it: the session decrypts only rows of the permitted tenants, and one
//! audit entry (`decrypt`) lists what the statement opened before anything is shown, failed
//! statements included (`failed: true` and the kind of error). An error raised while a
//! statement runs with decryption enabled is replaced by a message naming the expression and
//! the kind of failure: the original text may quote decrypted values.

use super::{AccessError, Reach, Result, Role, Session};
use crate::audit::{AuditEvent, Decrypted, Refused};
use crate::crypto::kms::Kms;
use crate::query::QueryError;
use crate::query::decrypt::OwnError;
use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use std::sync::Arc;

/// Why a command decrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// SQL with `decrypted`, `decrypt_payload()` and `blind_index()`.
    Query,
    /// One quarantine entry shown in full.
    QuarantineShow,
    /// Quarantined lines put back into the landing zone.
    QuarantineReplay,
    /// A dry run of the adapters over the landing zone and the quarantine.
    Validate,
    /// Every record decrypted to check it, nothing shown.
    DeepVerify,
    /// Records decrypted into an export directory (a production), for a case.
    Export,
}

impl Purpose {
    /// The name refusals are recorded under.
    pub fn what(self) -> &'static str {
        match self {
            Purpose::Query => "decrypt",
            Purpose::QuarantineShow => "quarantine.show",
            Purpose::QuarantineReplay => "quarantine.replay",
            Purpose::Validate => "validate",
            Purpose::DeepVerify => "verify.deep",
            Purpose::Export => "export",
        }
    }

    /// Every purpose but the deep check, which shows no record and serves no case, is done
    /// for a case.
    pub fn needs_case(self) -> bool {
        !matches!(self, Purpose::DeepVerify)
    }

    /// A query may be limited to some tenants (its rows are checked as they are opened); the
    /// others read what no tenant scope can bound (quarantined lines name their tenant only
    /// inside the ciphertext; a deep check reads every tenant).
    fn scoped(self) -> bool {
        matches!(self, Purpose::Query | Purpose::Export)
    }
}

/// What a decrypting command asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub purpose: Purpose,
    pub case: Option<&'a str>,
    /// The one tenant a query names (`--tenant`, for `blind_index(address)`).
    pub tenant: Option<&'a str>,
    /// The statement, as the audit trail records it (empty for commands without SQL).
    pub statement: &'a str,
}

/// An open gate: the checks passed; decryptions are recorded through it.
#[derive(Debug)]
pub struct Opened {
    session: Session,
    case: Option<String>,
    reach: Reach,
}

/// Checks a decrypting request against the policy; a refusal is audited.
pub async fn open(session: &Session, req: &Request<'_>) -> Result<Opened> {
    let case = req.case.map(str::trim).filter(|c| !c.is_empty());
    let os_user = &session.identity.os_user;
    let reach = session.policy.reach(os_user, Role::Investigator).cloned();
    let refusal = match (&reach, case) {
        (_, None) if req.purpose.needs_case() => Some(format!(
            "a case reference (--case) is required to decrypt ({})",
            req.purpose.what()
        )),
        (None, _) => session
            .check(Role::Investigator, None)
            .err()
            .map(|r| format!("{r}; decryption needs the investigator role")),
        (Some(_), _) if !req.purpose.scoped() => session
            .check(Role::Investigator, None)
            .err()
            .map(|r| format!("{r}: {} reads records of every tenant", req.purpose.what())),
        (Some(_), _) => req.tenant.and_then(|t| {
            session
                .check(Role::Investigator, Some(t))
                .err()
                .map(|r| format!("--tenant {t}: {r}"))
        }),
    };
    if let Some(reason) = refusal {
        let event = Refused {
            what: req.purpose.what(),
            query: req.statement,
            reason: &reason,
        };
        session
            .audit
            .record(&session.identity.actor, case, &event)
            .await?;
        return Err(AccessError::Refused(reason));
    }
    Ok(Opened {
        session: session.clone(),
        case: case.map(str::to_string),
        reach: reach.unwrap_or(Reach::All),
    })
}

impl Opened {
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The tenants whose records may be opened.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Records a decryption under the session's identity and the case.
    pub async fn record<E: AuditEvent>(&self, event: &E) -> Result<()> {
        self.session.record(self.case.as_deref(), event).await
    }
}

/// Quarantined and landing lines were decrypted for a dry run of the adapters.
#[derive(Debug, serde::Serialize)]
pub struct Validated {
    pub landing_segments: u64,
    pub quarantine_entries: u64,
    pub schema_version: Option<String>,
}
impl AuditEvent for Validated {
    const ACTION: &'static str = "validate";
}

/// Runs one SQL statement with decryption enabled, for `case`: checked, limited to the
/// tenants the session's OS user may decrypt, audited whether it succeeds or fails (before
/// any result is returned), and never an error that could quote a decrypted value.
pub async fn query(
    session: &Session,
    kms: Arc<dyn Kms>,
    case: Option<&str>,
    tenant: Option<&str>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    // refused before anything is planned or decrypted: only reads pass
    crate::query::statement::check_read_only(sql)?;
    // this statement's calls to the key service (a `sql` session shares one)
    let calls_before = kms.calls();
    let recorded = crate::query::redact::Redactor::from_kms(kms.as_ref())
        .await?
        .statement(sql);
    let req = Request {
        purpose: Purpose::Query,
        case,
        tenant,
        statement: &recorded,
    };
    let gate = open(session, &req).await?;
    // a partition whose latest manifest cannot be read is left out (`verify` reports it)
    let (latest, _damaged) = crate::lake::catalog::load_latest_each(&session.store).await?;
    let (ctx, decryptor) = crate::query::session_on(
        &session.store,
        latest,
        Some((kms, tenant.map(str::to_string))),
        crate::query::mentions_audit(sql),
    )
    .await?;
    let decryptor = decryptor.expect("decryption enabled");
    decryptor.restrict(gate.reach.tenants().cloned());
    // planning reads the statement and the schemas only: its errors carry no data
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(QueryError::from)?;
    // and nothing through the gate writes: no DDL, DML or SET next to decrypted data
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(QueryError::from)?;
    let result = crate::query::run_sql(&ctx, sql).await;
    let (events, deks) = decryptor.opened();
    let failure = result.as_ref().err().map(|e| Failure::of(e, &plan));
    let event = Decrypted {
        query: &recorded,
        records: events.len() as u64,
        event_ids: crate::audit::id_list(events),
        deks_unwrapped: deks,
        blind_indexes: decryptor.blind_indexes(),
        failed: failure.is_some(),
        error: failure.as_ref().map(|f| f.kind.code()),
        kms: decryptor.kms_calls().since(calls_before),
    };
    gate.record(&event).await?;
    match (result, failure) {
        (Ok(batches), _) => Ok(batches),
        (Err(_), Some(f)) => Err(AccessError::DecryptedQueryFailed(f.message())),
        (Err(e), None) => Err(e.into()),
    }
}

/// A failure of a statement that ran with decryption enabled, described without its text:
/// the kind (as the audit trail records it) and a message safe to show.
pub fn withheld(e: &QueryError, plan: &LogicalPlan) -> (&'static str, String) {
    let f = Failure::of(e, plan);
    (f.kind.code(), f.message())
}

/// The kind of a failure over decrypted data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cast,
    Parse,
    Arithmetic,
    Function,
    /// Raised by the decryption functions, with their own message (ids, never plaintext):
    /// a row outside the scope, a record that does not open, a usage error.
    Own(&'static str, String),
    Resources,
    Storage,
    Planning,
    Other,
}

impl Kind {
    fn code(&self) -> &'static str {
        match self {
            Kind::Cast => "cast",
            Kind::Parse => "parse",
            Kind::Arithmetic => "arithmetic",
            Kind::Function => "function",
            Kind::Own(code, _) => code,
            Kind::Resources => "resources",
            Kind::Storage => "storage",
            Kind::Planning => "planning",
            Kind::Other => "other",
        }
    }

    fn of_arrow(e: &ArrowError) -> Kind {
        match e {
            ArrowError::CastError(_) => Kind::Cast,
            ArrowError::ParseError(_) | ArrowError::JsonError(_) | ArrowError::CsvError(_) => {
                Kind::Parse
            }
            ArrowError::DivideByZero | ArrowError::ArithmeticOverflow(_) => Kind::Arithmetic,
            ArrowError::ComputeError(_) | ArrowError::InvalidArgumentError(_) => Kind::Function,
            ArrowError::MemoryError(_) => Kind::Resources,
            ArrowError::ExternalError(b) => Kind::of_external(b.as_ref()),
            _ => Kind::Other,
        }
    }

    fn of_external(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Kind {
        if let Some(o) = e.downcast_ref::<OwnError>() {
            Kind::Own(o.kind, o.message.clone())
        } else if let Some(d) = e.downcast_ref::<DataFusionError>() {
            Kind::of(d)
        } else if let Some(a) = e.downcast_ref::<ArrowError>() {
            Kind::of_arrow(a)
        } else {
            Kind::Other
        }
    }

    fn of(e: &DataFusionError) -> Kind {
        use DataFusionError as D;
        match e {
            D::Context(_, inner) | D::Diagnostic(_, inner) => Kind::of(inner),
            D::Shared(inner) => Kind::of(inner),
            D::Collection(v) => v.first().map_or(Kind::Other, Kind::of),
            D::ArrowError(a, _) => Kind::of_arrow(a),
            D::External(b) => Kind::of_external(b.as_ref()),
            D::Execution(_) => Kind::Function,
            D::ResourcesExhausted(_) => Kind::Resources,
            D::ObjectStore(_) | D::IoError(_) | D::ParquetError(_) => Kind::Storage,
            D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_) => Kind::Planning,
            _ => Kind::Other,
        }
    }
}

/// A failure described without its text: the kind and the expressions concerned.
#[derive(Debug)]
struct Failure {
    kind: Kind,
    expressions: Vec<String>,
}

impl Failure {
    fn of(e: &QueryError, plan: &LogicalPlan) -> Self {
        let kind = match e {
            QueryError::DataFusion(d) => Kind::of(d),
            QueryError::Arrow(a) => Kind::of_arrow(a),
            QueryError::Lake(_) => Kind::Storage,
            QueryError::Output(_) | QueryError::StatementsFailed { .. } => Kind::Other,
            QueryError::ReadOnly(_) => Kind::Planning,
        };
        let expressions = suspects(plan, &kind);
        Failure { kind, expressions }
    }

    fn message(&self) -> String {
        let what = match &self.kind {
            Kind::Own(_, m) => return m.clone(),
            Kind::Cast => "cast of a decrypted column failed",
            Kind::Parse => "parsing a decrypted value failed",
            Kind::Arithmetic => {
                "arithmetic on a decrypted value failed (overflow or division by zero)"
            }
            Kind::Function => "a function over decrypted data failed",
            Kind::Resources => "the statement ran out of memory or another resource",
            Kind::Storage => "reading the store failed",
            Kind::Planning => "planning the statement failed",
            Kind::Other => "the statement failed",
        };
        let at = match self.expressions.as_slice() {
            [] => String::new(),
            e => format!(" in {}", e.join(", ")),
        };
        format!(
            "{what}{at} (the error text is withheld: with decryption enabled it may quote decrypted values)"
        )
    }
}

/// Whether an expression reads decrypted data: the `record` column of `decrypted`, or a call
/// of `decrypt_payload`.
fn reads_plaintext(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        found = match x {
            Expr::Column(c) => c.name == "record",
            Expr::ScalarFunction(f) => f.name() == "decrypt_payload",
            _ => false,
        };
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether `e` is an expression of the kind that failed, applied to decrypted data.
fn suspect(e: &Expr, kind: &Kind) -> bool {
    let over = |inner: &[&Expr]| inner.iter().any(|x| reads_plaintext(x));
    match (kind, e) {
        (Kind::Cast, Expr::Cast(c)) => over(&[&c.expr]),
        (Kind::Cast, Expr::TryCast(c)) => over(&[&c.expr]),
        (Kind::Arithmetic, Expr::BinaryExpr(BinaryExpr { left, op, right })) => {
            matches!(
                op,
                Operator::Plus
                    | Operator::Minus
                    | Operator::Multiply
                    | Operator::Divide
                    | Operator::Modulo
            ) && over(&[left, right])
        }
        (Kind::Parse | Kind::Function | Kind::Other, Expr::ScalarFunction(f)) => {
            f.name() != "decrypt_payload" && f.args.iter().any(reads_plaintext)
        }
        _ => false,
    }
}

/// The expressions of the statement that may have failed this way (at most three, as
/// written in the statement: their text holds only what the user typed).
fn suspects(plan: &LogicalPlan, kind: &Kind) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|top| {
            top.apply(|e| {
                if suspect(e, kind) {
                    let mut text = e.to_string();
                    if text.len() > 160 {
                        let cut = (0..=157)
                            .rev()
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(0);
                        text.truncate(cut);
                        text.push_str("...");
                    }
                    if !out.contains(&text) {
                        out.push(text);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if out.len() >= 3 {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    out.truncate(3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_through_their_wrappers() {
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string '{secret}'".into(),
            )),
            None,
        );
        let wrapped = DataFusionError::Context(
            "x".into(),
            Box::new(DataFusionError::Shared(Arc::new(cast))),
        );
        assert_eq!(Kind::of(&wrapped), Kind::Cast);
        let scope = DataFusionError::External(Box::new(OwnError {
            kind: "outside_scope",
            message: "tenant t9".into(),
        }));
        assert!(matches!(Kind::of(&scope), Kind::Own("outside_scope", m) if m.contains("t9")));
        let f = Failure {
            kind: Kind::Cast,
            expressions: vec!["CAST(decrypted.record AS Int32)".into()],
        };
        let m = f.message();
        assert!(
            m.starts_with("cast of a decrypted column failed in CAST(decrypted.record"),
            "{m}"
        );
        assert!(!m.contains("secret"));
    }
}
