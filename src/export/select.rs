//! Which rows an export reads: the committed manifests, the signed head, the holds, and the
//! one SQL statement built from the request. Every value the user gave enters the statement
//! as a quoted literal, except `--where` and `--file`, which are SQL by design and run
//! through the same read-only checks as `holdfast query`.

use super::custody::{self, ManifestRead, Position};
use super::{ExportError, Given, Request, Result};
use crate::access::Session;
use crate::access::gate::{self, Purpose};
use crate::lake::manifest::Loaded;
use crate::retention::hold::Hold;
use chrono::{DateTime, Utc};

/// What the export reads, fixed before it starts.
pub(super) struct Plan {
    pub latest: Vec<Loaded>,
    pub head: Option<Position>,
    pub store_id: String,
    pub manifests: Vec<ManifestRead>,
    given: Given,
    decrypted: bool,
    /// `--hold`: the hold whose records are exported.
    hold: Option<Hold>,
    /// Holds protecting at `now`: expired records they cover are still exported.
    protecting: Vec<Hold>,
    now: DateTime<Utc>,
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn time(t: DateTime<Utc>) -> String {
    format!(
        "CAST({} AS TIMESTAMP)",
        lit(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    )
}

fn list(values: &[String]) -> String {
    values.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
}

/// The records a hold covers, as SQL over `events` (what [`Hold::covers`] decides in Rust).
pub(super) fn hold_predicate(h: &Hold) -> String {
    let mut all = Vec::new();
    if let Some(t) = &h.tenant_id {
        all.push(format!("tenant_id = {}", lit(t)));
    }
    if let Some(r) = &h.scope.date_range {
        all.push(format!(
            "occurred_at >= {} AND occurred_at <= {}",
            time(r.start),
            time(r.end)
        ));
    }
    let s = &h.scope;
    let mut any = Vec::new();
    if !s.interaction_ids.is_empty() {
        any.push(format!("interaction_id IN ({})", list(&s.interaction_ids)));
    }
    if !s.queue_ids.is_empty() {
        any.push(format!("queue_id IN ({})", list(&s.queue_ids)));
    }
    if !s.agent_ids.is_empty() {
        any.push(format!(
            "array_has_any(agent_ids, make_array({}))",
            list(&s.agent_ids)
        ));
    }
    if !any.is_empty() {
        all.push(format!("({})", any.join(" OR ")));
    }
    match all.is_empty() {
        true => "TRUE".into(),
        false => format!("({})", all.join(" AND ")),
    }
}

/// `--where` as one SQL expression, written back by the parser: text that closes the
/// parenthesis it is put in (`TRUE) OR (TRUE`) cannot reach past it and lift the conditions
/// the export adds (expiry, tenant reach).
pub(super) fn one_expression(text: &str) -> Result<String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let bad = |why: String| ExportError::Usage(format!("--where is not one SQL expression: {why}"));
    let mut p = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .map_err(|e| bad(e.to_string()))?;
    let expr = p.parse_expr().map_err(|e| bad(e.to_string()))?;
    match p.peek_token().token {
        Token::EOF => Ok(expr.to_string()),
        t => Err(bad(format!("unexpected {t} after the expression"))),
    }
}

/// `--file`'s query as one read-only query, written back by the parser (as [`one_expression`]).
pub(super) fn one_query(text: &str) -> Result<String> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let bad = |why: String| ExportError::Usage(format!("--file is not one SQL query: {why}"));
    let parsed = Parser::parse_sql(&GenericDialect {}, text).map_err(|e| bad(e.to_string()))?;
    match parsed.as_slice() {
        [Statement::Query(q)] => Ok(q.to_string()),
        [_] => Err(bad("not a query".into())),
        many => Err(bad(format!("{} statements", many.len()))),
    }
}

/// Reads the store's committed state and the holds; checks the request against them.
pub(super) async fn plan(session: &Session, req: &Request<'_>, now: DateTime<Utc>) -> Result<Plan> {
    let g = &req.given;
    if let (Some(f), Some(u)) = (g.from, g.until)
        && f > u
    {
        return Err(ExportError::Usage(format!(
            "--from {f} is after --until {u}"
        )));
    }
    let mut given = g.clone();
    given.predicate = g.predicate.as_deref().map(one_expression).transpose()?;
    given.query = g.query.as_deref().map(one_query).transpose()?;
    let store = &session.store;
    let (latest, damaged) = crate::lake::catalog::load_latest_each(store).await?;
    if let Some(d) = damaged.first() {
        return Err(ExportError::Usage(format!(
            "partition {} cannot be read (its latest manifest v{}: {}); an export must read every committed partition: run `holdfast verify`",
            d.partition, d.sequence, d.problem
        )));
    }
    let newest = crate::head::newest(store).await?;
    let (registry, _) = crate::retention::hold::load(store).await?;
    let hold = match &g.hold {
        None => None,
        Some(id) => Some(
            registry
                .holds
                .iter()
                .find(|h| &h.hold_id == id)
                .cloned()
                .ok_or_else(|| ExportError::Usage(format!("no hold {id:?} in the store")))?,
        ),
    };
    let protecting = registry
        .holds
        .into_iter()
        .filter(|h| h.protecting(now))
        .collect();
    let manifests = latest
        .iter()
        .map(|l| ManifestRead {
            partition: l.manifest.partition.dir(),
            sequence: l.manifest.sequence,
            sha256: l.sha256.clone(),
        })
        .collect();
    Ok(Plan {
        latest,
        head: newest.as_ref().map(|h| Position {
            sequence: h.head.sequence,
            sha256: h.sha256.clone(),
        }),
        store_id: newest.map_or_else(|| "unsigned".into(), |h| h.head.public_key.fingerprint()),
        manifests,
        given,
        decrypted: req.decrypt.is_some(),
        hold,
        protecting,
        now,
    })
}

impl Plan {
    /// Opens the decryption gate for a production (a refusal is audited, its statement's
    /// literals keyed by `redactor`).
    pub(super) async fn open_gate(
        &self,
        session: &Session,
        redactor: &crate::query::redact::Redactor,
        case: &str,
        actor_named: bool,
    ) -> Result<gate::Opened> {
        let recorded = redactor.statement(&self.statement(None));
        // a missing case is the gate's refusal; then a missing actor is this one
        if !actor_named && !case.trim().is_empty() {
            let reason = "a production names who makes it: give --actor NAME (a name the access policy maps to your OS user)";
            let event = crate::audit::Refused {
                what: Purpose::Export.what(),
                query: &recorded,
                reason,
            };
            session.record(Some(case.trim()), &event).await?;
            return Err(crate::access::AccessError::Refused(reason.into()).into());
        }
        let req = gate::Request {
            purpose: Purpose::Export,
            case: Some(case),
            tenant: self.given.tenant.as_deref(),
            statement: &recorded,
        };
        Ok(gate::open(session, &req).await?)
    }

    /// The statement: the export's columns from `events` (or `decrypted`), under every
    /// condition the request sets; for a production, only the tenants the gate opened.
    pub(super) fn statement(&self, gate: Option<&gate::Opened>) -> String {
        let g = &self.given;
        let mut cols = super::columns::INDEX_COLUMNS.join(", ");
        let table = if self.decrypted {
            cols.push_str(", record");
            "decrypted"
        } else {
            "events"
        };
        let mut conds = Vec::new();
        let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        if let Some(f) = g.from {
            conds.push(format!("occurred_at >= {}", time(midnight(f))));
        }
        if let Some(u) = g.until.and_then(|u| u.succ_opt()) {
            conds.push(format!("occurred_at < {}", time(midnight(u))));
        }
        if let Some(t) = &g.tenant {
            conds.push(format!("tenant_id = {}", lit(t)));
        }
        if let Some(tenants) = gate.and_then(|o| o.reach().tenants()) {
            let v: Vec<String> = tenants.iter().cloned().collect();
            conds.push(format!("tenant_id IN ({})", list(&v)));
        }
        if let Some(q) = &g.query {
            conds.push(format!(
                "event_id IN (SELECT event_id FROM ({q}) AS chosen)"
            ));
        }
        if let Some(p) = &g.predicate {
            conds.push(format!("({p})"));
        }
        match &self.hold {
            Some(h) => conds.push(hold_predicate(h)),
            None => {
                // expired records leave only when no protecting hold covers them
                let mut keep = vec![format!("expires_at > {}", time(self.now))];
                keep.extend(self.protecting.iter().map(hold_predicate));
                conds.push(format!("({})", keep.join(" OR ")));
            }
        }
        format!("SELECT {cols} FROM {table} WHERE {}", conds.join(" AND "))
    }

    /// The selection as the custody record states it.
    pub(super) fn selection(&self, statement: &str) -> custody::Selection {
        let g = &self.given;
        custody::Selection {
            from: g.from.map(|d| d.to_string()),
            until: g.until.map(|d| d.to_string()),
            tenant: g.tenant.clone(),
            predicate: g.predicate.clone(),
            query: g.query.clone(),
            hold: g.hold.clone(),
            statement: statement.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predicate_cannot_reach_past_its_parentheses() {
        assert_eq!(
            one_expression("state = 'CREATED' AND queue_id IN ('q1', 'q2')").unwrap(),
            "state = 'CREATED' AND queue_id IN ('q1', 'q2')"
        );
        for bad in ["TRUE) OR (TRUE", "TRUE; DROP TABLE x", ""] {
            let e = one_expression(bad);
            assert!(matches!(e, Err(ExportError::Usage(_))), "{bad:?}: {e:?}");
        }
        // a comment is dropped when the expression is written back
        assert_eq!(one_expression("1 = 1 -- x").unwrap(), "1 = 1");
        assert!(one_query("SELECT event_id FROM events;").is_ok());
        assert!(one_query("SELECT 1) AS x, (SELECT 2").is_err());
        assert!(one_query("SELECT 1; SELECT 2").is_err());
    }
}
