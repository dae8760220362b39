//! Every structural problem of a pipeline file at once: serde stops at the first unknown key
//! or wrong type, so the file is first read as a TOML tree and walked against the shape of
//! [`super::Pipeline`] (known keys, required keys, the type of each value).

use serde::de::DeserializeOwned;
use toml::Value;

/// Checks one value's type by deserializing it alone.
type Check = fn(&Value) -> Result<(), String>;

pub(super) enum Shape {
    Leaf(Check),
    Table(&'static [Field]),
    /// An array of tables of one shape (`[[sources]]`).
    List(&'static Shape),
    /// A table whose keys are names chosen by the user, each of one shape.
    Map(&'static Shape),
}

pub(super) struct Field {
    key: &'static str,
    shape: Shape,
    required: bool,
}

pub(super) const fn opt(key: &'static str, shape: Shape) -> Field {
    Field {
        key,
        shape,
        required: false,
    }
}

pub(super) const fn req(key: &'static str, shape: Shape) -> Field {
    Field {
        key,
        shape,
        required: true,
    }
}

/// The type check of a leaf of type `T`.
pub(super) fn ty<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    v.clone()
        .try_into::<T>()
        .map(drop)
        .map_err(|e| e.to_string().trim().replace('\n', " "))
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Appends to `problems` every unknown key, missing required key and badly typed value
/// under `at`.
pub(super) fn walk(shape: &Shape, v: &Value, at: &str, problems: &mut Vec<String>) {
    match (shape, v) {
        (Shape::Leaf(check), v) => {
            if let Err(e) = check(v) {
                problems.push(format!("{at}: {e}"));
            }
        }
        (Shape::Table(fields), Value::Table(t)) => {
            for (k, val) in t {
                match fields.iter().find(|f| f.key == k) {
                    Some(f) => walk(&f.shape, val, &join(at, k), problems),
                    None => {
                        let known: Vec<&str> = fields.iter().map(|f| f.key).collect();
                        problems.push(format!(
                            "{}: unknown key (known keys{}: {})",
                            join(at, k),
                            if at.is_empty() {
                                String::new()
                            } else {
                                format!(" in {at}")
                            },
                            known.join(", ")
                        ));
                    }
                }
            }
            for f in fields.iter().filter(|f| f.required) {
                if !t.contains_key(f.key) {
                    problems.push(format!("{}: missing", join(at, f.key)));
                }
            }
        }
        (Shape::List(item), Value::Array(a)) => {
            for (i, val) in a.iter().enumerate() {
                walk(item, val, &format!("{at}[{i}]"), problems);
            }
        }
        (Shape::Map(item), Value::Table(t)) => {
            for (k, val) in t {
                walk(item, val, &join(at, k), problems);
            }
        }
        (Shape::Table(_) | Shape::Map(_), other) => {
            problems.push(format!("{at}: expected a table, found {}", describe(other)));
        }
        (Shape::List(_), other) => problems.push(format!(
            "{at}: expected an array of tables, found {}",
            describe(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static INNER: Shape = Shape::Table(&[req("n", Shape::Leaf(ty::<u32>))]);
    static TOP: Shape = Shape::Table(&[
        opt("a", Shape::Leaf(ty::<String>)),
        opt("list", Shape::List(&INNER)),
        opt("map", Shape::Map(&INNER)),
    ]);

    #[test]
    fn finds_every_problem() {
        let v: Value = toml::from_str(
            "a = 1\nb = 2\n[[list]]\nn = \"x\"\n[[list]]\nm = 1\n[map.one]\nn = 2\n[map.two]\nn = -1\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        walk(&TOP, &v, "", &mut problems);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for want in [
            "a: invalid type",
            "b: unknown key",
            "list[0].n: invalid",
            "list[1].m: unknown key",
            "list[1].n: missing",
            "map.two.n:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want}: {problems:#?}"
            );
        }
    }
}
