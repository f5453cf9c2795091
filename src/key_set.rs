//! Validation of an upstream key set (RFC 7517 §5 JWK Set), pure rules.
//!
//! A key set is accepted only if it is a JSON object whose `keys` is a
//! non-empty array of objects, each with a string `kty` (RFC 7517 §4.1).
//! It is refused when any key is private or symmetric: a published key
//! set that carries a secret is a leak, never to be relayed (RFC 7517 §9.2,
//! §9.3; RFC 7518 §6.2.2, §6.3.2, §6.4). Everything else is kept byte for
//! byte: real providers add members of their own (Entra's keys carry
//! `x5c`, no `alg` and a non-standard `issuer`).
//!
//! Duplicate `kid`s are allowed by RFC 7517 §4.5 only for keys of
//! different types; they are reported (the caller logs them), not refused.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::InvalidKeySet;
use crate::strict_json::{self, StrictJsonError};

/// Members that only a private key carries: RSA (RFC 7518 §6.3.2:
/// `d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`), EC and OKP (`d`).
pub const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// What validation learnt about an accepted key set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySetSummary {
    /// Number of keys.
    pub keys: usize,
    /// The `kid`s, in order (keys without one are not listed).
    pub kids: Vec<String>,
    /// `kid`s that more than one key declares (each listed once).
    pub duplicate_kids: Vec<String>,
}

/// Validates `body` as a public JWK Set (RFC 7517 §5).
pub fn validate(body: &[u8]) -> Result<KeySetSummary, InvalidKeySet> {
    // Strict: a duplicate member (a second `d`, `kty` or `keys`) could make
    // a client read what this check never saw.
    let value = strict_json::parse(body).map_err(|e| match e {
        StrictJsonError::Syntax(message) => InvalidKeySet::NotJson(message),
        StrictJsonError::DuplicateMember { name, at } => {
            InvalidKeySet::DuplicateMember { name, at }
        }
    })?;
    let Value::Object(set) = value else {
        return Err(InvalidKeySet::NotAnObject);
    };
    let keys = match set.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err(InvalidKeySet::KeysNotArray),
        None => return Err(InvalidKeySet::NoKeys),
    };
    if keys.is_empty() {
        return Err(InvalidKeySet::Empty);
    }
    let mut summary = KeySetSummary {
        keys: keys.len(),
        ..KeySetSummary::default()
    };
    for (index, key) in keys.iter().enumerate() {
        let Value::Object(key) = key else {
            return Err(InvalidKeySet::KeyNotObject(index));
        };
        check_key(index, key)?;
        if let Some(Value::String(kid)) = key.get("kid") {
            if summary.kids.contains(kid) {
                if !summary.duplicate_kids.contains(kid) {
                    summary.duplicate_kids.push(kid.clone());
                }
            } else {
                summary.kids.push(kid.clone());
            }
        }
    }
    Ok(summary)
}

/// One key's rules: a string `kty`, nothing private, nothing symmetric.
fn check_key(index: usize, key: &Map<String, Value>) -> Result<(), InvalidKeySet> {
    let kty = match key.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err(InvalidKeySet::KtyNotString(index)),
        None => return Err(InvalidKeySet::NoKty(index)),
    };
    // RFC 7518 §6.4: `oct` keys are shared secrets; `k` is the secret.
    if kty == "oct" || key.contains_key("k") {
        return Err(InvalidKeySet::Symmetric(index));
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| key.contains_key(**m)) {
        return Err(InvalidKeySet::PrivateMember { index, member });
    }
    Ok(())
}

/// Where a key set is fetched from, given the `jwks_uri` its metadata
/// declares (RFC 8414 §2): a URI that starts with the `issuer` (as
/// configured, no trailing `/`) is mapped onto `upstream` (where the
/// gateway reaches the issuer: it may be an internal address), anything
/// else is used as declared. An https URL is accepted; a plain-http one
/// only on the origin the metadata itself came from (`metadata_url`), so
/// a document cannot send the gateway to fetch keys in clear text from
/// elsewhere. The error says why, for logs and `check`.
pub fn upstream_location(
    declared: &str,
    issuer: &str,
    upstream: &str,
    metadata_url: &str,
) -> Result<String, String> {
    let mapped = match declared.strip_prefix(issuer) {
        Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => {
            format!("{upstream}{rest}")
        }
        _ => declared.to_string(),
    };
    let url = url::Url::parse(&mapped)
        .map_err(|e| format!("the metadata's jwks_uri {declared:?} is not a URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(mapped),
        "http" => {
            let own = url::Url::parse(metadata_url).ok().map(|u| u.origin());
            if own == Some(url.origin()) {
                Ok(mapped)
            } else {
                Err(format!(
                    "the metadata's jwks_uri {declared:?} is plain http on another origin than the metadata's ({metadata_url}): refused; set jwks_uri explicitly to allow it"
                ))
            }
        }
        other => Err(format!(
            "the metadata's jwks_uri {declared:?} is a {other} URL, not https"
        )),
    }
}

/// The `jwks_uri` a metadata document declares, if it is a string.
pub fn declared_jwks_uri(metadata: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        jwks_uri: Option<String>,
    }
    serde_json::from_slice::<Metadata>(metadata)
        .ok()
        .and_then(|m| m.jwks_uri)
}

/// Whether a stored (already validated) key set has a key with `kid`. Reads
/// only the `kid`s, skipping every other member without building it.
pub fn has_kid(body: &[u8], kid: &str) -> bool {
    #[derive(Deserialize)]
    struct Key<'a> {
        #[serde(borrow, default)]
        kid: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Set<'a> {
        #[serde(borrow, default)]
        keys: Vec<Key<'a>>,
    }
    serde_json::from_slice::<Set<'_>>(body)
        .map(|set| set.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> KeySetSummary {
        validate(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn err(body: &str) -> InvalidKeySet {
        validate(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn public_keys_pass_with_unknown_members() {
        let s = ok(
            r#"{"keys":[{"kty":"RSA","kid":"a","n":"x","e":"AQAB","x5c":["m"],"issuer":"https://i"},{"kty":"EC","crv":"P-256","x":"1","y":"2"}],"extra":1}"#,
        );
        assert_eq!(s.keys, 2);
        assert_eq!(s.kids, ["a"]);
        assert!(s.duplicate_kids.is_empty());
    }

    #[test]
    fn duplicate_kids_are_reported_once() {
        let s = ok(
            r#"{"keys":[{"kty":"RSA","kid":"a"},{"kty":"EC","kid":"a"},{"kty":"OKP","kid":"a"}]}"#,
        );
        assert_eq!(s.kids, ["a"]);
        assert_eq!(s.duplicate_kids, ["a"]);
    }

    #[test]
    fn malformed_sets_are_refused() {
        assert!(matches!(err("<html>"), InvalidKeySet::NotJson(_)));
        assert!(matches!(
            err(r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB","\u0064":"a","d":"b"}]}"#),
            InvalidKeySet::DuplicateMember { ref name, ref at } if name == "d" && at == "$.keys[0]"
        ));
        assert!(matches!(
            err(r#"{"keys":[{"kty":"EC"}],"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            InvalidKeySet::DuplicateMember { .. }
        ));
        assert_eq!(err("[]"), InvalidKeySet::NotAnObject);
        assert_eq!(err("{}"), InvalidKeySet::NoKeys);
        assert_eq!(err(r#"{"keys":{}}"#), InvalidKeySet::KeysNotArray);
        assert_eq!(err(r#"{"keys":[]}"#), InvalidKeySet::Empty);
        assert_eq!(
            err(r#"{"keys":[{"kty":"RSA"},1]}"#),
            InvalidKeySet::KeyNotObject(1)
        );
        assert_eq!(err(r#"{"keys":[{"kid":"a"}]}"#), InvalidKeySet::NoKty(0));
        assert_eq!(
            err(r#"{"keys":[{"kty":7}]}"#),
            InvalidKeySet::KtyNotString(0)
        );
    }

    #[test]
    fn secrets_are_refused() {
        for m in PRIVATE_MEMBERS {
            let body = format!(
                r#"{{"keys":[{{"kty":"RSA","n":"x","e":"AQAB"}},{{"kty":"RSA","{m}":"s"}}]}}"#
            );
            assert_eq!(
                err(&body),
                InvalidKeySet::PrivateMember {
                    index: 1,
                    member: m
                }
            );
        }
        assert_eq!(
            err(r#"{"keys":[{"kty":"oct","kid":"h"}]}"#),
            InvalidKeySet::Symmetric(0)
        );
        assert_eq!(
            err(r#"{"keys":[{"kty":"RSA","k":"c2VjcmV0"}]}"#),
            InvalidKeySet::Symmetric(0)
        );
    }

    #[test]
    fn jwks_uris_map_onto_the_upstream_and_refuse_foreign_plain_http() {
        let meta = "http://10.0.0.5:8080/.well-known/oauth-authorization-server/t1";
        let map = |d: &str| {
            upstream_location(d, "https://as.example/t1", "http://10.0.0.5:8080/t1", meta)
        };
        assert_eq!(
            map("https://as.example/t1/keys").unwrap(),
            "http://10.0.0.5:8080/t1/keys"
        );
        assert_eq!(
            map("https://as.example/t1").unwrap(),
            "http://10.0.0.5:8080/t1"
        );
        // Not under the issuer (a prefix of a longer segment is not).
        assert_eq!(
            map("https://as.example/t10/keys").unwrap(),
            "https://as.example/t10/keys"
        );
        assert_eq!(
            map("https://keys.example/jwks").unwrap(),
            "https://keys.example/jwks"
        );
        assert!(map("http://keys.example/jwks")
            .unwrap_err()
            .contains("plain http"));
        assert_eq!(
            map("http://10.0.0.5:8080/other").unwrap(),
            "http://10.0.0.5:8080/other"
        );
        assert!(map("ftp://x/y").is_err());
        assert!(map("not a url").is_err());
        assert_eq!(
            declared_jwks_uri(br#"{"jwks_uri":"https://k"}"#).as_deref(),
            Some("https://k")
        );
        assert_eq!(declared_jwks_uri(br#"{"jwks_uri":1}"#), None);
    }

    #[test]
    fn kids_are_found_in_stored_sets() {
        let body = br#"{"keys":[{"kty":"RSA","kid":"a","n":"x"},{"kty":"EC"},{"kty":"EC","kid":"b\u0041"}]}"#;
        assert!(has_kid(body, "a"));
        assert!(has_kid(body, "bA"), "escapes are decoded");
        assert!(!has_kid(body, "c"));
        assert!(!has_kid(b"not json", "a"));
    }
}
