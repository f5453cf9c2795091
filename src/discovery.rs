//! Well-known URIs for discovery, computed once from configuration: which
//! paths the gateway serves for an issuer or a protected resource, and which
//! upstream URLs it fetches them from, in which order.
//!
//! Everything here runs at start-up on configured URLs only; nothing is ever
//! derived from a request path. That is what keeps the gateway from being an
//! open proxy: a request is served only when its path is exactly one of the
//! routes computed here, and the upstream URLs are fixed before the first
//! request arrives.
//!
//! The rules:
//! - RFC 8414 §3.1: the well-known suffix is inserted between the host and
//!   the issuer's path (`https://as/tenant1` →
//!   `https://as/.well-known/oauth-authorization-server/tenant1`), after any
//!   terminating `/` is removed from the path.
//! - RFC 9728 §3.1: the same insertion for `oauth-protected-resource`.
//! - OpenID Connect Discovery 1.0 §4: `openid-configuration` is appended to
//!   the issuer (`https://as/tenant1/.well-known/openid-configuration`);
//!   RFC 8414 §5 also allows the inserted form. Clients try both.
//!
//! Paths are restricted to a conservative character set (no `%`, no `*`,
//! no braces, no empty, `.` or `..` segments, no `.well-known` segment), so a
//! configured route is a plain string that the router compares exactly.

use crate::tenant::PLACEHOLDER;

/// RFC 8414 §7.3: well-known name of authorization-server metadata.
pub const AS_WELL_KNOWN: &str = "oauth-authorization-server";
/// OpenID Connect Discovery 1.0 §4: well-known name of OpenID Provider metadata.
pub const OIDC_WELL_KNOWN: &str = "openid-configuration";
/// RFC 9728 §3: well-known name of protected resource metadata.
pub const PR_WELL_KNOWN: &str = "oauth-protected-resource";

/// The name of the key-set kind in labels and the admin listing.
pub const KEY_SET_KIND: &str = "jwks";

/// What a served document is; also the first part of its metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// RFC 8414 authorization-server metadata.
    AuthorizationServer,
    /// OpenID Provider metadata (OpenID Connect Discovery 1.0).
    OpenIdConfiguration,
    /// RFC 9728 protected resource metadata.
    ProtectedResource,
    /// An authorization server's key set (RFC 7517 §5 JWK Set), from its
    /// metadata's `jwks_uri` (RFC 8414 §2) or a configured URL.
    KeySet,
}

impl DocumentKind {
    /// The well-known URI suffix of this kind.
    pub const fn well_known(self) -> &'static str {
        match self {
            Self::AuthorizationServer => AS_WELL_KNOWN,
            Self::OpenIdConfiguration => OIDC_WELL_KNOWN,
            Self::ProtectedResource => PR_WELL_KNOWN,
            // Not a well-known name: key sets are served at the route the
            // operator chose; this is the kind's name in labels.
            Self::KeySet => KEY_SET_KIND,
        }
    }

    /// The `kind` metrics label: `jwks` for key sets, `metadata` for the
    /// metadata documents.
    pub const fn metrics_kind(self) -> &'static str {
        match self {
            Self::KeySet => KEY_SET_KIND,
            _ => "metadata",
        }
    }

    /// The bounded metrics label of a document of this kind for an
    /// identifier with `path`: `oauth-authorization-server`,
    /// `oauth-authorization-server/tenant1`, `oauth-protected-resource/mcp`.
    pub fn label(self, path: &IdentifierPath) -> String {
        format!("{}{}", self.well_known(), path.as_str())
    }
}

/// The path of an issuer or resource identifier, checked and without a
/// terminating `/`: `""` for `https://as.example.com/`, `"/tenant1"` for
/// `https://as.example.com/tenant1/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentifierPath(String);

impl IdentifierPath {
    /// The path, `""` or `/seg[/seg...]`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for an identifier without a path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// A path taken from one checked before (kept as a string by
    /// [`crate::upstream_urls::UpstreamUrls`]).
    pub(crate) fn checked(path: &str) -> Self {
        Self(path.to_string())
    }
}

/// An http(s) URL split into origin and path, as well-known URIs need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// `scheme://host[:port]`, exactly as the URL crate normalises it.
    pub origin: String,
    /// The checked path.
    pub path: IdentifierPath,
}

/// Characters allowed in a path segment: RFC 3986 `pchar` without
/// percent-encoding and without `*` (both would make the route more than a
/// plain string to compare).
fn segment_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
        )
}

/// Parses `value` as an http(s) URL without query, fragment or
/// credentials and checks its path (see the module docs). `value` is kept
/// verbatim by callers that need it (issuer comparison is exact).
pub fn split_url(value: &str) -> Result<SplitUrl, String> {
    let url = url::Url::parse(value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{value:?} must be an http or https URL, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{value:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || value.contains(['?', '#']) {
        return Err(format!(
            "{value:?} must not have a query or fragment (RFC 8414 §2, RFC 9728 §1.2)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{value:?} must not carry credentials"));
    }
    // Check the path as typed: the URL crate would quietly resolve `..`.
    let after_scheme = value.split_once("://").map_or("", |(_, rest)| rest);
    let raw_path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = check_path(raw_path).map_err(|e| format!("{value:?}: {e}"))?;
    let origin = url[..url::Position::BeforePath].to_string();
    Ok(SplitUrl { origin, path })
}

fn check_path(raw: &str) -> Result<IdentifierPath, String> {
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if trimmed.is_empty() {
        return Ok(IdentifierPath(String::new()));
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() {
            return Err("the path has an empty segment (`//`)".to_string());
        }
        if segment == "." || segment == ".." {
            return Err("the path has a `.` or `..` segment".to_string());
        }
        if segment.eq_ignore_ascii_case(".well-known") {
            return Err("the path must not contain a `.well-known` segment".to_string());
        }
        if let Some(c) = segment.chars().find(|&c| !segment_char_ok(c)) {
            return Err(format!(
                "the path has the character {c:?}; only letters, digits and -._~!$&'()+,;=:@ are allowed (no percent-encoding)"
            ));
        }
    }
    Ok(IdentifierPath(trimmed.to_string()))
}

/// RFC 8414 §3.1 / RFC 9728 §3.1: `/.well-known/<name><path>`.
pub fn inserted(kind: DocumentKind, path: &IdentifierPath) -> String {
    format!("/.well-known/{}{}", kind.well_known(), path.as_str())
}

/// OpenID Connect Discovery 1.0 §4: `<path>/.well-known/<name>`.
pub fn appended(kind: DocumentKind, path: &IdentifierPath) -> String {
    format!("{}/.well-known/{}", path.as_str(), kind.well_known())
}

/// The paths the gateway serves an issuer's document of `kind` at.
///
/// - authorization server: the RFC 8414 §3.1 path only;
/// - OpenID configuration: the RFC 8414 §5 inserted path and, for an issuer
///   with a path, the OpenID Connect Discovery §4 appended path.
pub fn served_routes(kind: DocumentKind, issuer_path: &IdentifierPath) -> Vec<String> {
    let mut routes = vec![inserted(kind, issuer_path)];
    if kind == DocumentKind::OpenIdConfiguration && !issuer_path.is_root() {
        routes.push(appended(kind, issuer_path));
    }
    routes
}

/// The upstream URLs a document of `kind` is fetched from, in the order they
/// are tried (a 4xx answer moves on to the next; anything else ends the
/// fetch). `upstream` stands in for the issuer: the URLs are built from it
/// exactly as a client builds them from the issuer.
///
/// - authorization server, the order MCP clients use: RFC 8414
///   `/.well-known/oauth-authorization-server<path>`, then
///   `/.well-known/openid-configuration<path>` (RFC 8414 §5), then
///   `<path>/.well-known/openid-configuration` (OpenID Connect Discovery §4),
///   so an upstream that publishes only OpenID Provider metadata is served
///   at the RFC 8414 path too;
/// - OpenID configuration: `<path>/.well-known/openid-configuration` (the
///   OpenID Connect Discovery location), then the RFC 8414 §5 inserted form.
pub fn upstream_urls(kind: DocumentKind, upstream: &SplitUrl) -> Vec<String> {
    let origin = upstream.origin.as_str();
    let path = &upstream.path;
    let mut urls = Vec::with_capacity(3);
    match kind {
        DocumentKind::AuthorizationServer => {
            urls.push(format!("{origin}{}", inserted(kind, path)));
            urls.push(format!(
                "{origin}{}",
                inserted(DocumentKind::OpenIdConfiguration, path)
            ));
            if !path.is_root() {
                urls.push(format!(
                    "{origin}{}",
                    appended(DocumentKind::OpenIdConfiguration, path)
                ));
            }
        }
        DocumentKind::OpenIdConfiguration => {
            urls.push(format!("{origin}{}", appended(kind, path)));
            if !path.is_root() {
                urls.push(format!("{origin}{}", inserted(kind, path)));
            }
        }
        DocumentKind::ProtectedResource => {
            urls.push(format!("{origin}{}", inserted(kind, path)));
        }
        // A key set's location is its metadata's `jwks_uri` or a
        // configured URL, never derived from the issuer.
        DocumentKind::KeySet => {}
    }
    urls
}

/// Checks a route an operator chose (`--jwks-route`, `jwks_route`): an
/// absolute path of plain segments (the characters of [`split_url`], no
/// empty, `.` or `..` segment, no query); `.well-known` segments are
/// allowed (`/.well-known/jwks.json` is common). With `template`, `{tenant}`
/// must be one whole segment, once; without, it must not appear.
pub fn check_route(route: &str, template: bool) -> Result<(), String> {
    let Some(rest) = route.strip_prefix('/') else {
        return Err(format!("{route:?} must start with /"));
    };
    let mut placeholders = 0;
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "{route:?} has an empty, `.` or `..` segment (or a trailing /)"
            ));
        }
        if segment == PLACEHOLDER {
            placeholders += 1;
            continue;
        }
        if let Some(c) = segment.chars().find(|&c| !segment_char_ok(c)) {
            return Err(format!(
                "{route:?} has the character {c:?}; only letters, digits and -._~!$&'()+,;=:@ are allowed (no percent-encoding, no query), with {PLACEHOLDER} as a whole segment"
            ));
        }
    }
    match (template, placeholders) {
        (true, 1) | (false, 0) => Ok(()),
        (true, _) => Err(format!(
            "{route:?} must hold {PLACEHOLDER} once, as a whole path segment: the issuer is a template, so every tenant needs its own key-set route"
        )),
        (false, _) => Err(format!(
            "{route:?} has {PLACEHOLDER} but the issuer is not a template"
        )),
    }
}

/// Like [`split_url`], for a URL with `{tenant}` as one whole segment of
/// its path (an issuer template, see [`crate::tenant`]): every rule of
/// [`split_url`] holds with the placeholder standing for a tenant name, and
/// the returned path keeps the placeholder.
pub fn split_template_url(value: &str) -> Result<SplitUrl, String> {
    if value.matches(PLACEHOLDER).count() != 1 {
        return Err(format!("{value:?} must contain {PLACEHOLDER} exactly once"));
    }
    let authority = value
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("{value:?} is not a URL"))?;
    let path_start = value[authority..].find('/').map(|i| authority + i);
    let at = value.find(PLACEHOLDER).unwrap_or(0);
    let (before, after) = (&value[..at], &value[at + PLACEHOLDER.len()..]);
    if path_start.is_none_or(|p| at < p) {
        return Err(format!(
            "{value:?}: {PLACEHOLDER} must stand in the path, not in the host"
        ));
    }
    // (A query or fragment right after it is reported by `split_url`.)
    if !before.ends_with('/') || !(after.is_empty() || after.starts_with(['/', '?', '#'])) {
        return Err(format!(
            "{value:?}: {PLACEHOLDER} must be a whole path segment, as in https://auth.example.com/realms/{PLACEHOLDER}"
        ));
    }
    const SAMPLE: &str = "tenant";
    let sample = format!("{before}{SAMPLE}{after}");
    let split =
        split_url(&sample).map_err(|e| e.replace(&format!("{sample:?}"), &format!("{value:?}")))?;
    let offset = before.len() - path_start.unwrap_or(0);
    let path = split.path.as_str();
    let templated = format!(
        "{}{PLACEHOLDER}{}",
        &path[..offset],
        &path[offset + SAMPLE.len()..]
    );
    Ok(SplitUrl {
        origin: split.origin,
        path: IdentifierPath(templated),
    })
}

/// Finds the first route claimed twice in `owners` (route, owner name) and
/// returns the route with both owners.
pub fn find_conflict<'a, I>(owners: I) -> Option<(String, String, String)>
where
    I: IntoIterator<Item = (&'a str, String)>,
{
    let mut seen: std::collections::HashMap<&'a str, String> = std::collections::HashMap::new();
    for (route, owner) in owners {
        if let Some(first) = seen.get(route) {
            return Some((route.to_string(), first.clone(), owner));
        }
        seen.insert(route, owner);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    fn path(s: &str) -> IdentifierPath {
        split_url(s).unwrap().path
    }

    #[test]
    fn key_set_routes() {
        assert!(check_route("/.well-known/jwks.json", false).is_ok());
        assert!(check_route("/keys", false).is_ok());
        assert!(check_route("/{tenant}/keys", true).is_ok());
        for (bad, template) in [
            ("keys", false),
            ("/keys/", false),
            ("/a//b", false),
            ("/a/../b", false),
            ("/keys?x=1", false),
            ("/k%20", false),
            ("/{tenant}/keys", false),
            ("/keys", true),
            ("/{tenant}/{tenant}", true),
            ("/t{tenant}/keys", true),
        ] {
            assert!(check_route(bad, template).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_origin_and_path() {
        let s = split_url("https://AS.example.com:8443/tenant1/").unwrap();
        assert_eq!(s.origin, "https://as.example.com:8443");
        assert_eq!(s.path.as_str(), "/tenant1");
        let s = split_url("http://localhost:7788").unwrap();
        assert_eq!(s.origin, "http://localhost:7788");
        assert!(s.path.is_root());
        assert!(split_url("https://as.example.com/").unwrap().path.is_root());
        assert_eq!(path("https://a/x/y").as_str(), "/x/y");
        // The default port is dropped, as the URL crate normalises it.
        assert_eq!(split_url("https://a:443/").unwrap().origin, "https://a");
    }

    #[test]
    fn rejects_unsafe_or_ambiguous_urls() {
        for (bad, needle) in [
            ("ftp://a/x", "http or https"),
            ("https://a/x?y=1", "query"),
            ("https://a/x#f", "fragment"),
            ("https://a/x?", "query"),
            ("https://u:p@a/x", "credentials"),
            ("https://a/x/../y", "`..`"),
            ("https://a/./y", "`.`"),
            ("https://a//y", "empty segment"),
            ("https://a/x//", "empty segment"),
            ("https://a/x%2Fy", "'%'"),
            ("https://a/x*", "'*'"),
            ("https://a/.well-known/x", ".well-known"),
            ("not a url", "not a URL"),
        ] {
            let err = split_url(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn served_routes_follow_the_rfcs() {
        let root = path("https://as");
        let t = path("https://as/tenant1");
        assert_eq!(
            served_routes(DocumentKind::AuthorizationServer, &root),
            ["/.well-known/oauth-authorization-server"]
        );
        assert_eq!(
            served_routes(DocumentKind::AuthorizationServer, &t),
            ["/.well-known/oauth-authorization-server/tenant1"]
        );
        assert_eq!(
            served_routes(DocumentKind::OpenIdConfiguration, &root),
            ["/.well-known/openid-configuration"]
        );
        assert_eq!(
            served_routes(DocumentKind::OpenIdConfiguration, &t),
            [
                "/.well-known/openid-configuration/tenant1",
                "/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            inserted(DocumentKind::ProtectedResource, &path("https://mcp/mcp")),
            "/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn upstream_order_for_authorization_servers() {
        let up = split_url("http://internal:8080/tenant1").unwrap();
        assert_eq!(
            upstream_urls(DocumentKind::AuthorizationServer, &up),
            [
                "http://internal:8080/.well-known/oauth-authorization-server/tenant1",
                "http://internal:8080/.well-known/openid-configuration/tenant1",
                "http://internal:8080/tenant1/.well-known/openid-configuration",
            ]
        );
        let root = split_url("http://internal:8080/").unwrap();
        assert_eq!(
            upstream_urls(DocumentKind::AuthorizationServer, &root),
            [
                "http://internal:8080/.well-known/oauth-authorization-server",
                "http://internal:8080/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            upstream_urls(DocumentKind::OpenIdConfiguration, &up),
            [
                "http://internal:8080/tenant1/.well-known/openid-configuration",
                "http://internal:8080/.well-known/openid-configuration/tenant1",
            ]
        );
        assert_eq!(
            upstream_urls(DocumentKind::OpenIdConfiguration, &root),
            ["http://internal:8080/.well-known/openid-configuration"]
        );
    }

    #[test]
    fn template_urls_keep_the_placeholder() {
        let s = split_template_url("https://Auth.example.com/realms/{tenant}/").unwrap();
        assert_eq!(s.origin, "https://auth.example.com");
        assert_eq!(s.path.as_str(), "/realms/{tenant}");
        let s = split_template_url("https://login.example.com/{tenant}/v2.0").unwrap();
        assert_eq!(s.path.as_str(), "/{tenant}/v2.0");
        assert_eq!(
            upstream_urls(DocumentKind::AuthorizationServer, &s)[0],
            "https://login.example.com/.well-known/oauth-authorization-server/{tenant}/v2.0"
        );
        for (bad, needle) in [
            ("https://{tenant}.example.com/", "host"),
            ("https://a/t{tenant}", "whole path segment"),
            ("https://a/{tenant}x/y", "whole path segment"),
            ("https://a/{tenant}/{tenant}", "exactly once"),
            ("https://a/x", "exactly once"),
            ("https://a/{tenant}/../b", "`..`"),
            ("https://a/{tenant}?q", "query"),
        ] {
            let err = split_template_url(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("\"tenant\""), "{bad}: {err}");
        }
    }

    #[test]
    fn conflicts_name_both_owners() {
        let routes = [
            ("/a", "first".to_string()),
            ("/b", "second".to_string()),
            ("/a", "third".to_string()),
        ];
        assert_eq!(
            find_conflict(routes.iter().map(|(r, o)| (*r, o.clone()))),
            Some(("/a".into(), "first".into(), "third".into()))
        );
        assert_eq!(
            find_conflict(routes[..2].iter().map(|(r, o)| (*r, o.clone()))),
            None
        );
    }
}
