//! Typed errors at the gateway's boundaries: why an upstream fetch failed,
//! why a document was refused, and why the server could not start.
//!
//! Each fetch failure maps to one bounded `outcome` label (for metrics and
//! logs) and to the HTTP status a client gets when no document can be served.

use actix_web::http::StatusCode;
use thiserror::Error;

/// Why an upstream document was refused (RFC 8414 §2, §3.3).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum InvalidDocument {
    /// The body did not parse as JSON.
    #[error("the document is not valid JSON: {0}")]
    NotJson(String),
    /// An object in the body has two members with the same name (after
    /// unescaping): RFC 8259 §4, see [`crate::strict_json`].
    #[error(
        "the document has a duplicate member name {name:?} in the object at {at} (RFC 8259 §4)"
    )]
    DuplicateMember {
        /// The repeated name, unescaped.
        name: String,
        /// Where the object is, as a JSONPath.
        at: String,
    },
    /// The body is JSON but not an object.
    #[error("the document is not a JSON object")]
    NotAnObject,
    /// A REQUIRED member is absent.
    #[error("the document has no `{0}` (REQUIRED by RFC 8414 §2)")]
    MissingField(&'static str),
    /// A member has the wrong JSON type.
    #[error("`{0}` must be {1}")]
    WrongType(&'static str, &'static str),
    /// RFC 8414 §3.3: `issuer` differs from the configured issuer.
    #[error("the document's issuer {declared:?} is not the expected {expected:?} (RFC 8414 §3.3)")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// What the document declared.
        declared: String,
    },
    /// The body is not an acceptable public key set (RFC 7517 §5).
    #[error(transparent)]
    KeySet(#[from] InvalidKeySet),
}

/// Why an upstream key set was refused (RFC 7517 §5, §9).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum InvalidKeySet {
    /// The body did not parse as JSON.
    #[error("the key set is not valid JSON: {0}")]
    NotJson(String),
    /// An object in the set has two members with the same name (RFC 8259
    /// §4): a client could read another key than the gateway checked.
    #[error(
        "the key set has a duplicate member name {name:?} in the object at {at} (RFC 8259 §4)"
    )]
    DuplicateMember {
        /// The repeated name, unescaped.
        name: String,
        /// Where the object is, as a JSONPath.
        at: String,
    },
    /// The body is JSON but not an object.
    #[error("the key set is not a JSON object (RFC 7517 §5)")]
    NotAnObject,
    /// No `keys` member.
    #[error("the key set has no `keys` (RFC 7517 §5.1)")]
    NoKeys,
    /// `keys` is not an array.
    #[error("the key set's `keys` is not an array (RFC 7517 §5.1)")]
    KeysNotArray,
    /// `keys` is an empty array.
    #[error("the key set's `keys` is empty: no token could be verified with it")]
    Empty,
    /// A key that is not a JSON object.
    #[error("key {0} of the key set is not a JSON object (RFC 7517 §4)")]
    KeyNotObject(usize),
    /// A key without `kty`.
    #[error("key {0} of the key set has no `kty` (REQUIRED by RFC 7517 §4.1)")]
    NoKty(usize),
    /// A key whose `kty` is not a string.
    #[error("key {0} of the key set has a `kty` that is not a string (RFC 7517 §4.1)")]
    KtyNotString(usize),
    /// A key with a private-key member: a leak, never relayed.
    #[error("key {index} of the key set carries the private member `{member}`: a published key set must hold public keys only (RFC 7518 §6.3.2, §6.2.2)")]
    PrivateMember {
        /// Which key.
        index: usize,
        /// The member found.
        member: &'static str,
    },
    /// A symmetric key (`kty: oct`, or a `k` member): a shared secret.
    #[error("key {0} of the key set is a symmetric key (`oct`/`k`): a published key set must not carry secrets (RFC 7518 §6.4)")]
    Symmetric(usize),
}

/// Why one upstream fetch did not produce a usable document.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FetchError {
    /// The whole fetch exceeded `--upstream-timeout`.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// No connection (refused, DNS, TLS, reset before a response).
    #[error("cannot reach the upstream: {0}")]
    Connect(String),
    /// The upstream answered with a status other than 200.
    #[error("the upstream answered HTTP {0}")]
    HttpStatus(u16),
    /// The response was not `application/json`.
    #[error("the upstream sent content type {0:?}, not application/json (RFC 8414 §3.2)")]
    ContentType(String),
    /// The body exceeded `--max-body-size`.
    #[error("the upstream document is larger than {0} bytes")]
    TooLarge(usize),
    /// The body broke off or could not be read.
    #[error("the upstream response body could not be read: {0}")]
    Body(String),
    /// The body was read but is not acceptable metadata.
    #[error(transparent)]
    Invalid(#[from] InvalidDocument),
    /// The fetcher thread is gone (only during shutdown).
    #[error("the upstream fetcher has stopped")]
    FetcherStopped,
    /// The key set's location is not known or not allowed: the metadata
    /// document has no usable `jwks_uri`, or it is plain http off the
    /// upstream's own origin.
    #[error("no key set location: {0}")]
    KeySetLocation(String),
    /// An issuer template's bound on cold fetches is reached: this tenant
    /// is not fetched now (no upstream request was made).
    #[error("too many tenants are being fetched at once; retry shortly")]
    Busy,
    /// The forward proxy did not open a tunnel to the upstream. Never a
    /// sign that the document is "not published here": the upstream was
    /// not asked.
    #[error("the proxy {proxy} {failure} (CONNECT {target})")]
    Proxy {
        /// The proxy, shown without its password (`http://user:***@host:port`).
        proxy: String,
        /// `host:port` the tunnel was asked for.
        target: String,
        /// What went wrong.
        failure: ProxyFailure,
    },
}

/// How a forward proxy failed to open a CONNECT tunnel.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProxyFailure {
    /// No TCP connection to the proxy (refused, unreachable, DNS).
    #[error("cannot be reached: {0}")]
    Unreachable(String),
    /// The proxy answered the CONNECT with a status other than 2xx
    /// (407 credentials missing or wrong, 403 target refused, 502...).
    #[error("answered {status}{}", reason_suffix(.reason))]
    Refused {
        /// The status the proxy sent.
        status: u16,
        /// Its reason phrase, sanitised (may be empty).
        reason: String,
    },
    /// No complete answer to the CONNECT within the deadline.
    #[error("did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The answer was not an HTTP/1.x response, or the connection broke.
    #[error("sent an unusable answer: {0}")]
    Protocol(String),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

impl FetchError {
    /// Bounded label for `metadata_gateway_upstream_fetches_total{outcome}`.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) | Self::FetcherStopped => "connect_error",
            Self::HttpStatus(_) => "http_status",
            Self::ContentType(_) | Self::Invalid(_) | Self::Body(_) | Self::KeySetLocation(_) => {
                "invalid_document"
            }
            Self::TooLarge(_) => "too_large",
            Self::Busy => "busy",
            Self::Proxy { .. } => "proxy_error",
        }
    }

    /// Status for a client when this is why no document can be served:
    /// 504 when the upstream (or the proxy) was too slow, 503 when it
    /// cannot be reached, 502 when it (or the proxy) answered with
    /// something unusable.
    pub fn client_status(&self) -> StatusCode {
        match self {
            Self::Timeout(_)
            | Self::Proxy {
                failure: ProxyFailure::Timeout(_),
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(_)
            | Self::FetcherStopped
            | Self::Busy
            | Self::Proxy {
                failure: ProxyFailure::Unreachable(_),
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The upstream's HTTP status when it sent one (RFC 9211 `fwd-status`);
    /// a proxy's answer to CONNECT is not one (the request never reached
    /// the upstream), so it is only in the error's text.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::HttpStatus(s) => Some(*s),
            _ => None,
        }
    }
}

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// Binding or running an HTTP server failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Registering metrics failed.
    #[error("cannot register metrics: {0}")]
    Metrics(String),
    /// Building the upstream TLS client failed.
    #[error("cannot set up TLS for the upstream: {0}")]
    Tls(String),
}

impl RunError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
