//! Validation of an upstream metadata document, and the validated document
//! the cache stores.
//!
//! A document is accepted only if it is a JSON object that declares the
//! expected `issuer` (RFC 8414 §3.3) and carries the fields RFC 8414 §2 makes
//! REQUIRED. The accepted bytes are kept exactly as received: the gateway
//! never re-serialises, so `issuer`, `signed_metadata` and key order reach
//! clients unchanged. The JSON is parsed strictly: a duplicate member name
//! anywhere refuses the document ([`crate::strict_json`]).

use std::sync::Arc;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::InvalidDocument;
use crate::key_set::KeySetSummary;
use crate::strict_json::{self, StrictJsonError};

/// The issuer a document must declare, as configured (shared, not copied,
/// between the configuration and the cache slot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpectedIssuer(Arc<str>);

impl ExpectedIssuer {
    /// Wraps a configured issuer string (already checked to be a URL).
    pub fn new(issuer: impl Into<Arc<str>>) -> Self {
        Self(issuer.into())
    }

    /// The issuer as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 8414 §3.3: the declared issuer must be identical to the expected
    /// one. One trailing `/` is ignored when the issuer has no path, as the
    /// official MCP SDKs do (`https://as.example` and `https://as.example/`
    /// name the same origin); with a path, comparison is exact.
    pub fn matches(&self, declared: &str) -> bool {
        let expected = &*self.0;
        if expected == declared {
            return true;
        }
        has_no_path(expected)
            && has_no_path(declared)
            && expected.strip_suffix('/').unwrap_or(expected)
                == declared.strip_suffix('/').unwrap_or(declared)
    }
}

/// True for `scheme://authority` or `scheme://authority/`.
fn has_no_path(url: &str) -> bool {
    match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            None => !rest.contains(['?', '#']),
            Some(i) => i + 1 == rest.len(),
        },
        None => false,
    }
}

/// A document that passed validation, with what every response needs
/// precomputed once at fetch time.
#[derive(Debug, Clone)]
pub struct ValidatedDocument {
    /// The exact bytes the upstream sent.
    pub body: Bytes,
    /// Strong entity tag over `body` (RFC 9110 §8.8.3), the same on every
    /// replica for the same bytes.
    pub etag: HeaderValue,
}

impl ValidatedDocument {
    /// Validates `body` as RFC 8414 metadata for `issuer`.
    pub fn validate(body: Bytes, issuer: &ExpectedIssuer) -> Result<Self, InvalidDocument> {
        let value = parse_strict(&body)?;
        let Value::Object(map) = value else {
            return Err(InvalidDocument::NotAnObject);
        };
        check_fields(&map, issuer)?;
        let etag = etag_for(&body);
        Ok(Self { body, etag })
    }
}

impl ValidatedDocument {
    /// Validates `body` as a public key set (RFC 7517 §5, see
    /// [`crate::key_set`]); the bytes are kept as they are.
    pub fn key_set(body: Bytes) -> Result<(Self, KeySetSummary), InvalidDocument> {
        let summary = crate::key_set::validate(&body)?;
        let etag = etag_for(&body);
        Ok((Self { body, etag }, summary))
    }

    /// The same document with its bytes and its ETag in one allocation of
    /// their own, made on the calling thread: the body, then the ETag's
    /// text, nothing more. The upstream client reads a body on its own
    /// thread, between that request's short-lived allocations; a body kept
    /// from there for a whole TTL pins that thread's allocator arena
    /// around it (and a restored body is a slice of its whole state file).
    /// Copied once per accepted fetch or restore (a few hundred bytes), it
    /// cost nothing measurable and saved about 1–2 MiB of resident memory
    /// at 10,000 documents with glibc's allocator (benches/README.md,
    /// "After: memory per document"). Both halves share one reference
    /// count, and the ETag's text follows the body's last bytes, so a
    /// response touches two fewer cache lines of a document nobody asked
    /// for lately (benches/README.md, "Fourth pass").
    pub fn detached(self) -> Self {
        let body_len = self.body.len();
        let mut both = Vec::with_capacity(body_len + self.etag.len());
        both.extend_from_slice(&self.body);
        both.extend_from_slice(self.etag.as_bytes());
        let both = Bytes::from(both);
        let etag = HeaderValue::from_maybe_shared(both.slice(body_len..)).unwrap_or(self.etag);
        Self {
            body: both.slice(..body_len),
            etag,
        }
    }
}

/// Parses `body` as JSON, refusing duplicate member names at any depth
/// (RFC 8259 §4; [`crate::strict_json`]), so the gateway and its clients
/// cannot read two different documents from the same bytes.
pub fn parse_strict(body: &[u8]) -> Result<Value, InvalidDocument> {
    strict_json::parse(body).map_err(|e| match e {
        StrictJsonError::Syntax(message) => InvalidDocument::NotJson(message),
        StrictJsonError::DuplicateMember { name, at } => {
            InvalidDocument::DuplicateMember { name, at }
        }
    })
}

/// Computes the strong ETag: the first 128 bits of SHA-256, hex, quoted.
pub fn etag_for(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// RFC 8414 §2 field rules.
fn check_fields(map: &Map<String, Value>, issuer: &ExpectedIssuer) -> Result<(), InvalidDocument> {
    let declared = match map.get("issuer") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(InvalidDocument::WrongType("issuer", "a string")),
        None => return Err(InvalidDocument::MissingField("issuer")),
    };
    if !issuer.matches(declared) {
        return Err(InvalidDocument::IssuerMismatch {
            expected: issuer.as_str().to_string(),
            declared: declared.to_string(),
        });
    }
    // REQUIRED: response_types_supported, a JSON array of strings.
    let response_types = string_array(map, "response_types_supported")?
        .ok_or(InvalidDocument::MissingField("response_types_supported"))?;
    // OPTIONAL; RFC 8414 §2 gives the default ["authorization_code", "implicit"].
    let grant_types = string_array(map, "grant_types_supported")?
        .unwrap_or_else(|| vec!["authorization_code", "implicit"]);
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "registration_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        if let Some(v) = map.get(field) {
            if !v.is_string() {
                return Err(InvalidDocument::WrongType(field, "a string"));
            }
        }
    }
    for field in [
        "scopes_supported",
        "response_modes_supported",
        "token_endpoint_auth_methods_supported",
        "code_challenge_methods_supported",
    ] {
        string_array(map, field)?;
    }
    // authorization_endpoint: REQUIRED unless no grant type uses it.
    let uses_authz_endpoint = grant_types
        .iter()
        .any(|g| matches!(*g, "authorization_code" | "implicit"))
        || response_types.iter().any(|r| !r.is_empty() && *r != "none");
    if uses_authz_endpoint && !map.contains_key("authorization_endpoint") {
        return Err(InvalidDocument::MissingField("authorization_endpoint"));
    }
    // token_endpoint: REQUIRED unless only the implicit grant type is supported.
    let only_implicit = grant_types.iter().all(|g| *g == "implicit");
    if !only_implicit && !map.contains_key("token_endpoint") {
        return Err(InvalidDocument::MissingField("token_endpoint"));
    }
    Ok(())
}

/// Reads `field` as an array of strings; `Ok(None)` when absent.
fn string_array<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<&'a str>>, InvalidDocument> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or(InvalidDocument::WrongType(field, "an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(InvalidDocument::WrongType(field, "an array of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"issuer":"http://localhost:7788","authorization_endpoint":"http://localhost:7788/oauth/authorize","token_endpoint":"http://localhost:7788/oauth/token","response_types_supported":["code"]}"#;

    fn issuer(s: &str) -> ExpectedIssuer {
        ExpectedIssuer::new(s.to_string())
    }

    #[test]
    fn a_detached_document_keeps_its_bytes_and_etag_in_one_buffer() {
        let fetched = Bytes::from(format!("{GOOD}    trailing bytes of another response"));
        let body = fetched.slice(..GOOD.len());
        let doc = ValidatedDocument::validate(body, &issuer("http://localhost:7788")).unwrap();
        let etag = doc.etag.clone();
        let detached = doc.detached();
        assert_eq!(detached.body, GOOD.as_bytes());
        assert_eq!(detached.etag, etag);
        assert_eq!(detached.etag, etag_for(GOOD.as_bytes()));
        // The ETag's text sits right after the body, in the same buffer.
        let end = detached.body.as_ptr() as usize + detached.body.len();
        assert_eq!(detached.etag.as_bytes().as_ptr() as usize, end);
    }

    #[test]
    fn accepts_a_minimal_document_and_keeps_its_bytes() {
        let doc = ValidatedDocument::validate(Bytes::from(GOOD), &issuer("http://localhost:7788"))
            .unwrap();
        assert_eq!(doc.body, GOOD.as_bytes());
        assert_eq!(doc.etag.len(), 34);
    }

    #[test]
    fn issuer_trailing_slash_only_ignored_without_path() {
        let i = issuer("https://as.example.com");
        assert!(i.matches("https://as.example.com/"));
        assert!(issuer("https://as.example.com/").matches("https://as.example.com"));
        assert!(!i.matches("https://as.example.com//"));
        assert!(!i.matches("https://AS.example.com"));
        let p = issuer("https://as.example.com/tenant1");
        assert!(p.matches("https://as.example.com/tenant1"));
        assert!(!p.matches("https://as.example.com/tenant1/"));
    }

    #[test]
    fn rejects_each_kind_of_bad_document() {
        let i = issuer("http://localhost:7788");
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"response_types_supported":["code"]}"#, "issuer"),
            (
                r#"{"issuer":"http://evil","authorization_endpoint":"a","token_endpoint":"t","response_types_supported":["code"]}"#,
                "http://evil",
            ),
            (
                r#"{"issuer":"http://localhost:7788","authorization_endpoint":"a","token_endpoint":"t"}"#,
                "response_types_supported",
            ),
            (
                r#"{"issuer":"http://localhost:7788","token_endpoint":"t","response_types_supported":["code"]}"#,
                "authorization_endpoint",
            ),
            (
                r#"{"issuer":"http://localhost:7788","authorization_endpoint":"a","response_types_supported":["code"]}"#,
                "token_endpoint",
            ),
            (
                r#"{"issuer":7,"authorization_endpoint":"a","token_endpoint":"t","response_types_supported":["code"]}"#,
                "issuer",
            ),
            (
                r#"{"issuer":"http://localhost:7788","authorization_endpoint":"a","token_endpoint":"t","response_types_supported":"code"}"#,
                "response_types_supported",
            ),
            // RFC 8259 §4: a second `issuer` (escaped or not) is refused,
            // whichever value a client's parser would keep.
            (
                r#"{"issuer":"http://localhost:7788","authorization_endpoint":"a","token_endpoint":"t","response_types_supported":["code"],"\u0069ssuer":"http://evil"}"#,
                "duplicate member name \"issuer\" in the object at $",
            ),
            (
                r#"{"issuer":"http://localhost:7788","authorization_endpoint":"a","token_endpoint":"t","response_types_supported":["code"],"mtls_endpoint_aliases":{"token_endpoint":"x","token_endpoint":"y"}}"#,
                "\"token_endpoint\" in the object at $.mtls_endpoint_aliases",
            ),
        ];
        for (body, needle) in cases {
            let err = ValidatedDocument::validate(Bytes::from(*body), &i)
                .expect_err(body)
                .to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn client_credentials_only_server_needs_no_authorization_endpoint() {
        let body = r#"{"issuer":"https://as","token_endpoint":"https://as/t","response_types_supported":[],"grant_types_supported":["client_credentials"]}"#;
        assert!(ValidatedDocument::validate(Bytes::from(body), &issuer("https://as")).is_ok());
    }

    #[test]
    fn etag_depends_only_on_bytes() {
        assert_eq!(etag_for(b"abc"), etag_for(b"abc"));
        assert_ne!(etag_for(b"abc"), etag_for(b"abd"));
    }
}
