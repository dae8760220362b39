//! Named queries (`sql/**/*.sql`): a header comment, then one statement with `{{name}}`
//! placeholders. Each placeholder is bound as a SQL string literal (quotes doubled), so a value
//! can never change the statement; the SQL casts it where it needs another type. Binding is
//! one pass over the template: text a value brings in is never scanned again, so a value that
//! holds `{{other}}` stays that text.

/// The template cut at its placeholders: literal text and placeholder names, in order.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn pieces(sql: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}") else { break };
        out.push(Piece::Text(&rest[..i]));
        out.push(Piece::Placeholder(rest[i + 2..i + j].trim()));
        rest = &rest[i + j + 2..];
    }
    out.push(Piece::Text(rest));
    out
}

/// The placeholders a query uses, in order of first use.
pub fn placeholders(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in pieces(sql) {
        if let Piece::Placeholder(name) = p
            && !out.iter().any(|o| o == name)
        {
            out.push(name.to_string());
        }
    }
    out
}

/// Binds every placeholder; an unknown or missing parameter is an error naming them all.
pub fn bind(sql: &str, params: &[(String, String)]) -> Result<String, String> {
    let wanted = placeholders(sql);
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !params.iter().any(|(k, _)| k == *w))
        .collect();
    let unknown: Vec<&String> = params
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !wanted.contains(k))
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        return Err(format!(
            "this query takes --param {}; missing: {:?}; unknown: {:?}",
            wanted.join(", --param "),
            missing,
            unknown
        ));
    }
    let mut out = String::with_capacity(sql.len());
    for p in pieces(sql) {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => {
                // the first --param of a name wins, as before
                let (_, v) = params
                    .iter()
                    .find(|(k, _)| k == name)
                    .expect("checked above");
                out.push('\'');
                out.push_str(&v.replace('\'', "''"));
                out.push('\'');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_literals_safely() {
        let sql = "SELECT 1 WHERE a = {{x}} AND b = {{y}} AND c = {{x}}";
        assert_eq!(placeholders(sql), vec!["x", "y"]);
        let b = bind(
            sql,
            &[("x".into(), "o'brien".into()), ("y".into(), "2".into())],
        )
        .unwrap();
        assert_eq!(
            b,
            "SELECT 1 WHERE a = 'o''brien' AND b = '2' AND c = 'o''brien'"
        );
        assert!(
            bind(sql, &[("x".into(), "1".into())])
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            bind(
                sql,
                &[
                    ("x".into(), "1".into()),
                    ("y".into(), "1".into()),
                    ("z".into(), "1".into())
                ]
            )
            .unwrap_err()
            .contains("unknown")
        );
    }

    #[test]
    fn a_value_is_never_read_as_a_placeholder_or_as_sql() {
        let sql = "SELECT * FROM events WHERE agent = {{agent}} AND at >= {{from}}";
        let b = bind(
            sql,
            // `from` first: a binder that replaced name by name would then rewrite the
            // `{{agent}}` that `from` brought in
            &[
                ("from".into(), "{{agent}}".into()),
                ("agent".into(), "x') OR 1=1 --".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            b,
            "SELECT * FROM events WHERE agent = 'x'') OR 1=1 --' AND at >= '{{agent}}'"
        );
        let lits: Vec<String> = datafusion::sql::sqlparser::tokenizer::Tokenizer::new(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
            &b,
        )
        .tokenize()
        .unwrap()
        .into_iter()
        .filter_map(|t| match t {
            datafusion::sql::sqlparser::tokenizer::Token::SingleQuotedString(s) => Some(s),
            _ => None,
        })
        .collect();
        assert_eq!(lits, ["x') OR 1=1 --", "{{agent}}"]);
    }
}
