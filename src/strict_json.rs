//! Strict JSON parsing: a JSON text with a duplicate member name in any
//! object, at any depth, is refused.
//!
//! RFC 8259 §4 says the names within an object SHOULD be unique and that
//! when they are not, "the behavior of software that receives such an
//! object is unpredictable": some parsers keep the first value, others
//! (serde_json, JavaScript's `JSON.parse`) the last. The gateway passes the
//! upstream's bytes to its clients unchanged, so a document with two
//! `issuer` members could be checked by the gateway against one value and
//! used by a client with the other. Refusing such documents closes that
//! parser differential. Names are compared after unescaping (RFC 8259 §7),
//! so `"\u0069ssuer"` and `"issuer"` are the same name.
//!
//! [`parse`] builds the same [`serde_json::Value`] as
//! `serde_json::from_slice` in one pass (serde_json unescapes the names; a
//! `Visitor` checks each object's names as they arrive). It is pure (no
//! I/O, no crate imports) so every kind of fetched document — metadata and
//! key sets — uses the same rule.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON at all (serde_json's message, with line and column).
    #[error("{0}")]
    Syntax(String),
    /// An object has two members with the same (unescaped) name.
    #[error(
        "duplicate member name {name:?} in the object at {at} (RFC 8259 §4: names must be unique)"
    )]
    DuplicateMember {
        /// The repeated name, unescaped.
        name: String,
        /// Where the object is, as a JSONPath (`$`, `$.jwks.keys[0]`).
        at: String,
    },
}

/// Parses `bytes` as one JSON text, refusing duplicate member names at any
/// depth. The result is what `serde_json::from_slice::<Value>` would give
/// for a text without duplicates.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict { duplicate: &found };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, found.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(d)) => Err(StrictJsonError::DuplicateMember {
            at: d.location(),
            name: d.name,
        }),
        (Err(e), None) => Err(StrictJsonError::Syntax(e.to_string())),
    }
}

/// One step from the document's root to a value.
enum Segment {
    Member(String),
    Index(usize),
}

/// A duplicate found, and the path to its object, collected innermost
/// first while the error travels up (so a document without duplicates
/// pays nothing for the path).
struct Duplicate {
    name: String,
    inside: Vec<Segment>,
}

impl Duplicate {
    /// The object's JSONPath (`$`, `$.keys[1]`, `$["a b"]`).
    fn location(&self) -> String {
        let mut at = String::from("$");
        for segment in self.inside.iter().rev() {
            match segment {
                Segment::Member(name) => {
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        at.push('.');
                        at.push_str(name);
                    } else {
                        at.push_str(&format!("[{name:?}]"));
                    }
                }
                Segment::Index(i) => at.push_str(&format!("[{i}]")),
            }
        }
        at
    }
}

/// The seed that builds a [`Value`] and records a duplicate it meets.
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a RefCell<Option<Duplicate>>,
}

impl Strict<'_> {
    /// A value inside `segment` failed: if it failed on a duplicate, the
    /// duplicate's object is inside `segment`.
    fn enclose(&self, segment: impl FnOnce() -> Segment) {
        if let Some(d) = self.duplicate.borrow_mut().as_mut() {
            d.inside.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        // serde_json bounds the nesting depth in `deserialize_any` (128).
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite number from JSON text.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    let i = items.len();
                    self.enclose(|| Segment::Index(i));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        // Names arrive unescaped: `"\u0069ssuer"` is `issuer` here.
        while let Some(name) = access.next_key::<String>()? {
            let value = match access.next_value_seed(self) {
                Ok(v) => v,
                Err(e) => {
                    self.enclose(|| Segment::Member(name));
                    return Err(e);
                }
            };
            match map.entry(name) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(taken) => {
                    let name = taken.key().clone();
                    let message = format!("duplicate member name {name:?}");
                    *self.duplicate.borrow_mut() = Some(Duplicate {
                        name,
                        inside: Vec::new(),
                    });
                    return Err(A::Error::custom(message));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> (String, String) {
        match parse(text.as_bytes()) {
            Err(StrictJsonError::DuplicateMember { name, at }) => (name, at),
            other => panic!("{text}: expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn same_value_as_serde_json_without_duplicates() {
        for text in [
            r#"{"issuer":"https://a","n":[1,-2,3.5,1e300,true,null,{"x":{}}],"s":"\u00e9\n"}"#,
            "[]",
            "  \"just a string\" ",
            "12345678901234567890",
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
        ] {
            let strict = parse(text.as_bytes());
            let loose: Result<Value, _> = serde_json::from_str(text);
            match (strict, loose) {
                (Ok(s), Ok(l)) => assert_eq!(s, l, "{text}"),
                (Err(StrictJsonError::Syntax(_)), Err(_)) => {}
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn top_level_duplicate() {
        assert_eq!(
            duplicate(r#"{"issuer":"https://a","issuer":"https://evil"}"#),
            ("issuer".into(), "$".into())
        );
    }

    #[test]
    fn names_are_compared_after_unescaping() {
        assert_eq!(
            duplicate(r#"{"issuer":"https://a","\u0069ssuer":"https://evil"}"#),
            ("issuer".into(), "$".into())
        );
        assert_eq!(duplicate(r#"{"\u00e9":1,"é":2}"#), ("é".into(), "$".into()));
        // Different after unescaping: not a duplicate.
        assert!(parse(br#"{"a\u0062":1,"ab ":2}"#).is_ok());
    }

    #[test]
    fn nested_and_inside_arrays() {
        assert_eq!(
            duplicate(r#"{"mtls_endpoint_aliases":{"token_endpoint":"x","token_endpoint":"y"}}"#),
            ("token_endpoint".into(), "$.mtls_endpoint_aliases".into())
        );
        assert_eq!(
            duplicate(r#"{"keys":[{"kid":"1"},{"kid":"2","kty":"RSA","kid":"3"}]}"#),
            ("kid".into(), "$.keys[1]".into())
        );
        assert_eq!(
            duplicate(r#"[[{"x":[{"a b":{"k":1,"k":2}}]}]]"#),
            ("k".into(), r#"$[0][0].x[0]["a b"]"#.into())
        );
    }

    #[test]
    fn same_name_in_different_objects_is_fine() {
        let v = parse(br#"{"a":{"id":1},"b":{"id":2},"c":[{"id":3},{"id":4}],"id":0}"#).unwrap();
        assert_eq!(v["c"][1]["id"], 4);
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for text in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            "{\"a\":\"\\ud800\"}",
        ] {
            assert!(
                matches!(parse(text.as_bytes()), Err(StrictJsonError::Syntax(_))),
                "{text}"
            );
        }
        // Depth is bounded as serde_json bounds it, not by the stack.
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(StrictJsonError::Syntax(_))
        ));
    }

    /// Every real provider document and key set collected for the project
    /// (../shared/realdocs, see its SOURCES.md) has unique names, so strict
    /// parsing refuses none of them. The collection lives beside the
    /// repository, not in it; without it there is nothing to check.
    #[test]
    fn real_provider_documents_have_no_duplicates() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let Some(dir) = std::env::var_os("REALDOCS_DIR")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(
                ["../shared/realdocs", "../../shared/realdocs"]
                    .iter()
                    .map(|p| manifest.join(p)),
            )
            .chain([std::path::PathBuf::from("/work/shared/realdocs")])
            .find(|d| d.is_dir())
        else {
            eprintln!("no realdocs collection beside the repository: skipped");
            return;
        };
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).unwrap();
                let strict = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let loose: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(strict, loose, "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 0, "no .json in {}", dir.display());
    }
}
