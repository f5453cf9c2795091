//! `oauth-metadata-gateway check ISSUER`: fetch an issuer's metadata the way
//! the gateway does and say what is wrong with it, before clients are
//! pointed at it.
//!
//! The fetch is the gateway's own: the same upstream URLs in the same order
//! ([`crate::discovery::upstream_urls`]), the same awc client, TLS roots,
//! timeout and size limit ([`crate::upstream::Fetcher`]). The findings:
//! - RFC 8414: 200 with `application/json` (§3.2), a JSON object, the
//!   REQUIRED members (§2), `issuer` identical to the issuer checked (§3.3),
//!   and whether the gateway itself would accept the document;
//! - MCP authorization (2025-06-18 / 2025-11-25): the authorization code
//!   flow, PKCE with `S256` advertised in `code_challenge_methods_supported`
//!   (clients refuse a server that does not), a way for clients to register
//!   (`registration_endpoint`, or client ID metadata documents), and https
//!   for the issuer and every endpoint outside loopback;
//! - with `--resource`, the MCP server's RFC 9728 metadata: found, its
//!   `resource` identical to the URL (§3.3), and the issuer listed in
//!   `authorization_servers`.
//!
//! - the key set the metadata's `jwks_uri` names (RFC 7517 §5): reachable
//!   the way the gateway would fetch it, valid, no private or symmetric
//!   keys, and its `kid`s.
//!
//! Errors make the exit status 1; warnings only with `--strict`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::UpstreamConfig;
use crate::discovery::{self, DocumentKind};
use crate::document::{ExpectedIssuer, ValidatedDocument};
use crate::key_set;
use crate::upstream::proxy_rules::{ProxyEnv, ProxyRoutes, ProxyRules};
use crate::upstream::{Fetcher, RawResponse};

/// Arguments of `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The issuer identifier to check, e.g. https://auth.example.com/tenant1.
    pub issuer: String,

    /// Fetch from this URL instead of the issuer (as the gateway's --upstream): the
    /// well-known paths are built from it the same way.
    #[arg(long)]
    pub upstream: Option<String>,

    /// Also check the protected resource metadata (RFC 9728) of this MCP server
    /// resource identifier, e.g. https://mcp.example.com/mcp.
    #[arg(long)]
    pub resource: Option<String>,

    /// Deadline for each request.
    #[arg(long, default_value = "5s", value_parser = crate::config::values::parse_positive_duration)]
    pub upstream_timeout: Duration,

    /// Largest document accepted (bytes, or with a KiB/MiB suffix).
    #[arg(long, default_value = "256KiB", value_parser = crate::config::values::parse_size)]
    pub max_body_size: usize,

    /// PEM file with extra CA certificates to trust for https.
    #[arg(long)]
    pub upstream_ca: Option<PathBuf>,

    /// Forward proxy, as the gateway's --upstream-proxy: http://[user:password@]host[:port]
    /// or `none`. Default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY as curl reads them.
    #[arg(long, env = "GATEWAY_UPSTREAM_PROXY", hide_env_values = true, value_name = "URL", value_parser = crate::config::values::sensitive)]
    pub upstream_proxy: Option<crate::config::values::SensitiveArg>,

    /// Hosts fetched without a proxy (as the gateway's --upstream-no-proxy); replaces NO_PROXY.
    #[arg(long, env = "GATEWAY_UPSTREAM_NO_PROXY", value_name = "LIST")]
    pub upstream_no_proxy: Option<String>,

    /// Fail (exit status 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Context: what was fetched, what passed.
    Info,
    /// Works, but some clients or setups will have trouble.
    Warning,
    /// Clients (or the gateway) will refuse it.
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What was found, with the rule it comes from.
    pub message: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            message: message.into(),
        });
    }
    fn info(&mut self, m: impl Into<String>) {
        self.push(Severity::Info, m);
    }
    fn warn(&mut self, m: impl Into<String>) {
        self.push(Severity::Warning, m);
    }
    fn error(&mut self, m: impl Into<String>) {
        self.push(Severity::Error, m);
    }

    /// Number of findings of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// True when the check passed (no errors; no warnings either if `strict`).
    pub fn passed(&self, strict: bool) -> bool {
        self.count(Severity::Error) == 0 && (!strict || self.count(Severity::Warning) == 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let tag = match finding.severity {
                Severity::Info => "  ",
                Severity::Warning => "warning: ",
                Severity::Error => "error: ",
            };
            writeln!(f, "{tag}{}", finding.message)?;
        }
        let (e, w) = (self.count(Severity::Error), self.count(Severity::Warning));
        write!(
            f,
            "{e} error{}, {w} warning{}",
            if e == 1 { "" } else { "s" },
            if w == 1 { "" } else { "s" }
        )
    }
}

/// Runs the check (fetches included) and returns the report; `env` is the
/// proxy environment (`HTTPS_PROXY`, `NO_PROXY`...), read by the caller.
pub async fn run(args: &CheckArgs, env: &ProxyEnv) -> Report {
    let mut report = Report::default();
    report.info(format!("checking issuer {}", args.issuer));
    let issuer_split = match discovery::split_url(&args.issuer) {
        Ok(s) => s,
        Err(e) => {
            report.error(format!("the issuer is not usable: {e}"));
            return report;
        }
    };
    let upstream = match &args.upstream {
        Some(u) => match discovery::split_url(u) {
            Ok(s) => s,
            Err(e) => {
                report.error(format!("--upstream is not usable: {e}"));
                return report;
            }
        },
        None => issuer_split,
    };
    let extra_roots = match &args.upstream_ca {
        Some(path) => match crate::config::values::load_ca_file(path) {
            Ok(r) => r,
            Err(e) => {
                report.error(format!("--upstream-ca: {e}"));
                return report;
            }
        },
        None => Vec::new(),
    };
    let rules = match ProxyRules::resolve(
        args.upstream_proxy.as_ref().map(|a| a.0.as_str()),
        args.upstream_no_proxy.as_deref(),
        env,
    ) {
        Ok(r) => r,
        Err(e) => {
            report.error(e.to_string());
            return report;
        }
    };
    let proxy = ProxyRoutes::new(rules);
    let fetcher = match Fetcher::start(&UpstreamConfig {
        timeout: args.upstream_timeout,
        max_body_size: args.max_body_size,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        concurrency: crate::config::DEFAULT_UPSTREAM_CONCURRENCY,
        extra_roots,
        freshness: crate::cache_rules::upstream_freshness::Settings::default(),
        proxy,
    }) {
        Ok(f) => f,
        Err(e) => {
            report.error(format!("cannot start the HTTP client: {e}"));
            return report;
        }
    };

    let urls = discovery::upstream_urls(DocumentKind::AuthorizationServer, &upstream);
    if let Some(first) = urls.first() {
        match fetcher.proxy_for(first) {
            Some(p) => report.info(format!("fetching through the proxy {p} (CONNECT tunnel)")),
            None => report.info("fetching directly (no proxy)"),
        }
    }
    let mut found = None;
    for (i, url) in urls.iter().enumerate() {
        match fetcher.fetch_raw(Arc::from(url.as_str())).await {
            Err(e) => {
                report.error(format!("GET {url}: {e}"));
                return report;
            }
            Ok(raw) => {
                report.info(format!("GET {url}: {}", describe(&raw)));
                if (400..500).contains(&raw.status) {
                    continue; // not published here: the next location, as clients do
                }
                found = Some((i, url.clone(), raw));
                break;
            }
        }
    }
    match found {
        None => report.error(format!(
            "no metadata at any of the {} locations clients try (RFC 8414 §3.1, OpenID Connect Discovery §4)",
            urls.len()
        )),
        Some((i, url, raw)) => {
            if i > 0 {
                report.info(format!(
                    "published only as OpenID Provider metadata ({url}); RFC 8414 §5 makes it usable, and the gateway serves it at the RFC 8414 path too"
                ));
            }
            analyze_authorization_server(
                &mut report,
                &ExpectedIssuer::new(args.issuer.clone()),
                &url,
                &raw,
            );
            if raw.status == 200 {
                let upstream_base = args.upstream.as_deref().unwrap_or(&args.issuer);
                check_key_set(
                    &mut report,
                    &fetcher,
                    &raw.body,
                    (&args.issuer, upstream_base),
                    &url,
                )
                .await;
            }
        }
    }
    if let Some(resource) = &args.resource {
        check_resource(&mut report, &fetcher, resource, &args.issuer).await;
    }
    report
}

fn describe(raw: &RawResponse) -> String {
    format!(
        "HTTP {}, {}, {} bytes",
        raw.status,
        raw.content_type.as_deref().unwrap_or("no content type"),
        raw.body.len()
    )
}

/// The findings for one authorization-server metadata response.
pub fn analyze_authorization_server(
    report: &mut Report,
    issuer: &ExpectedIssuer,
    url: &str,
    raw: &RawResponse,
) {
    if raw.status != 200 {
        report.error(format!(
            "{url} answered HTTP {}, not 200 (RFC 8414 §3.2); clients stop discovery on a 5xx",
            raw.status
        ));
        return;
    }
    check_json_content_type(report, raw, "RFC 8414 §3.2");
    if !is_secure(url) {
        report.error(format!(
            "the metadata URL {url} is plain http outside loopback (MCP: authorization server endpoints MUST use https)"
        ));
    }
    // Parsed as the gateway parses it: a duplicate member name is refused
    // (RFC 8259 §4), not read last-wins.
    let map = match crate::document::parse_strict(&raw.body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            report.error("the document is not a JSON object (RFC 8414 §3.2)");
            return;
        }
        Err(crate::error::InvalidDocument::NotJson(e)) => {
            report.error(format!("the document is not JSON: {e} (RFC 8414 §3.2)"));
            return;
        }
        Err(e) => {
            report.error(format!("{e}; the gateway refuses it"));
            return;
        }
    };
    check_issuer(report, issuer, &map);
    check_required(report, &map);
    check_mcp(report, &map);
    check_urls(report, &map);
    match ValidatedDocument::validate(Bytes::clone(&raw.body), issuer) {
        Ok(_) => report.info("the gateway accepts this document and serves it byte for byte"),
        Err(e) => report.error(format!("the gateway would refuse this document: {e}")),
    }
}

fn check_json_content_type(report: &mut Report, raw: &RawResponse, rule: &str) {
    let value = raw
        .content_type
        .as_deref()
        .and_then(|v| actix_web::http::header::HeaderValue::from_str(v).ok());
    if crate::upstream::check_content_type(value.as_ref()).is_err() {
        report.error(format!(
            "content type is {}, not application/json ({rule}); the gateway refuses it",
            raw.content_type
                .as_deref()
                .map_or("missing".to_string(), |c| format!("{c:?}"))
        ));
    }
}

fn check_issuer(report: &mut Report, issuer: &ExpectedIssuer, map: &Map<String, Value>) {
    match map.get("issuer") {
        None => report.error("`issuer` is missing (REQUIRED, RFC 8414 §2)"),
        Some(Value::String(declared)) if declared == issuer.as_str() => {
            report.info("`issuer` is identical to the issuer checked (RFC 8414 §3.3)");
        }
        Some(Value::String(declared)) if issuer.matches(declared) => report.warn(format!(
            "`issuer` is {declared:?}, which differs from {:?} by a trailing slash; clients that compare exactly (RFC 8414 §3.3) will refuse it",
            issuer.as_str()
        )),
        Some(Value::String(declared)) => report.error(format!(
            "`issuer` is {declared:?}, not {:?}: clients refuse metadata whose issuer is not the one they discovered it for (RFC 8414 §3.3)",
            issuer.as_str()
        )),
        Some(_) => report.error("`issuer` is not a string (RFC 8414 §2)"),
    }
}

fn strings<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<Vec<&'a str>>, ()> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(()))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

fn check_required(report: &mut Report, map: &Map<String, Value>) {
    match strings(map, "response_types_supported") {
        Ok(Some(types)) if types.contains(&"code") => {}
        Ok(Some(_)) => report.error(
            "`response_types_supported` lacks \"code\": MCP clients use the authorization code flow",
        ),
        Ok(None) => report.error("`response_types_supported` is missing (REQUIRED, RFC 8414 §2)"),
        Err(()) => report.error("`response_types_supported` is not an array of strings (RFC 8414 §2)"),
    }
    for field in ["authorization_endpoint", "token_endpoint"] {
        match map.get(field) {
            Some(Value::String(_)) => {}
            Some(_) => report.error(format!("`{field}` is not a string (RFC 8414 §2)")),
            None => report.error(format!(
                "`{field}` is missing (REQUIRED by RFC 8414 §2 for the authorization code grant)"
            )),
        }
    }
    match strings(map, "grant_types_supported") {
        Ok(Some(g)) if !g.contains(&"authorization_code") => report
            .error("`grant_types_supported` lacks \"authorization_code\", which MCP clients use"),
        Err(()) => report.error("`grant_types_supported` is not an array of strings (RFC 8414 §2)"),
        _ => {}
    }
}

fn check_mcp(report: &mut Report, map: &Map<String, Value>) {
    match strings(map, "code_challenge_methods_supported") {
        Ok(Some(m)) if m.contains(&"S256") => {
            report.info("PKCE S256 is advertised in `code_challenge_methods_supported`");
        }
        Ok(Some(_)) => report.error(
            "`code_challenge_methods_supported` lacks \"S256\": MCP clients MUST use PKCE with S256 and refuse this server",
        ),
        Ok(None) => report.error(
            "`code_challenge_methods_supported` is missing: MCP clients treat that as no PKCE support and refuse this server (it must list \"S256\")",
        ),
        Err(()) => report.error("`code_challenge_methods_supported` is not an array of strings"),
    }
    let cimd = map.get("client_id_metadata_document_supported") == Some(&Value::Bool(true));
    match map.get("registration_endpoint") {
        Some(Value::String(_)) => {
            report.info("`registration_endpoint` is present (dynamic client registration, RFC 7591)");
        }
        Some(_) => report.error("`registration_endpoint` is not a string"),
        None if cimd => report.warn(
            "no `registration_endpoint`: clients that do not support client ID metadata documents (MCP 2025-11-25) cannot register",
        ),
        None => report.error(
            "no `registration_endpoint` and no `client_id_metadata_document_supported`: MCP clients have no way to obtain a client_id unless one is pre-registered",
        ),
    }
    if let Ok(Some(methods)) = strings(map, "token_endpoint_auth_methods_supported") {
        if !methods.contains(&"none") {
            report.warn(
                "`token_endpoint_auth_methods_supported` lacks \"none\": public MCP clients (desktop apps, CLIs) cannot use the token endpoint without a secret",
            );
        }
    }
}

/// Members whose value is a URL the client will use.
const URL_MEMBERS: [&str; 11] = [
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "registration_endpoint",
    "jwks_uri",
    "revocation_endpoint",
    "introspection_endpoint",
    "userinfo_endpoint",
    "end_session_endpoint",
    "device_authorization_endpoint",
    "pushed_authorization_request_endpoint",
];

fn check_urls(report: &mut Report, map: &Map<String, Value>) {
    for field in URL_MEMBERS {
        let Some(Value::String(value)) = map.get(field) else {
            continue;
        };
        match url::Url::parse(value) {
            Err(_) => report.error(format!("`{field}` is not an absolute URL: {value:?}")),
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Ok(_) => report.error(format!(
                "`{field}` is {value:?}: https is required outside loopback (RFC 8414 §2 for the issuer; MCP: all authorization server endpoints MUST use https)"
            )),
        }
    }
}

fn is_secure(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)),
        Err(_) => false,
    }
}

/// `localhost`, `*.localhost` (RFC 6761 §6.3), 127.0.0.0/8 or `::1`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The key set the metadata's `jwks_uri` names, fetched the way the
/// gateway would (`issuer` → `upstream` mapping, plain http only on the
/// metadata's own origin): reachable, a valid public JWK Set (RFC 7517 §5),
/// no private or symmetric keys, and its `kid`s.
async fn check_key_set(
    report: &mut Report,
    fetcher: &Fetcher,
    metadata: &[u8],
    (issuer, upstream): (&str, &str),
    metadata_url: &str,
) {
    let Some(declared) = key_set::declared_jwks_uri(metadata) else {
        report.info("no jwks_uri in the metadata (RFC 8414 §2: OPTIONAL): no key set to check; resource servers that verify JWTs need one (jwks_uri in the gateway's configuration)");
        return;
    };
    let url = match key_set::upstream_location(
        &declared,
        issuer.trim_end_matches('/'),
        upstream.trim_end_matches('/'),
        metadata_url,
    ) {
        Ok(url) => url,
        Err(e) => {
            report.error(format!("key set: {e}"));
            return;
        }
    };
    let raw = match fetcher.fetch_raw(Arc::from(url.as_str())).await {
        Ok(raw) => raw,
        Err(e) => {
            report.error(format!("key set: GET {url}: {e}"));
            return;
        }
    };
    report.info(format!("key set: GET {url}: {}", describe(&raw)));
    if raw.status != 200 {
        report.error(format!(
            "key set: {url} answered HTTP {}, not 200: verifiers cannot load it",
            raw.status
        ));
        return;
    }
    check_json_content_type(report, &raw, "RFC 7517 §8.5");
    match key_set::validate(&raw.body) {
        Ok(summary) => {
            report.info(format!(
                "key set: {} public key(s), no private or symmetric keys; kids: {}",
                summary.keys,
                if summary.kids.is_empty() {
                    "(none)".to_string()
                } else {
                    summary.kids.join(", ")
                }
            ));
            if !summary.duplicate_kids.is_empty() {
                report.warn(format!(
                    "key set: several keys share the kid(s) {}: verifiers may pick the wrong one",
                    summary.duplicate_kids.join(", ")
                ));
            }
            if summary.kids.len() < summary.keys {
                report.warn(
                    "key set: some keys have no kid: verifiers try every key of a matching type",
                );
            }
        }
        Err(e) => report.error(format!("key set: the gateway would refuse it: {e}")),
    }
}

async fn check_resource(report: &mut Report, fetcher: &Fetcher, resource: &str, issuer: &str) {
    report.info(format!("checking protected resource {resource}"));
    let split = match discovery::split_url(resource) {
        Ok(s) => s,
        Err(e) => {
            report.error(format!("the resource identifier is not usable: {e}"));
            return;
        }
    };
    // RFC 9728 §3.1 location first; the root location is where clients
    // look next (MCP TypeScript SDK) when the server has no path-aware one.
    let kind = DocumentKind::ProtectedResource;
    let mut urls = vec![format!(
        "{}{}",
        split.origin,
        discovery::inserted(kind, &split.path)
    )];
    if !split.path.is_root() {
        urls.push(format!(
            "{}/.well-known/{}",
            split.origin,
            kind.well_known()
        ));
    }
    for url in &urls {
        let raw = match fetcher.fetch_raw(Arc::from(url.as_str())).await {
            Ok(raw) => raw,
            Err(e) => {
                report.error(format!("GET {url}: {e}"));
                return;
            }
        };
        report.info(format!("GET {url}: {}", describe(&raw)));
        if (400..500).contains(&raw.status) {
            continue;
        }
        analyze_resource(report, resource, issuer, url, &raw);
        return;
    }
    report.error("no protected resource metadata found (RFC 9728 §3.1): MCP clients fall back to treating the MCP server as the authorization server");
}

/// The findings for one protected resource metadata response.
pub fn analyze_resource(
    report: &mut Report,
    resource: &str,
    issuer: &str,
    url: &str,
    raw: &RawResponse,
) {
    if raw.status != 200 {
        report.error(format!(
            "{url} answered HTTP {}, not 200 (RFC 9728 §3.2)",
            raw.status
        ));
        return;
    }
    check_json_content_type(report, raw, "RFC 9728 §3.2");
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&raw.body) else {
        report.error("the protected resource metadata is not a JSON object (RFC 9728 §3.2)");
        return;
    };
    match map.get("resource") {
        Some(Value::String(r)) if r == resource => {
            report.info("`resource` is identical to the resource identifier (RFC 9728 §3.3)");
        }
        Some(Value::String(r)) => report.error(format!(
            "`resource` is {r:?}, not {resource:?}: clients refuse it (RFC 9728 §3.3)"
        )),
        _ => report.error("`resource` is missing or not a string (REQUIRED, RFC 9728 §2)"),
    }
    match strings(&map, "authorization_servers") {
        Ok(Some(list)) if list.contains(&issuer) => {
            if list.first() != Some(&issuer) {
                report.warn(format!(
                    "{issuer:?} is listed in `authorization_servers` but not first; MCP clients use the first"
                ));
            } else {
                report.info("`authorization_servers` names the issuer");
            }
        }
        Ok(Some(list)) => report.error(format!(
            "`authorization_servers` is {list:?} and does not name {issuer:?}"
        )),
        Ok(None) => report.error(
            "`authorization_servers` is missing: MCP requires it to find the authorization server",
        ),
        Err(()) => report.error("`authorization_servers` is not an array of strings (RFC 9728 §2)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://auth.example.com/t";

    fn good() -> Value {
        serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://auth.example.com/t/authorize",
            "token_endpoint": "https://auth.example.com/t/token",
            "registration_endpoint": "https://auth.example.com/t/register",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
        })
    }

    fn run_on(doc: &Value, content_type: &str) -> Report {
        let mut r = Report::default();
        let raw = RawResponse {
            status: 200,
            content_type: Some(content_type.into()),
            body: Bytes::from(serde_json::to_vec(doc).unwrap()),
            headers: Default::default(),
        };
        analyze_authorization_server(
            &mut r,
            &ExpectedIssuer::new(ISSUER),
            "https://auth.example.com/.well-known/oauth-authorization-server/t",
            &raw,
        );
        r
    }

    fn errors(r: &Report) -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone())
            .collect()
    }

    #[test]
    fn a_good_document_passes() {
        let r = run_on(&good(), "application/json; charset=utf-8");
        assert!(r.passed(true), "{r}");
        assert!(r.to_string().ends_with("0 errors, 0 warnings"));
    }

    #[test]
    fn each_problem_is_reported() {
        type Mutation = Box<dyn Fn(&mut Map<String, Value>)>;
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "missing issuer",
                Box::new(|m| {
                    m.remove("issuer");
                }),
                "`issuer` is missing",
            ),
            (
                "issuer mismatch",
                Box::new(|m| {
                    m.insert("issuer".into(), "https://evil.example".into());
                }),
                "RFC 8414 §3.3",
            ),
            (
                "no S256",
                Box::new(|m| {
                    m.insert(
                        "code_challenge_methods_supported".into(),
                        serde_json::json!(["plain"]),
                    );
                }),
                "lacks \"S256\"",
            ),
            (
                "no PKCE",
                Box::new(|m| {
                    m.remove("code_challenge_methods_supported");
                }),
                "`code_challenge_methods_supported` is missing",
            ),
            (
                "no registration",
                Box::new(|m| {
                    m.remove("registration_endpoint");
                }),
                "no `registration_endpoint`",
            ),
            (
                "no response types",
                Box::new(|m| {
                    m.remove("response_types_supported");
                }),
                "`response_types_supported` is missing",
            ),
            (
                "no token endpoint",
                Box::new(|m| {
                    m.remove("token_endpoint");
                }),
                "`token_endpoint` is missing",
            ),
            (
                "http endpoint",
                Box::new(|m| {
                    m.insert(
                        "token_endpoint".into(),
                        "http://auth.example.com/t/token".into(),
                    );
                }),
                "https is required",
            ),
        ];
        for (name, mutate, needle) in cases {
            let mut doc = good();
            mutate(doc.as_object_mut().unwrap());
            let r = run_on(&doc, "application/json");
            assert!(!r.passed(false), "{name}: {r}");
            assert!(errors(&r).iter().any(|e| e.contains(needle)), "{name}: {r}");
        }
    }

    #[test]
    fn wrong_content_type_is_an_error() {
        let r = run_on(&good(), "text/html");
        assert!(
            errors(&r)
                .iter()
                .any(|e| e.contains("not application/json")),
            "{r}"
        );
    }

    #[test]
    fn client_id_metadata_documents_make_registration_a_warning() {
        let mut doc = good();
        let m = doc.as_object_mut().unwrap();
        m.remove("registration_endpoint");
        m.insert(
            "client_id_metadata_document_supported".into(),
            Value::Bool(true),
        );
        let r = run_on(&doc, "application/json");
        assert!(r.passed(false), "{r}");
        assert!(!r.passed(true), "{r}");
    }

    #[test]
    fn loopback_http_is_fine() {
        for (u, ok) in [
            ("http://localhost:7788/x", true),
            ("http://127.0.0.5/x", true),
            ("http://[::1]:80/x", true),
            ("http://mcp.localhost/x", true),
            ("https://example.com/x", true),
            ("http://example.com/x", false),
            ("http://10.0.0.1/x", false),
        ] {
            assert_eq!(is_secure(u), ok, "{u}");
        }
    }

    #[test]
    fn resource_metadata_findings() {
        let raw = |v: Value| RawResponse {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::to_vec(&v).unwrap()),
            headers: Default::default(),
        };
        let res = "https://mcp.example.com/mcp";
        let mut r = Report::default();
        analyze_resource(
            &mut r,
            res,
            ISSUER,
            "u",
            &raw(serde_json::json!({"resource": res, "authorization_servers": [ISSUER]})),
        );
        assert!(r.passed(true), "{r}");
        let mut r = Report::default();
        analyze_resource(
            &mut r,
            res,
            ISSUER,
            "u",
            &raw(
                serde_json::json!({"resource": "https://other/mcp", "authorization_servers": ["https://x"]}),
            ),
        );
        assert_eq!(r.count(Severity::Error), 2, "{r}");
    }
}
