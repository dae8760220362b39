//! What a statement is, before anything runs it: only reads pass ([`check_read_only`]), and a
//! script is cut into statements by the SQL tokenizer ([`split`]), so a `;` inside a string
//! or a comment never ends a statement.
//!
//! Query sessions read the committed lake and nothing else: `COPY … TO`, `CREATE`, `DROP`,
//! `INSERT`, `SET` and every other statement that writes, defines or changes the session are
//! refused by name here, and DataFusion's [`SQLOptions`] refuse any DDL, DML or statement node
//! a plan still carries (`SELECT … INTO`, an `EXPLAIN` around a `COPY`, …). Results leave only
//! through the CLI's `--format`/`-o`.

use super::QueryError;
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, TokenizerError};

/// The options every session statement is planned under: no DDL, no DML, no statements.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses, by kind, any statement in `sql` that is not a read (`SELECT`/`WITH`/`VALUES`,
/// `EXPLAIN` of one, `SHOW`, `DESCRIBE`). A statement that does not parse is left to the
/// planner, whose error says why.
pub fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return Ok(());
    };
    for s in &statements {
        if let Some(kind) = refused(s) {
            return Err(QueryError::ReadOnly(kind));
        }
    }
    Ok(())
}

/// The kind of a statement that is not a read (`COPY`, `CREATE EXTERNAL TABLE`, `INSERT`, …).
fn refused(s: &DfStatement) -> Option<String> {
    match s {
        DfStatement::Statement(s) => refused_sql(s),
        DfStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".into()),
        DfStatement::CopyTo(_) => Some("COPY".into()),
        DfStatement::Reset(_) => Some("RESET".into()),
        DfStatement::Explain(e) => refused(&e.statement),
    }
}

fn refused_sql(s: &Statement) -> Option<String> {
    match s {
        Statement::Query(q) => refused_query(q),
        Statement::Explain { statement, .. } => refused_sql(statement),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. } => None,
        other => Some(variant_words(other)),
    }
}

fn refused_query(q: &Query) -> Option<String> {
    let ctes = q.with.iter().flat_map(|w| w.cte_tables.iter());
    ctes.map(|c| refused_query(&c.query))
        .find(Option::is_some)
        .flatten()
        .or_else(|| refused_body(&q.body))
}

fn refused_body(b: &SetExpr) -> Option<String> {
    match b {
        SetExpr::Select(s) if s.into.is_some() => Some("SELECT INTO".into()),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => None,
        SetExpr::Query(q) => refused_query(q),
        SetExpr::SetOperation { left, right, .. } => {
            refused_body(left).or_else(|| refused_body(right))
        }
        other => Some(variant_words(other)),
    }
}

/// `CreateTable` -> `CREATE TABLE`: the enum variant's name as SQL words. Only the name is
/// formatted (the writer stops at the first character after it), never the statement's values.
fn variant_words(v: &dyn std::fmt::Debug) -> String {
    struct Name(String);
    impl std::fmt::Write for Name {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if !c.is_ascii_alphanumeric() {
                    return Err(std::fmt::Error);
                }
                if c.is_ascii_uppercase() && !self.0.is_empty() {
                    self.0.push(' ');
                }
                self.0.push(c.to_ascii_uppercase());
            }
            Ok(())
        }
    }
    let mut name = Name(String::new());
    let _ = std::fmt::write(&mut name, format_args!("{v:?}"));
    if name.0.is_empty() {
        "this statement".into()
    } else {
        name.0
    }
}

/// A script cut into statements: the complete ones (each ended by a `;` outside strings and
/// comments, without it) and the text after the last `;`.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub statements: Vec<String>,
    pub rest: String,
}

/// Cuts `text` at every `;` token. Statements holding only whitespace and comments are
/// dropped. Fails when the text cannot be tokenized (an unterminated string or comment): the
/// caller reads more lines or reports it.
pub fn split(text: &str) -> Result<Split, TokenizerError> {
    let tokens = Tokenizer::new(&GenericDialect {}, text).tokenize_with_location()?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // byte offset of a 1-based (line, column in characters) location
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts[(line.max(1) - 1) as usize];
        text[start..]
            .char_indices()
            .nth(column.max(1) as usize - 1)
            .map_or(text.len(), |(i, _)| start + i)
    };
    let mut statements = Vec::new();
    let (mut from, mut meaningful) = (0, false);
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let end = offset(t.span.start.line, t.span.start.column);
                if meaningful {
                    statements.push(text[from..end].trim().to_string());
                }
                (from, meaningful) = (end + 1, false);
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => meaningful = true,
        }
    }
    let rest = if meaningful { &text[from..] } else { "" };
    Ok(Split {
        statements,
        rest: rest.trim_start().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Option<String> {
        match check_read_only(sql) {
            Err(QueryError::ReadOnly(k)) => Some(k),
            Err(e) => panic!("{e}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn only_reads_pass_and_refusals_name_the_statement() {
        for read in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a UNION ALL SELECT 2",
            "EXPLAIN SELECT count(*) FROM events",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "DESCRIBE events",
            "VALUES (1)",
        ] {
            assert_eq!(kind(read), None, "{read}");
        }
        for (sql, want) in [
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE events", "DROP"),
            ("INSERT INTO events VALUES (1)", "INSERT"),
            ("SET datafusion.execution.time_zone = 'X'", "SET"),
            ("RESET datafusion.execution.time_zone", "RESET"),
            ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x'", "COPY"),
            ("EXPLAIN INSERT INTO events VALUES (1)", "INSERT"),
            ("SELECT 1 INTO t", "SELECT INTO"),
            ("SELECT 1; DROP TABLE events", "DROP"),
        ] {
            assert_eq!(kind(sql).as_deref(), Some(want), "{sql}");
        }
        // an unparsable statement is the planner's to report
        assert_eq!(kind("SELEC 1"), None);
    }

    #[test]
    fn splits_on_semicolon_tokens_only() {
        let s =
            split("SELECT 'a;b' AS x; -- c;d\nSELECT \"e;f\" /* g; */ FROM t;\n SELECT 3").unwrap();
        assert_eq!(
            s.statements,
            [
                "SELECT 'a;b' AS x",
                "-- c;d\nSELECT \"e;f\" /* g; */ FROM t"
            ]
        );
        assert_eq!(s.rest, "SELECT 3");
        let s = split("SELECT 'é;ü' AS «x»;\nSELECT 'ß';  -- only a comment\n").unwrap();
        assert_eq!(s.statements, ["SELECT 'é;ü' AS «x»", "SELECT 'ß'"]);
        assert_eq!(s.rest, "");
        let s = split(";;  ;\n").unwrap();
        assert!(s.statements.is_empty() && s.rest.is_empty());
        assert!(split("SELECT 'unterminated; still").is_err());
    }
}
