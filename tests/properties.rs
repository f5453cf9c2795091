//! Property-based tests (proptest): invalid input never panics, and the
//! rules hold for every generated input, not only the hand-picked ones.
//!
//! - the upstream-document validator (arbitrary bytes, arbitrary JSON,
//!   generated valid documents and their near misses);
//! - the route matcher, through the real actix-web routes (every
//!   configured document route and the operations routes match, in any
//!   spelling that decodes to them, and nothing else does);
//! - the `If-None-Match` parser;
//! - `Cache-Status` (parsed back with the `sfv` crate, RFC 8941) and the
//!   freshness / `Age` arithmetic;
//! - arbitrary upstream bytes through the real gateway: refused, never served;
//! - the tenant segment of issuer templates: the check is its grammar, and a
//!   template route yields only checked tenants and safe upstream URLs;
//! - pre-rendered response headers (`Age`, `Cache-Control`, `Cache-Status`)
//!   equal freshly rendered ones for any age, TTL and state.

mod support;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderValue, IF_NONE_MATCH};
use actix_web::{test as atest, App};
use bytes::Bytes;
use oauth_metadata_gateway::cache::memo::RenderMemo;
use oauth_metadata_gateway::cache_rules::freshness::{
    ceil_seconds, whole_seconds, Freshness, FreshnessState, MAX_DELTA_SECONDS,
};
use oauth_metadata_gateway::cache_rules::outcome::{CacheOutcome, StatusDetail, CACHE_NAME};
use oauth_metadata_gateway::document::{etag_for, ExpectedIssuer, ValidatedDocument};
use oauth_metadata_gateway::http::cache_headers;
use oauth_metadata_gateway::http::conditional::none_match;
use oauth_metadata_gateway::Generation;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use serde_json::Value;

const ISSUER: &str = "https://as.example.com";

// ---------------------------------------------------------------------------
// The document validator

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String(ISSUER.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Member names: the RFC 8414 ones the validator looks at, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "issuer",
            "response_types_supported",
            "grant_types_supported",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "scopes_supported",
            "signed_metadata",
        ])
        .prop_map(String::from),
        "[a-z_]{1,12}",
    ]
}

/// JSON text for `members` in the given order, with arbitrary whitespace
/// between tokens: what a real server might send.
fn render(members: &[(String, Value)], ws: &[&str]) -> String {
    let mut w = ws.iter().cycle();
    let mut out = String::from("{");
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(w.next().unwrap());
        out.push_str(&serde_json::to_string(k).unwrap());
        out.push_str(w.next().unwrap());
        out.push(':');
        out.push_str(w.next().unwrap());
        out.push_str(&serde_json::to_string(v).unwrap());
        out.push_str(w.next().unwrap());
    }
    out.push('}');
    out
}

fn whitespace() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec!["", " ", "\n", "\t", "  ", "\r\n"]),
        1..8,
    )
}

/// A document valid by construction: the REQUIRED members, well typed,
/// plus arbitrary extra members with distinct names (a duplicate name is
/// refused, RFC 8259 §4, see `strict_json`), in a random order.
fn valid_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    let required = vec![
        ("issuer".to_string(), Value::from(ISSUER)),
        (
            "authorization_endpoint".to_string(),
            Value::from(format!("{ISSUER}/authorize")),
        ),
        (
            "token_endpoint".to_string(),
            Value::from(format!("{ISSUER}/token")),
        ),
        (
            "response_types_supported".to_string(),
            serde_json::json!(["code"]),
        ),
    ];
    let extra = prop::collection::btree_map("x_[a-z]{1,8}", json_value(), 0..5);
    (extra, any::<prop::sample::Index>()).prop_map(move |(extra, rot)| {
        let mut all = required.clone();
        all.extend(extra);
        let n = all.len();
        all.rotate_left(rot.index(n));
        all
    })
}

proptest! {
    #![proptest_config(PtConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_validator(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let issuer = ExpectedIssuer::new(ISSUER);
        if let Ok(doc) = ValidatedDocument::validate(Bytes::from(bytes.clone()), &issuer) {
            prop_assert_eq!(&doc.body[..], &bytes[..]);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_acceptance_implies_the_rules(value in json_value()) {
        let issuer = ExpectedIssuer::new(ISSUER);
        let text = serde_json::to_vec(&value).unwrap();
        if let Ok(doc) = ValidatedDocument::validate(Bytes::from(text.clone()), &issuer) {
            // Accepted: an object declaring the issuer with the REQUIRED
            // response_types_supported (RFC 8414 §2, §3.3), bytes untouched.
            let obj = value.as_object().expect("only objects are accepted");
            prop_assert!(obj.get("issuer").and_then(Value::as_str).is_some_and(|i| issuer.matches(i)));
            prop_assert!(obj.get("response_types_supported").is_some_and(Value::is_array));
            prop_assert_eq!(&doc.body[..], &text[..]);
        }
    }

    #[test]
    fn valid_documents_are_accepted_byte_for_byte(members in valid_members(), ws in whitespace()) {
        let text = render(&members, &ws);
        let issuer = ExpectedIssuer::new(ISSUER);
        let doc = ValidatedDocument::validate(Bytes::from(text.clone()), &issuer)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&doc.body[..], text.as_bytes());
        prop_assert_eq!(doc.etag, etag_for(text.as_bytes()));
    }

    #[test]
    fn near_misses_are_refused(members in valid_members(), ws in whitespace(), how in 0usize..7, junk in json_value()) {
        let mut members = members;
        let pos = |m: &Vec<(String, Value)>, k: &str| m.iter().position(|(n, _)| n == k).unwrap();
        match how {
            0 => { let i = pos(&members, "issuer"); members.remove(i); }
            1 => { let i = pos(&members, "issuer"); members[i].1 = Value::from("https://evil.example.com"); }
            2 => { let i = pos(&members, "issuer"); members[i].1 = Value::from(format!("{ISSUER}/x")); }
            3 => { let i = pos(&members, "response_types_supported"); members.remove(i); }
            4 => {
                let i = pos(&members, "response_types_supported");
                // Anything but an array of strings.
                let bad = match junk {
                    Value::Array(ref a) if a.iter().all(Value::is_string) => Value::from(1),
                    other => other,
                };
                members[i].1 = bad;
            }
            5 => { let i = pos(&members, "token_endpoint"); members.remove(i); }
            // Any member twice, even with the same value (RFC 8259 §4).
            _ => { let dup = members[junk.to_string().len() % members.len()].clone(); members.push(dup); }
        }
        let text = render(&members, &ws);
        let issuer = ExpectedIssuer::new(ISSUER);
        prop_assert!(ValidatedDocument::validate(Bytes::from(text.clone()), &issuer).is_err(), "accepted: {}", text);
    }
}

// ---------------------------------------------------------------------------
// If-None-Match

/// An entity-tag's opaque part: etagc = %x21 / %x23-7E (RFC 9110 §8.8.3).
fn opaque_tag() -> impl Strategy<Value = String> {
    "[!#-~]{0,10}".prop_map(|s| format!("\"{s}\""))
}

fn headers_with(values: &[Vec<u8>]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(IF_NONE_MATCH, HeaderValue::from_bytes(v).ok()?);
    }
    Some(h)
}

proptest! {
    #![proptest_config(PtConfig::with_cases(512))]

    #[test]
    fn if_none_match_never_panics_and_never_matches_without_the_tag(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3),
        current in opaque_tag(),
    ) {
        let etag = HeaderValue::from_str(&current).unwrap();
        if let Some(h) = headers_with(&values) {
            if none_match(&h, &etag) {
                prop_assert!(values.iter().any(|v| v.trim_ascii() == b"*"
                    || v.windows(current.len()).any(|w| w == current.as_bytes())));
            }
        }
    }

    #[test]
    fn if_none_match_lists_match_exactly_when_they_hold_the_tag(
        others in prop::collection::vec((opaque_tag(), any::<bool>()), 0..5),
        include in any::<bool>(),
        weak in any::<bool>(),
        at in any::<prop::sample::Index>(),
        seps in prop::collection::vec(prop::sample::select(vec![",", ", ", " ,", " , ", ",,", ",\t"]), 6),
        current in opaque_tag(),
    ) {
        let mut tags: Vec<String> = others
            .iter()
            .filter(|(t, _)| *t != current)
            .map(|(t, w)| if *w { format!("W/{t}") } else { t.clone() })
            .collect();
        if include {
            let i = at.index(tags.len() + 1);
            tags.insert(i, if weak { format!("W/{current}") } else { current.clone() });
        }
        let mut value = String::new();
        for (i, t) in tags.iter().enumerate() {
            if i > 0 {
                value.push_str(seps[i % seps.len()]);
            }
            value.push_str(t);
        }
        let h = headers_with(&[value.clone().into_bytes()]).unwrap();
        let etag = HeaderValue::from_str(&current).unwrap();
        // Weak comparison (RFC 9110 §13.1.2): W/ is ignored on either side.
        prop_assert_eq!(none_match(&h, &etag), include, "{} vs {}", value, current);
    }
}

// ---------------------------------------------------------------------------
// Cache-Status and the freshness / Age arithmetic

fn outcome() -> impl Strategy<Value = CacheOutcome> {
    prop::sample::select(vec![
        CacheOutcome::Hit,
        CacheOutcome::Stale,
        CacheOutcome::Miss,
        CacheOutcome::Collapsed,
        CacheOutcome::Error,
        CacheOutcome::Bypass,
        CacheOutcome::NotFound,
        CacheOutcome::NegativeHit,
    ])
}

fn detail() -> impl Strategy<Value = StatusDetail> {
    (
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(prop::sample::select(vec![
            "timeout",
            "connect_error",
            "http_status",
            "invalid_document",
            "too_large",
            "proxy_error",
        ])),
    )
        .prop_map(|(ttl, fwd_status, detail)| StatusDetail {
            ttl,
            fwd_status,
            detail,
        })
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

proptest! {
    #![proptest_config(PtConfig::with_cases(1024))]

    #[test]
    fn cache_status_is_always_a_valid_rfc9211_header(o in outcome(), d in detail()) {
        let value = o.cache_status(d);
        let text = value.to_str().expect("ASCII");
        let list: sfv::List = sfv::Parser::new(text)
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(list.len(), 1);
        let sfv::ListEntry::Item(item) = &list[0] else {
            return Err(TestCaseError::fail("an inner list"));
        };
        prop_assert_eq!(item.bare_item.as_token().map(|t| t.as_str()), Some(CACHE_NAME));
        let p = &item.params;
        let param = |k: &str| p.iter().find(|(key, _)| key.as_str() == k).map(|(_, v)| v);
        match o {
            CacheOutcome::Hit | CacheOutcome::NegativeHit => prop_assert_eq!(param("hit"), Some(&sfv::BareItem::Boolean(true))),
            CacheOutcome::Stale => prop_assert_eq!(param("fwd").and_then(|v| v.as_token()).map(|t| t.as_str()), Some("stale")),
            CacheOutcome::Bypass => prop_assert_eq!(param("fwd").and_then(|v| v.as_token()).map(|t| t.as_str()), Some("bypass")),
            _ => prop_assert_eq!(param("fwd").and_then(|v| v.as_token()).map(|t| t.as_str()), Some("miss")),
        }
        prop_assert_eq!(param("stored").is_some(), matches!(o, CacheOutcome::Miss | CacheOutcome::NotFound));
        prop_assert_eq!(param("collapsed").is_some(), o == CacheOutcome::Collapsed);
        if let Some(status) = d.fwd_status {
            prop_assert_eq!(param("fwd-status").and_then(|v| v.as_integer()).map(i64::from), Some(i64::from(status)));
        }
        if let Some(ttl) = d.ttl {
            let got = param("ttl").and_then(|v| v.as_integer()).map(i64::from).expect("ttl");
            // Exact within the sf-integer range, clamped beyond it.
            prop_assert_eq!(got, ttl.clamp(-999_999_999_999_999, 999_999_999_999_999));
        }
    }

    #[test]
    fn freshness_classification_partitions_the_age_axis(
        ttl in duration().prop_filter("positive ttl", |d| !d.is_zero()),
        max_stale in duration(),
        fetch_budget in duration().prop_filter("positive", |d| !d.is_zero()),
        age in duration(),
    ) {
        let f = Freshness { ttl, max_stale, fetch_budget };
        match f.classify(age) {
            FreshnessState::Fresh { remaining } => {
                prop_assert!(age < ttl);
                prop_assert_eq!(age + remaining, ttl);
            }
            FreshnessState::Stale { past } => {
                prop_assert!(age >= ttl);
                prop_assert_eq!(ttl + past, age);
                prop_assert!(age < ttl.saturating_add(max_stale));
            }
            FreshnessState::Expired => prop_assert!(age >= ttl.saturating_add(max_stale)),
        }
        // The refresher fetches before expiry, but not much before: at
        // least 90% of the TTL has passed (one fetch per TTL, give or take).
        let r = f.refresh_age();
        prop_assert!(r <= ttl);
        prop_assert!(r >= ttl - ttl / 10);
    }

    #[test]
    fn age_and_deadline_rounding(d in duration()) {
        // Age / max-age: rounded down, capped at 2^31 (RFC 9111 §1.2.2).
        let w = whole_seconds(d);
        prop_assert!(w <= MAX_DELTA_SECONDS);
        prop_assert_eq!(w, d.as_secs().min(MAX_DELTA_SECONDS));
        // Deadlines told to clients: never earlier than the real one.
        let c = ceil_seconds(d);
        prop_assert!(u128::from(c) * 1_000_000_000 >= d.as_nanos());
        prop_assert!(u128::from(c) * 1_000_000_000 < d.as_nanos() + 1_000_000_000);
    }
}

// ---------------------------------------------------------------------------
// The route matcher, through the real routes

/// Percent-decodes what actix-router decodes before matching: every `%XX`
/// except `%25` (`%`), `%2F` (`/`) and `%2B` (`+`), which stay encoded.
fn decoded(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if !matches!(v, b'%' | b'/' | b'+') {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "/", ".well-known", "/.well-known", "oauth-authorization-server",
            "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
            "/.well-known/oauth-protected-resource", "metrics", "/metrics", "healthz",
            "/healthz", "readyz", "/readyz", "//", ".", "..", "/tenant1",
        ]).prop_map(String::from),
        2 => "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,6}",
        2 => (any::<u8>(), any::<bool>()).prop_map(|(b, upper)| {
            if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }
        }),
    ]
}

/// A known route with a few edits: percent-encoding a character (still the
/// same path once decoded), changing case, adding or removing characters,
/// encoding a `/` (a different path).
fn mutated_route() -> impl Strategy<Value = String> {
    let routes = prop::sample::select(vec![
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
        "/metrics",
        "/healthz",
        "/readyz",
    ]);
    let edits = prop::collection::vec((0u8..6, any::<prop::sample::Index>(), any::<bool>()), 0..3);
    (routes, edits).prop_map(|(route, edits)| {
        let mut p: Vec<String> = route.chars().map(String::from).collect();
        for (op, at, upper) in edits {
            let i = at.index(p.len());
            match op {
                0 if p[i].len() == 1 => {
                    let b = p[i].as_bytes()[0];
                    p[i] = if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    };
                }
                1 => p[i] = p[i].to_uppercase(),
                2 => p.insert(i, "/".into()),
                3 => p.push("/".into()),
                4 if p.len() > 1 => {
                    p.remove(i);
                }
                5 if p[i] == "/" => p[i] = "%2F".into(),
                _ => {}
            }
        }
        p.concat()
    })
}

fn request_path() -> impl Strategy<Value = String> {
    let assembled = (
        prop::collection::vec(path_piece(), 0..6),
        proptest::option::of("[a-z0-9=&%]{0,8}"),
    )
        .prop_map(|(pieces, query)| {
            let mut p = String::from("/");
            for piece in pieces {
                p.push_str(&piece);
            }
            if let Some(q) = query {
                p.push('?');
                p.push_str(&q);
            }
            p
        });
    prop_oneof![assembled, mutated_route()]
}

#[test]
fn arbitrary_paths_never_panic_and_only_configured_paths_match() {
    let (_reserved, port) = support::refusing_port();
    let dead = format!("http://127.0.0.1:{port}");
    let config = support::config_from_args([
        "oauth-metadata-gateway",
        "--upstream",
        dead.as_str(),
        "--upstream-timeout",
        "300ms",
        "--retry-backoff-min",
        "1h",
        "--retry-backoff-max",
        "1h",
        "--resource",
        "https://mcp.example.com/mcp",
    ])
    .unwrap();
    let gw: Arc<Generation> = Generation::new(&config).unwrap();
    let mut configured: Vec<String> = config
        .documents
        .routes()
        .map(|(r, _)| r.to_string())
        .collect();
    configured.extend(["/metrics", "/healthz", "/readyz"].map(String::from));

    let mut runner = TestRunner::new(PtConfig::with_cases(384));
    let result = runner.run(&request_path(), |uri| {
        if uri.parse::<actix_web::http::Uri>().is_err() {
            return Ok(()); // cannot be sent at all
        }
        let path = uri.split('?').next().unwrap_or("").to_string();
        let target = decoded(&path);
        let should_match = configured.iter().any(|r| r.as_bytes() == target.as_slice());

        let gw = gw.clone();
        let (status, cors) = actix_web::rt::System::new().block_on(async move {
            let app = atest::init_service(App::new().configure(|cfg| {
                oauth_metadata_gateway::http::routes(
                    cfg,
                    &oauth_metadata_gateway::MetadataGateway::fixed(gw.clone()),
                )
            }))
            .await;
            let res =
                atest::call_service(&app, atest::TestRequest::get().uri(&uri).to_request()).await;
            (
                res.status().as_u16(),
                res.headers().contains_key("access-control-allow-origin"),
            )
        });
        prop_assert_eq!(
            status != 404,
            should_match,
            "{} -> {} (decoded {:?})",
            path,
            status,
            String::from_utf8_lossy(&target)
        );
        // Discovery clients probe paths that may not exist: every 404 has
        // CORS headers, or a browser reports a network error instead.
        if !should_match {
            prop_assert!(cors, "{} has no CORS header", path);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Arbitrary upstream bytes through the real gateway

/// Bytes an upstream might send instead of a document: anything at all,
/// JSON that is not a valid document, and valid documents cut short.
fn upstream_garbage(issuer: String) -> impl Strategy<Value = Vec<u8>> {
    let doc = support::document(&issuer);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (1usize..doc.len()).prop_map(move |n| doc.as_bytes()[..n].to_vec()),
    ]
}

#[test]
fn arbitrary_upstream_bytes_are_refused_and_never_served() {
    let mut runner = TestRunner::new(PtConfig::with_cases(48));
    // The upstream's address is only known once it runs, so every case
    // runs its own upstream; the issuer is fixed with --issuer.
    let issuer = "http://as.test".to_string();
    let result = runner.run(&upstream_garbage(issuer.clone()), |bytes| {
        let expected = ExpectedIssuer::new(issuer.clone());
        let acceptable = ValidatedDocument::validate(Bytes::from(bytes.clone()), &expected).is_ok();
        let issuer = issuer.clone();
        let (status, body, cache_status, ready) =
            actix_web::rt::System::new().block_on(async move {
                let upstream = support::Upstream::start(support::Behaviour::json(bytes)).await;
                let gw = support::TestGateway::in_front_of(
                    &upstream,
                    &[
                        "--issuer",
                        &issuer,
                        "--retry-backoff-min",
                        "1h",
                        "--retry-backoff-max",
                        "1h",
                    ],
                )
                .await;
                let r = support::get(&gw.url(support::AS_PATH)).await;
                let ready = support::get(&gw.url("/readyz")).await.status;
                gw.stop().await.unwrap();
                let cache_status = r.cache_status().to_string();
                (r.status, r.body, cache_status, ready)
            });
        if acceptable {
            prop_assert_eq!(status, 200);
        } else {
            prop_assert_eq!(status, 502, "{}", cache_status);
            prop_assert!(
                cache_status.contains("detail=invalid_document"),
                "{}",
                cache_status
            );
            let err: Value = serde_json::from_slice(&body).expect("the gateway's own JSON error");
            prop_assert_eq!(&err["error"], "temporarily_unavailable");
            prop_assert_eq!(ready, 503);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// The tenant segment of issuer templates

/// Strings near the tenant grammar: its characters, and the ones that must
/// be refused (`/`, `%`, NUL, space, non-ASCII, other `pchar`s).
fn tenant_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,140}",
        "[A-Za-z0-9._/%~:@!$&'()*+,;= \u{0}é-]{0,20}",
        Just(".".to_string()),
        Just("..".to_string()),
        "\\.{1,3}",
    ]
}

fn grammar_allows(s: &str) -> bool {
    (1..=oauth_metadata_gateway::tenant::MAX_TENANT_LEN).contains(&s.len())
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

proptest! {
    #![proptest_config(PtConfig::with_cases(2048))]

    /// The check is exactly the grammar, and never panics.
    #[test]
    fn the_tenant_check_is_exactly_its_grammar(s in tenant_candidate()) {
        prop_assert_eq!(oauth_metadata_gateway::tenant::valid_tenant(&s), grammar_allows(&s));
    }

    /// Whatever follows a template route's prefix, the route table either
    /// finds nothing or a tenant that passes the check, and the upstream URL
    /// built from it is the template's host with the tenant as one segment
    /// (the URL parser changes nothing in it).
    #[test]
    fn template_routes_only_yield_checked_tenants(
        rest in tenant_candidate(),
        suffix in prop_oneof![Just(String::new()), Just("/".to_string()), "/[a-z.]{1,4}"],
    ) {
        let config = support::config_from_args([
            "oauth-metadata-gateway",
            "--issuer",
            "https://auth.example.com/realms/{tenant}",
            "--upstream",
            "http://keycloak.internal:8080/realms/{tenant}",
        ])
        .unwrap();
        let table = oauth_metadata_gateway::routes::RouteTable::build(&config.documents, true);
        let path = format!("/.well-known/oauth-authorization-server/realms/{rest}{suffix}");
        match table.resolve(&path, &path).0 {
            oauth_metadata_gateway::routes::Resolved::Tenant { template, tenant } => {
                prop_assert_eq!(template, 0);
                prop_assert!(grammar_allows(tenant));
                prop_assert!(suffix.is_empty());
                let t = &config.documents.templates[0];
                for pattern in &t.upstream_urls {
                    let rendered = pattern.render(tenant);
                    let url = url::Url::parse(&rendered).unwrap();
                    prop_assert_eq!(url.host_str(), Some("keycloak.internal"));
                    prop_assert_eq!(url.port(), Some(8080));
                    prop_assert_eq!(url.as_str(), rendered.as_str());
                    prop_assert!(url.path_segments().unwrap().any(|seg| seg == tenant));
                }
                prop_assert_eq!(t.issuer.render(tenant), format!("https://auth.example.com/realms/{tenant}"));
            }
            oauth_metadata_gateway::routes::Resolved::NotFound => {
                prop_assert!(!(grammar_allows(&rest) && suffix.is_empty()));
            }
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

fn directive() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| format!("max-age={n}")),
        (0u64..100_000).prop_map(|n| format!("S-MaxAge={n}")),
        Just("no-store".to_string()),
        Just("no-cache".to_string()),
        Just("private".to_string()),
        Just("public".to_string()),
        Just("no-cache=\"a, b\"".to_string()),
        "[a-z-]{1,10}(=[a-z0-9\"]{0,5})?",
        "[ -~]{0,12}",
    ]
}

proptest! {
    #![proptest_config(PtConfig::with_cases(1024))]

    /// RFC 9111 §4.2 within the operator's bounds: whatever the upstream
    /// sends, the freshness is within [min(--min-ttl, --ttl), --ttl], a
    /// forbidding directive means --min-ttl, and a plain max-age below
    /// the bounds is the max-age minus the upstream's Age.
    #[test]
    fn upstream_freshness_stays_within_the_bounds(
        items in proptest::collection::vec(directive(), 0..5),
        age in proptest::option::of("[0-9]{0,4}|[ -~]{0,6}"),
        min in 1u64..100,
        ttl in 1u64..1000,
    ) {
        use oauth_metadata_gateway::cache_rules::cache_control::parse_cache_control;
        use oauth_metadata_gateway::cache_rules::upstream_freshness::{evaluate, Policy, Source, UpstreamHeaders};
        let value = items.join(", ");
        let headers = UpstreamHeaders {
            cache_control: Some(value.as_str().into()),
            age: age.as_deref().map(Box::from),
            ..UpstreamHeaders::default()
        };
        let policy = Policy {
            min_ttl: Duration::from_secs(min),
            ttl: Duration::from_secs(ttl),
            honour_upstream: true,
        };
        let t = evaluate(&headers, std::time::SystemTime::now(), policy);
        let low = Duration::from_secs(min.min(ttl));
        prop_assert!(t.fresh_for >= low && t.fresh_for <= policy.ttl, "{value}: {t:?}");
        let d = parse_cache_control(&value);
        if d.no_store || d.no_cache || d.private {
            prop_assert_eq!(t.fresh_for, low);
            prop_assert_eq!(t.source, Source::Uncacheable);
        }
        if let (None, Some(Ok(max_age)), false) = (d.s_maxage, d.max_age, d.no_store || d.no_cache || d.private) {
            let expected = Duration::from_secs(max_age).saturating_sub(t.upstream_age).clamp(low, policy.ttl);
            prop_assert_eq!(t.fresh_for, expected);
        }
    }
}

/// One `Cache-Control` directive as the model knows it, rendered by
/// [`render_directive`] in any letter case, with or without a quoted
/// argument.
#[derive(Debug, Clone)]
enum Directive {
    MaxAge(u64, bool),
    SMaxAge(u64, bool),
    StaleIfError(u64),
    NoStore,
    NoCache,
    Private,
    Public,
    /// `no-cache="…"` / `private="…"`: about header fields only.
    Qualified(&'static str, &'static str),
    /// An extension whose quoted argument looks like directives and holds
    /// commas: it must not split, and must change nothing.
    Extension(&'static str),
}

fn model_directive() -> impl Strategy<Value = Directive> {
    prop_oneof![
        (0u64..1_000_000, any::<bool>()).prop_map(|(n, q)| Directive::MaxAge(n, q)),
        (0u64..1_000_000, any::<bool>()).prop_map(|(n, q)| Directive::SMaxAge(n, q)),
        (0u64..1_000_000).prop_map(Directive::StaleIfError),
        Just(Directive::NoStore),
        Just(Directive::NoCache),
        Just(Directive::Private),
        Just(Directive::Public),
        prop_oneof![Just("no-cache"), Just("private")]
            .prop_map(|n| Directive::Qualified(n, "set-cookie, x-a")),
        prop_oneof![
            Just("ext=\"max-age=1, no-store\""),
            Just("community=\"s-maxage=2,private\""),
            Just("x-y"),
        ]
        .prop_map(Directive::Extension),
    ]
}

fn render_directive(d: &Directive, upper: bool) -> String {
    let text = match d {
        Directive::MaxAge(n, true) => format!("max-age=\"{n}\""),
        Directive::MaxAge(n, false) => format!("max-age={n}"),
        Directive::SMaxAge(n, true) => format!("s-maxage=\"{n}\""),
        Directive::SMaxAge(n, false) => format!("s-maxage={n}"),
        Directive::StaleIfError(n) => format!("stale-if-error={n}"),
        Directive::NoStore => "no-store".into(),
        Directive::NoCache => "no-cache".into(),
        Directive::Private => "private".into(),
        Directive::Public => "public".into(),
        Directive::Qualified(name, fields) => format!("{name}=\"{fields}\""),
        Directive::Extension(text) => (*text).into(),
    };
    if upper {
        // Directive names are case-insensitive (RFC 9111 §5.2); the
        // arguments used here have no letters that matter.
        text.to_ascii_uppercase()
    } else {
        text
    }
}

proptest! {
    #![proptest_config(PtConfig::with_cases(2048))]

    /// The `Cache-Control` parser against an independent model: the first
    /// `max-age` / `s-maxage` / `stale-if-error` wins (RFC 9111 §4.2.1),
    /// `no-store` anywhere counts, `no-cache` and `private` only
    /// unqualified, quoted arguments (commas included) neither split nor
    /// leak directives, and names match in any case, whatever the
    /// whitespace around the commas.
    #[test]
    fn cache_control_parses_as_the_model_says(
        items in proptest::collection::vec((model_directive(), any::<bool>()), 0..7),
        spaces in proptest::collection::vec("[ \t]{0,2}", 8),
    ) {
        use oauth_metadata_gateway::cache_rules::cache_control::parse_cache_control;
        let mut value = String::new();
        for (i, (d, upper)) in items.iter().enumerate() {
            if i > 0 {
                value.push(',');
            }
            value.push_str(&spaces[i % spaces.len()]);
            value.push_str(&render_directive(d, *upper));
        }
        let parsed = parse_cache_control(&value);
        let first = |f: &dyn Fn(&Directive) -> Option<u64>| items.iter().find_map(|(d, _)| f(d));
        let max_age = first(&|d| match d { Directive::MaxAge(n, _) => Some(*n), _ => None });
        let s_maxage = first(&|d| match d { Directive::SMaxAge(n, _) => Some(*n), _ => None });
        let sie = first(&|d| match d { Directive::StaleIfError(n) => Some(*n), _ => None });
        let any = |want: fn(&Directive) -> bool| items.iter().any(|(d, _)| want(d));
        prop_assert_eq!(parsed.max_age.map(|r| r.ok()), max_age.map(Some), "{}", value);
        prop_assert_eq!(parsed.s_maxage.map(|r| r.ok()), s_maxage.map(Some), "{}", value);
        prop_assert_eq!(parsed.stale_if_error, sie, "{}", value);
        prop_assert_eq!(parsed.no_store, any(|d| matches!(d, Directive::NoStore)), "{}", value);
        prop_assert_eq!(parsed.no_cache, any(|d| matches!(d, Directive::NoCache)), "{}", value);
        prop_assert_eq!(parsed.private, any(|d| matches!(d, Directive::Private)), "{}", value);
    }
}

// ---------------------------------------------------------------------------
// Pre-rendered response headers

/// The inputs of the time-dependent headers of one response: any state
/// (outcome and `Cache-Status` detail), any age and any TTL, with small
/// values drawn often so consecutive requests share inputs (the reuse path)
/// as much as they differ (the re-render path).
fn header_inputs() -> impl Strategy<Value = cache_headers::Inputs> {
    let seconds = prop_oneof![0u64..4, 0u64..100_000, any::<u64>()];
    (
        outcome(),
        detail(),
        seconds.clone(),
        seconds.clone(),
        seconds,
    )
        .prop_map(
            |(outcome, detail, age, max_age, stale_if_error)| cache_headers::Inputs {
                outcome,
                detail,
                age,
                max_age,
                stale_if_error,
            },
        )
}

proptest! {
    #![proptest_config(PtConfig::with_cases(512))]

    /// Requests for a few documents in any order, each document keeping
    /// its own pre-rendered headers: every answer equals the headers
    /// rendered afresh for that request's inputs.
    #[test]
    fn pre_rendered_headers_equal_fresh_ones(
        requests in prop::collection::vec((0usize..3, header_inputs(), any::<bool>()), 1..40),
    ) {
        let documents: [RenderMemo; 3] = Default::default();
        let mut previous: [Option<cache_headers::Inputs>; 3] = [None; 3];
        for (doc, inputs, repeat) in requests {
            // Half the time, the document's previous inputs again (a
            // request within the same second).
            let inputs = match previous[doc] {
                Some(p) if repeat => p,
                _ => inputs,
            };
            previous[doc] = Some(inputs);
            let reused = cache_headers::for_document(&documents[doc], inputs);
            prop_assert_eq!(&reused, &cache_headers::render(inputs), "{:?}", inputs);
        }
    }
}
