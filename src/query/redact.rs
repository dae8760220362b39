//! Statements as the audit trail and the shell history keep them: every literal (strings,
//! numbers, typed literals' text, in any position) and every quoted identifier is replaced by
//! a keyed hash of its value, and comments are dropped, so the phone numbers and e-mail
//! addresses people search for are never written down, while two entries that searched for
//! the same value can still be matched (`'<lit:1a2b3c4d5e6f>'`: the first 48 bits of
//! HMAC-SHA-256 under a key derived in the KMS). A statement that does not parse is recorded
//! as `<unparsed statement: N bytes, hmac …>`, never as text.
//!
//! The statement is parsed first (DataFusion's parser, so `COPY` and `CREATE EXTERNAL TABLE`
//! parse too); the replacement then works on the tokens, so nothing the parser keeps
//! elsewhere in its tree (a `COPY` target, an option value) is missed. Unquoted identifiers
//! and keywords stay (they name tables, columns and functions), except an e-mail address typed
//! without quotes, which is taken as one literal.

use crate::crypto::kms::{Kms, KmsError};
use datafusion::sql::parser::DFParser;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use zeroize::Zeroizing;

/// The KMS's blind-index derivation under a name no tenant can take over: a tenant id equal
/// to it would still not share the key, which is hashed once more under [`KEY_CONTEXT`].
const KEY_LABEL: &str = "holdfast.query-redaction";
const KEY_CONTEXT: &[u8] = b"holdfast.literal-hash.v1";
/// Hex digits of a literal's keyed hash that are recorded (48 bits: enough to match entries,
/// too few to confirm a guess offline with any confidence once several values share them).
const HASH_HEX: usize = 12;

/// Replaces literals by their keyed hashes (or, without a key, by `'<lit>'`).
pub struct Redactor {
    key: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor(keyed: {})", self.key.is_some())
    }
}

/// A token of the statement that holds a value someone typed.
enum Secret {
    Literal(String),
    Identifier(String),
}

impl Redactor {
    /// The redactor whose hashes the audit trail records.
    pub async fn from_kms(kms: &dyn Kms) -> Result<Self, KmsError> {
        let base = kms.index_key(KEY_LABEL).await?;
        let key = Zeroizing::new(crate::crypto::hmac_sha256(&base, KEY_CONTEXT));
        Ok(Redactor { key: Some(key) })
    }

    /// Without a key (no keyring at hand): literals become `'<lit>'`, unmatched.
    pub fn unkeyed() -> Self {
        Redactor { key: None }
    }

    fn mark(&self, value: &str) -> String {
        match &self.key {
            Some(k) => {
                hex::encode(crate::crypto::hmac_sha256(k, value.as_bytes()))[..HASH_HEX].to_string()
            }
            None => String::new(),
        }
    }

    fn literal(&self, value: &str) -> String {
        match self.mark(value) {
            h if h.is_empty() => "'<lit>'".into(),
            h => format!("'<lit:{h}>'"),
        }
    }

    fn identifier(&self, value: &str) -> String {
        match self.mark(value) {
            h if h.is_empty() => "\"<id>\"".into(),
            h => format!("\"<id:{h}>\""),
        }
    }

    /// The statement as it may be recorded. Redacting a redacted statement changes nothing.
    pub fn statement(&self, sql: &str) -> String {
        let tokens = match DFParser::parse_sql(sql) {
            Ok(_) => Tokenizer::new(&GenericDialect {}, sql).tokenize().ok(),
            Err(_) => None,
        };
        let Some(tokens) = tokens else {
            let h = self.mark(sql);
            return match h.is_empty() {
                true => format!("<unparsed statement: {} bytes>", sql.len()),
                false => format!("<unparsed statement: {} bytes, hmac {h}>", sql.len()),
            };
        };
        let mut out = String::with_capacity(sql.len());
        for p in pieces(&tokens) {
            match p {
                Piece::Secret(Secret::Literal(v)) if is_mark(&v, "lit") => {
                    out.push_str(&format!("'{v}'"))
                }
                Piece::Secret(Secret::Identifier(v)) if is_mark(&v, "id") => {
                    out.push_str(&format!("\"{v}\""))
                }
                Piece::Secret(Secret::Literal(v)) => out.push_str(&self.literal(&v)),
                Piece::Secret(Secret::Identifier(v)) => out.push_str(&self.identifier(&v)),
                Piece::Token(Token::Whitespace(Whitespace::SingleLineComment { .. })) => {
                    out.push('\n')
                }
                Piece::Token(Token::Whitespace(Whitespace::MultiLineComment(_))) => out.push(' '),
                Piece::Token(t) => out.push_str(&t.to_string()),
            }
        }
        out.trim().to_string()
    }

    /// `message` (an error about `sql`) with every value `sql` holds replaced as in
    /// [`Self::statement`]. Values are matched as whole words, so a literal `1` does not eat
    /// the digits of `15`.
    pub fn message(&self, message: &str, sql: &str) -> String {
        let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
            return message.to_string();
        };
        let mut values: Vec<(String, String)> = pieces(&tokens)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Secret(Secret::Literal(v)) => Some((self.literal(&v), v)),
                Piece::Secret(Secret::Identifier(v)) => Some((self.identifier(&v), v)),
                Piece::Token(_) => None,
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        // DataFusion quotes an unquoted address as the names it parsed (`jane."doe@x".org`)
        let parts: Vec<(String, String)> = values
            .iter()
            .filter(|(_, v)| v.contains('@'))
            .flat_map(|(m, v)| v.split(['.', '-']).map(|p| (m.clone(), p.to_string())))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        values.extend(parts);
        values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = message.to_string();
        for (mark, value) in values {
            out = replace_words(&out, &value, &mark);
        }
        out
    }
}

enum Piece<'a> {
    Secret(Secret),
    Token(&'a Token),
}

/// The tokens with their secrets singled out. An e-mail address typed without quotes
/// (`jane.doe@example.com` tokenizes as words, periods and minus signs, one word holding the
/// `@`) is one literal: the whole run of such tokens around the `@`.
fn pieces(tokens: &[Token]) -> Vec<Piece<'_>> {
    let in_address = |t: &Token| match t {
        Token::Word(w) => w.quote_style.is_none(),
        Token::Period | Token::Minus | Token::Number(..) => true,
        _ => false,
    };
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let run = tokens[i..].iter().take_while(|t| in_address(t)).count();
        let at = tokens[i..i + run]
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.value.contains('@')));
        if at {
            let text: String = tokens[i..i + run].iter().map(Token::to_string).collect();
            out.push(Piece::Secret(Secret::Literal(text)));
            i += run;
            continue;
        }
        let step = run.max(1);
        for t in &tokens[i..i + step] {
            out.push(secret(t).map_or(Piece::Token(t), Piece::Secret));
        }
        i += step;
    }
    out
}

/// Whether `v` is already a mark this module writes (`<lit:…>`, `<lit>`, `<id:…>`, `<id>`).
fn is_mark(v: &str, kind: &str) -> bool {
    let Some(inner) = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .and_then(|v| v.strip_prefix(kind))
    else {
        return false;
    };
    inner.is_empty()
        || inner
            .strip_prefix(':')
            .is_some_and(|h| h.len() == HASH_HEX && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn secret(t: &Token) -> Option<Secret> {
    use Token::*;
    let lit = |s: &String| Some(Secret::Literal(s.clone()));
    match t {
        Number(n, _) => lit(n),
        SingleQuotedString(s)
        | DoubleQuotedString(s)
        | TripleSingleQuotedString(s)
        | TripleDoubleQuotedString(s)
        | SingleQuotedByteStringLiteral(s)
        | DoubleQuotedByteStringLiteral(s)
        | TripleSingleQuotedByteStringLiteral(s)
        | TripleDoubleQuotedByteStringLiteral(s)
        | SingleQuotedRawStringLiteral(s)
        | DoubleQuotedRawStringLiteral(s)
        | TripleSingleQuotedRawStringLiteral(s)
        | TripleDoubleQuotedRawStringLiteral(s)
        | NationalStringLiteral(s)
        | EscapedStringLiteral(s)
        | UnicodeStringLiteral(s)
        | HexStringLiteral(s) => lit(s),
        DollarQuotedString(d) => lit(&d.value),
        QuoteDelimitedStringLiteral(q) | NationalQuoteDelimitedStringLiteral(q) => lit(&q.value),
        Word(w) if w.quote_style.is_some() => Some(Secret::Identifier(w.value.clone())),
        _ => None,
    }
}

/// `text` with each occurrence of `word` that no letter or digit touches replaced by `with`.
fn replace_words(text: &str, word: &str, with: &str) -> String {
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().last().or_else(|| out.chars().last());
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        let edge_ok = |c: Option<char>, w: Option<char>| !(alnum(c) && alnum(w));
        if edge_ok(before, word.chars().next()) && edge_ok(after, word.chars().last()) {
            out.push_str(with);
        } else {
            out.push_str(word);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> Redactor {
        Redactor {
            key: Some(Zeroizing::new([7u8; 32])),
        }
    }

    #[test]
    fn every_literal_goes_and_equal_values_match() {
        let r = keyed();
        let sql = "SELECT * FROM events -- it's for +15550198765\n\
                   WHERE x = +15550198765 OR y = 15550198765 /* 'jane@example.com' */ \
                   OR z = 'jane@example.com' OR d > DATE '2024-01-01' OR w = \"jane@example.com\" LIMIT 5";
        let got = r.statement(sql);
        for secret in ["15550198765", "jane@example.com", "2024-01-01", "it's"] {
            assert!(!got.contains(secret), "{secret} in {got}");
        }
        let m = |v: &str| format!("'<lit:{}>'", r.mark(v));
        assert!(got.contains(&format!("x = +{}", m("15550198765"))), "{got}");
        assert!(got.contains(&format!("y = {}", m("15550198765"))), "{got}");
        assert!(
            got.contains(&format!("z = {}", m("jane@example.com"))),
            "{got}"
        );
        assert!(got.contains(&format!("DATE {}", m("2024-01-01"))), "{got}");
        assert!(got.contains(&format!("w = \"<id:{}>\"", r.mark("jane@example.com"))));
        assert!(got.starts_with("SELECT * FROM events \nWHERE"), "{got}");
        assert_eq!(r.statement(&got), got, "redacting twice changes nothing");
        let other = Redactor {
            key: Some(Zeroizing::new([8u8; 32])),
        };
        assert_ne!(other.statement(sql), got, "the hash is keyed");
        assert_eq!(
            Redactor::unkeyed().statement("SELECT 'a', 2"),
            "SELECT '<lit>', '<lit>'"
        );
    }

    #[test]
    fn an_address_typed_without_quotes_is_a_literal() {
        let r = keyed();
        let got = r.statement(
            "SELECT * FROM events WHERE x = jane-doe@ex-ample.co.uk OR y = a.b OR z = 'jane-doe@ex-ample.co.uk'",
        );
        let m = r.mark("jane-doe@ex-ample.co.uk");
        assert_eq!(
            got,
            format!("SELECT * FROM events WHERE x = '<lit:{m}>' OR y = a.b OR z = '<lit:{m}>'")
        );
    }

    #[test]
    fn copy_targets_and_options_are_literals_too() {
        let got = keyed().statement("COPY (SELECT 1) TO '/srv/store/_locks/x' STORED AS PARQUET");
        assert!(!got.contains("_locks"), "{got}");
        assert!(got.starts_with("COPY (SELECT '<lit:"), "{got}");
    }

    #[test]
    fn an_unparsed_statement_is_only_its_size_and_hash() {
        let r = keyed();
        for sql in ["SELEC 'jane@example.com'", "SELECT 'jane@example.com"] {
            let got = r.statement(sql);
            assert!(
                got.starts_with(&format!("<unparsed statement: {} bytes, hmac ", sql.len())),
                "{got}"
            );
            assert!(!got.contains("jane"));
        }
    }

    #[test]
    fn messages_lose_the_values_of_their_statement() {
        let r = keyed();
        let sql = "SELECT CAST('+1 555 0198' AS INT), 1 FROM t WHERE \"jane@x.org\" = 15";
        let msg = "Cannot cast string '+1 555 0198' to Int32; no field named \"jane@x.org\"; Line: 1, Column: 15";
        let got = r.message(msg, sql);
        assert!(!got.contains("555") && !got.contains("jane"), "{got}");
        assert!(got.contains("Line: '<lit:"), "whole words only: {got}");
        assert!(got.contains("Column: '<lit:"), "{got}");
        assert_eq!(replace_words("a1 1 11 (1)", "1", "X"), "a1 X 11 (X)");
        let got = r.message(
            "No field named jane.\"doe@example\".com.",
            "SELECT 1 FROM t WHERE x = jane.doe@example.com",
        );
        assert!(!got.contains("jane") && !got.contains("doe@"), "{got}");
    }
}
