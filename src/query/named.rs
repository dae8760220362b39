//! Named queries (`sql/**/*.sql`): a header comment, then one statement with `{{name}}`
//! placeholders. Each placeholder is bound as a SQL string literal (quotes doubled), so a value
//! can never change the statement; the SQL casts it where it needs another type.

/// The placeholders a query uses, in order of first use.
pub fn placeholders(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = sql;
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}") else { break };
        let name = rest[i + 2..i + j].trim().to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[i + j + 2..];
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
    let mut out = sql.to_string();
    for (k, v) in params {
        out = out.replace(
            &format!("{{{{{k}}}}}"),
            &format!("'{}'", v.replace('\'', "''")),
        );
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
}
