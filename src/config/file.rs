//! The TOML configuration file (`--config FILE`): several authorization
//! servers, each with its own upstream and lifetimes, and the protected
//! resources that point at them.
//!
//! ```toml
//! [[authorization_server]]
//! issuer = "https://auth.example.com/tenant1"
//! upstream = "http://auth.internal:8080/tenant1"  # optional, default: the issuer
//! openid_configuration = true                     # optional, default: false
//! ttl = "10m"                                     # optional, default: --ttl
//! max_stale = "1h"                                # optional, default: --max-stale
//! proxy = "http://user:pass@proxy.corp:3128"      # optional: forward proxy for this upstream, or "none"
//! jwks_route = "/tenant1/jwks.json"               # optional: also serve its key set there
//! jwks_uri = "https://auth.example.com/tenant1/keys"  # optional, default: the metadata's jwks_uri
//! jwks_ttl = "1h"                                 # optional, default: ttl
//! jwks_refetch_cooldown = "30s"                   # optional, default: --jwks-refetch-cooldown
//!
//! [[authorization_server]]                        # an issuer template, one per tenant
//! issuer = "https://auth.example.com/realms/{tenant}"
//! upstream = "http://keycloak.internal:8080/realms/{tenant}"  # optional
//! max_tenants = 10000                             # optional, default: --max-tenants
//! max_tenants_on_disk = 1000000                   # optional, with --state-dir: default --max-tenants-on-disk, else 100 × max_tenants
//! not_found_ttl = "1m"                            # optional: how long a 404 is remembered
//! max_cold_fetches = 32                           # optional: uncached tenants fetched at once
//!
//! state_dir = "/var/lib/oauth-metadata-gateway"  # optional, top level: --state-dir
//!
//! [[protected_resource]]
//! resource = "https://mcp.example.com/mcp"
//! authorization_servers = ["https://auth.example.com/tenant1"]  # optional
//! scopes_supported = ["mcp:tools"]
//! ```
//!
//! The whole file is checked at start-up. Every problem is reported with
//! the file, line, column and key it is about, and a snippet of the line:
//! syntax errors, unknown keys and wrong types (from the `toml` crate's
//! spans), bad URLs and durations, and two documents claiming one route.
//! A quoted line never shows a proxy password: userinfo in URLs and the
//! value of a `proxy` key are masked in snippets.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::documents::{self, AuthorizationServerSpec, IssuerDocuments, SpecField};
use super::{DocumentConfig, Documents, TemplateLimits};
use crate::protected_resource::{ProtectedResourceConfig, ResourceMetadata};
use crate::upstream::proxy_rules::{Origin, ProxySetting};

/// Lifetimes used where a document does not set its own (the `--ttl` and
/// `--max-stale` flags).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Freshness lifetime (and the protected resource documents' max-age).
    pub ttl: Duration,
    /// How long past its TTL a document may be served stale.
    pub max_stale: Duration,
    /// Limits of issuer templates (`--max-tenants`...).
    pub template: TemplateLimits,
    /// `--jwks-refetch-cooldown`.
    pub jwks_refetch_cooldown: Duration,
}

/// A problem in the configuration file, located when possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file, as given.
    pub path: String,
    /// 1-based line and column of the offending text.
    pub position: Option<(usize, usize)>,
    /// The key it is about, e.g. `authorization_server[1].issuer`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The offending line with a caret marker under the span.
    pub snippet: Option<String>,
}

impl std::fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some((line, column)) = self.position {
            write!(f, ", line {line}, column {column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigFileError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    authorization_server: Vec<Spanned<AuthorizationServerEntry>>,
    #[serde(default)]
    protected_resource: Vec<Spanned<ProtectedResourceEntry>>,
    state_dir: Option<Spanned<String>>,
}

/// An optional setting of a table, boxed: a file of 10,000 tables mostly
/// leaves them unset, and an unset boxed setting takes 8 bytes where an
/// inline `Spanned<String>` takes 40 (the parsed tables are all held at
/// once while the file is checked: at 10,000 tables, 3 MiB instead of 9).
type Opt<T> = Option<Box<Spanned<T>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationServerEntry {
    issuer: Spanned<String>,
    upstream: Opt<String>,
    #[serde(default)]
    openid_configuration: bool,
    ttl: Opt<String>,
    max_stale: Opt<String>,
    max_tenants: Opt<u64>,
    max_tenants_on_disk: Opt<u64>,
    not_found_ttl: Opt<String>,
    max_cold_fetches: Opt<u64>,
    proxy: Opt<String>,
    jwks_route: Opt<String>,
    jwks_uri: Opt<String>,
    jwks_ttl: Opt<String>,
    jwks_refetch_cooldown: Opt<String>,
}

/// A span in the file and the key path it belongs to.
type Located = (Range<usize>, String);

impl AuthorizationServerEntry {
    /// The key-set settings: `None` without `jwks_route`; the other
    /// `jwks_*` keys need it.
    fn key_set(
        &self,
        defaults: Defaults,
        source: &Source<'_>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<documents::KeySetSpec<'_>>, ConfigFileError> {
        let duration = |v: &Opt<String>, name: &str, positive: bool| {
            v.as_ref()
                .map(|v| {
                    parse_duration(v.get_ref(), positive)
                        .map_err(|m| source.error(Some(v.span()), Some(key(name)), m))
                })
                .transpose()
        };
        let ttl = duration(&self.jwks_ttl, "jwks_ttl", true)?;
        let cooldown = duration(&self.jwks_refetch_cooldown, "jwks_refetch_cooldown", false)?;
        let Some(route) = &self.jwks_route else {
            let set = [
                ("jwks_uri", self.jwks_uri.as_deref().map(Spanned::span)),
                ("jwks_ttl", self.jwks_ttl.as_deref().map(Spanned::span)),
                (
                    "jwks_refetch_cooldown",
                    self.jwks_refetch_cooldown.as_deref().map(Spanned::span),
                ),
            ];
            if let Some((name, span)) = set.into_iter().find(|(_, s)| s.is_some()) {
                return Err(source.error(
                    span,
                    Some(key(name)),
                    "needs jwks_route: the key set is served only where jwks_route says"
                        .to_string(),
                ));
            }
            return Ok(None);
        };
        Ok(Some(documents::KeySetSpec {
            route: route.get_ref(),
            jwks_uri: self.jwks_uri.as_ref().map(|u| u.get_ref().as_str()),
            ttl,
            refetch_cooldown: cooldown.unwrap_or(defaults.jwks_refetch_cooldown),
        }))
    }

    /// The template limits this entry sets (over `defaults`), and the span
    /// and key of the first one it sets, for errors about them.
    fn template_limits(
        &self,
        defaults: TemplateLimits,
        source: &Source<'_>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(TemplateLimits, Option<Located>), ConfigFileError> {
        let mut limits = defaults;
        let mut first = None;
        let mut note = |span: Range<usize>, name: &str| {
            if first.is_none() {
                first = Some((span, key(name)));
            }
        };
        if let Some(v) = &self.max_tenants {
            note(v.span(), "max_tenants");
            if *v.get_ref() == 0 {
                return Err(source.error(
                    Some(v.span()),
                    Some(key("max_tenants")),
                    "must be at least 1".to_string(),
                ));
            }
            limits.max_tenants = *v.get_ref();
        }
        if let Some(v) = &self.max_tenants_on_disk {
            note(v.span(), "max_tenants_on_disk");
            if *v.get_ref() < limits.max_tenants {
                return Err(source.error(
                    Some(v.span()),
                    Some(key("max_tenants_on_disk")),
                    format!(
                        "must be at least max_tenants ({}): the disk tier holds every tenant held in memory",
                        limits.max_tenants
                    ),
                ));
            }
            limits.max_tenants_on_disk = Some(*v.get_ref());
        }
        if let Some(v) = &self.not_found_ttl {
            note(v.span(), "not_found_ttl");
            limits.not_found_ttl = parse_duration(v.get_ref(), false)
                .map_err(|m| source.error(Some(v.span()), Some(key("not_found_ttl")), m))?;
        }
        if let Some(v) = &self.max_cold_fetches {
            note(v.span(), "max_cold_fetches");
            limits.max_cold_fetches = usize::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    source.error(
                        Some(v.span()),
                        Some(key("max_cold_fetches")),
                        "must be at least 1".to_string(),
                    )
                })?;
        }
        Ok((limits, first))
    }
}

type Field<T> = Opt<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedResourceEntry {
    resource: Spanned<String>,
    authorization_servers: Field<Vec<String>>,
    also_at_root: Option<bool>,
    ttl: Field<String>,
    jwks_uri: Field<String>,
    scopes_supported: Field<Vec<String>>,
    bearer_methods_supported: Field<Vec<String>>,
    resource_signing_alg_values_supported: Field<Vec<String>>,
    resource_name: Field<String>,
    resource_documentation: Field<String>,
    resource_policy_uri: Field<String>,
    resource_tos_uri: Field<String>,
    tls_client_certificate_bound_access_tokens: Field<bool>,
    authorization_details_types_supported: Field<Vec<String>>,
    dpop_signing_alg_values_supported: Field<Vec<String>>,
    dpop_bound_access_tokens_required: Field<bool>,
}

impl ProtectedResourceEntry {
    /// The span of a member, for errors about it.
    fn span_of(&self, field: &str) -> Option<Range<usize>> {
        fn s<T>(f: &Field<T>) -> Option<Range<usize>> {
            f.as_deref().map(Spanned::span)
        }
        match field {
            "resource" => Some(self.resource.span()),
            "authorization_servers" => s(&self.authorization_servers),
            "jwks_uri" => s(&self.jwks_uri),
            "scopes_supported" => s(&self.scopes_supported),
            "bearer_methods_supported" => s(&self.bearer_methods_supported),
            "resource_documentation" => s(&self.resource_documentation),
            "resource_policy_uri" => s(&self.resource_policy_uri),
            "resource_tos_uri" => s(&self.resource_tos_uri),
            _ => None,
        }
    }
}

fn value<T: Clone>(f: &Field<T>) -> Option<T> {
    f.as_deref().map(|s| s.get_ref().clone())
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path, defaults: Defaults) -> Result<Documents, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        path: shown.clone(),
        position: None,
        key: None,
        message: format!("cannot read the file: {e}"),
        snippet: None,
    })?;
    parse(&text, &shown, defaults)
}

/// Parses and checks configuration `text`; `path` names it in errors.
pub fn parse(text: &str, path: &str, defaults: Defaults) -> Result<Documents, ConfigFileError> {
    let source = Source { text, path };
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let key = span.as_ref().and_then(|s| key_at(text, s.start));
        source.error(span, key, e.message().trim_end().to_string())
    })?;
    if file.authorization_server.is_empty() && file.protected_resource.is_empty() {
        return Err(source.error(
            None,
            None,
            "the file declares no documents: add an [[authorization_server]] or [[protected_resource]] table".to_string(),
        ));
    }

    let mut documents: Vec<DocumentConfig> = Vec::new();
    let mut templates = Vec::new();
    // (entry index, span of its issuer), one per template document
    let mut template_spans: Vec<(usize, Range<usize>)> = Vec::new();
    // (route, owner, span of the owner's identifying value)
    let mut owners: Vec<(String, String, Range<usize>)> = Vec::new();
    let mut issuers = Vec::new();
    // (origin, setting, entry index, span of its `proxy` value)
    let mut proxies: Vec<(Origin, ProxySetting, usize, Range<usize>)> = Vec::new();
    for (i, entry) in file.authorization_server.iter().enumerate() {
        let e = entry.get_ref();
        let key = |k: &str| format!("authorization_server[{i}].{k}");
        let ttl = match &e.ttl {
            Some(v) => parse_duration(v.get_ref(), true)
                .map_err(|m| source.error(Some(v.span()), Some(key("ttl")), m))?,
            None => defaults.ttl,
        };
        let max_stale = match &e.max_stale {
            Some(v) => parse_duration(v.get_ref(), false)
                .map_err(|m| source.error(Some(v.span()), Some(key("max_stale")), m))?,
            None => defaults.max_stale,
        };
        let (limits, first_template_key) = e.template_limits(defaults.template, &source, &key)?;
        let templated = documents::is_template(e.issuer.get_ref());
        let key_set = e.key_set(defaults, &source, &key)?;
        let issuer_docs = documents::authorization_server(&AuthorizationServerSpec {
            issuer: e.issuer.get_ref(),
            upstream: e.upstream.as_ref().map(|u| u.get_ref().as_str()),
            openid_configuration: e.openid_configuration,
            ttl,
            max_stale,
            template: (templated || first_template_key.is_some()).then_some(limits),
            key_set,
        })
        .map_err(
            |(field, m)| match (field, &e.upstream, &first_template_key) {
                (SpecField::Upstream, Some(u), _) => {
                    source.error(Some(u.span()), Some(key("upstream")), m)
                }
                (SpecField::JwksRoute, _, _) => source.error(
                    e.jwks_route.as_deref().map(Spanned::span),
                    Some(key("jwks_route")),
                    m,
                ),
                (SpecField::JwksUri, _, _) => source.error(
                    e.jwks_uri.as_deref().map(Spanned::span),
                    Some(key("jwks_uri")),
                    m,
                ),
                (SpecField::TemplateSetting, _, Some((span, k))) => {
                    source.error(Some(span.clone()), Some(k.clone()), m)
                }
                _ => source.error(Some(e.issuer.span()), Some(key("issuer")), m),
            },
        )?;
        if let Some(p) = &e.proxy {
            let setting = ProxySetting::parse(p.get_ref())
                .map_err(|m| source.error(Some(p.span()), Some(key("proxy")), m))?;
            let urls: Vec<String> = match &issuer_docs {
                IssuerDocuments::Fixed(docs) => docs
                    .iter()
                    .flat_map(|d| d.upstream_urls.to_strings())
                    .collect(),
                IssuerDocuments::Templates(t) => t
                    .iter()
                    .flat_map(|t| t.upstream_urls.iter().map(|u| u.render("tenant")))
                    .collect(),
            };
            for origin in urls.iter().filter_map(|u| Origin::of(u)) {
                match proxies.iter().find(|(o, ..)| *o == origin) {
                    Some((_, other, j, _)) if *other != setting => {
                        let line = line_col(text, proxies_span_start(&proxies, *j)).0;
                        return Err(source.error(
                            Some(p.span()),
                            Some(key("proxy")),
                            format!(
                                "the upstream {origin} already goes through {other} (authorization_server[{j}].proxy, line {line}); a proxy is chosen per upstream origin, so entries sharing one must agree"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => proxies.push((origin, setting.clone(), i, p.span())),
                }
            }
        }
        match issuer_docs {
            IssuerDocuments::Fixed(docs) => {
                for d in &docs {
                    for r in &d.routes {
                        owners.push((
                            r.to_string(),
                            format!("authorization_server[{i}]"),
                            e.issuer.span(),
                        ));
                    }
                }
                issuers.push(e.issuer.get_ref().clone());
                documents.extend(docs);
            }
            IssuerDocuments::Templates(t) => {
                template_spans.extend(t.iter().map(|_| (i, e.issuer.span())));
                templates.extend(t);
            }
        }
    }

    let single_resource = file.protected_resource.len() == 1;
    let mut protected_resources = Vec::new();
    for (i, entry) in file.protected_resource.iter().enumerate() {
        let e = entry.get_ref();
        let key = |k: &str| format!("protected_resource[{i}].{k}");
        let max_age = match &e.ttl {
            Some(v) => parse_duration(v.get_ref(), true)
                .map_err(|m| source.error(Some(v.span()), Some(key("ttl")), m))?,
            None => defaults.ttl,
        };
        let authorization_servers =
            match value(&e.authorization_servers) {
                Some(list) => list,
                None if !issuers.is_empty() => issuers.clone(),
                None => return Err(source.error(
                    Some(entry.span()),
                    Some(key("authorization_servers")),
                    "missing: no [[authorization_server]] with a fixed issuer is configured, so name the issuers here"
                        .to_string(),
                )),
            };
        let metadata = ResourceMetadata {
            resource: e.resource.get_ref().clone(),
            authorization_servers,
            jwks_uri: value(&e.jwks_uri),
            scopes_supported: value(&e.scopes_supported),
            bearer_methods_supported: value(&e.bearer_methods_supported),
            resource_signing_alg_values_supported: value(&e.resource_signing_alg_values_supported),
            resource_name: value(&e.resource_name),
            resource_documentation: value(&e.resource_documentation),
            resource_policy_uri: value(&e.resource_policy_uri),
            resource_tos_uri: value(&e.resource_tos_uri),
            tls_client_certificate_bound_access_tokens: value(
                &e.tls_client_certificate_bound_access_tokens,
            ),
            authorization_details_types_supported: value(&e.authorization_details_types_supported),
            dpop_signing_alg_values_supported: value(&e.dpop_signing_alg_values_supported),
            dpop_bound_access_tokens_required: value(&e.dpop_bound_access_tokens_required),
        };
        let also_at_root = e.also_at_root.unwrap_or(single_resource);
        let pr = ProtectedResourceConfig::new(&metadata, also_at_root, max_age).map_err(|err| {
            let span = e.span_of(err.field).unwrap_or_else(|| entry.span());
            let k = match err.index {
                Some(n) => key(&format!("{}[{n}]", err.field)),
                None => key(err.field),
            };
            source.error(Some(span), Some(k), err.message)
        })?;
        for r in &pr.routes {
            owners.push((
                r.clone(),
                format!("protected_resource[{i}]"),
                e.resource.span(),
            ));
        }
        protected_resources.push(pr);
    }

    // Every route is served by exactly one document: refuse the file
    // otherwise, pointing at the second claimant.
    let mut seen: std::collections::HashMap<&str, (&str, usize)> = std::collections::HashMap::new();
    for (route, owner, span) in &owners {
        if let Some((first, first_offset)) = seen.get(route.as_str()) {
            let (line, _) = line_col(text, *first_offset);
            let message = if first == owner {
                format!("the route {route} is claimed twice by this entry")
            } else {
                format!("the route {route} is already served by {first} (line {line}); every route must belong to one document")
            };
            let hint = if route.starts_with("/.well-known/oauth-protected-resource")
                && !route.contains("oauth-protected-resource/")
            {
                " (set also_at_root = false on all but one protected_resource)"
            } else {
                ""
            };
            let member = if owner.starts_with("protected_resource") {
                "resource"
            } else {
                "issuer"
            };
            return Err(source.error(
                Some(span.clone()),
                Some(format!("{owner}.{member}")),
                format!("{message}{hint}"),
            ));
        }
        seen.insert(route, (owner, span.start));
    }

    let state_dir = match &file.state_dir {
        Some(v) if v.get_ref().trim().is_empty() => {
            return Err(source.error(
                Some(v.span()),
                Some("state_dir".to_string()),
                "the state directory must be a path, not an empty string".to_string(),
            ))
        }
        Some(v) => Some(std::path::PathBuf::from(v.get_ref())),
        None => None,
    };
    let docs = Documents {
        documents,
        templates,
        protected_resources,
        state_dir,
        proxies: proxies.into_iter().map(|(o, s, ..)| (o, s)).collect(),
    };
    // Exact routes were checked above with their spans; what is left is
    // templates that can match the same path.
    if let Err(conflict) = documents::check_routes(&docs) {
        let second = docs
            .templates
            .iter()
            .rposition(|t| t.name == conflict.second)
            .and_then(|k| template_spans.get(k).cloned());
        let (index, span) = second.map_or((None, None), |(i, s)| (Some(i), Some(s)));
        return Err(source.error(
            span,
            index.map(|i| format!("authorization_server[{i}].issuer")),
            format!(
                "the issuer templates {} and {} can match the same path: {}",
                conflict.first, conflict.second, conflict.route
            ),
        ));
    }
    Ok(docs)
}

/// Where entry `index`'s `proxy` value starts.
fn proxies_span_start(
    proxies: &[(Origin, ProxySetting, usize, Range<usize>)],
    index: usize,
) -> usize {
    proxies
        .iter()
        .find(|(_, _, i, _)| *i == index)
        .map_or(0, |(.., span)| span.start)
}

struct Source<'a> {
    text: &'a str,
    path: &'a str,
}

impl Source<'_> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigFileError {
        let (position, snippet) = match span {
            Some(span) => {
                let start = span.start.min(self.text.len());
                let (line, column) = line_col(self.text, start);
                (Some((line, column)), Some(snippet(self.text, span, line)))
            }
            None => (None, None),
        };
        ConfigFileError {
            path: self.path.to_string(),
            position,
            key,
            message,
            snippet,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The line holding `span.start`, with carets under the span (clipped to the line).
fn snippet(text: &str, span: Range<usize>, line: usize) -> String {
    let start = floor_char_boundary(text, span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_text = mask_secrets(text[line_start..line_end].trim_end_matches('\r'));
    let end = floor_char_boundary(text, span.end.max(start + 1).min(line_end.max(start)));
    let pad = text[line_start..start].chars().count();
    let width = text[start..end.max(start)].chars().count().max(1);
    let number = line.to_string();
    format!(
        "{number} | {line_text}\n{} | {}{}",
        " ".repeat(number.len()),
        " ".repeat(pad),
        "^".repeat(width)
    )
}

/// `line` with proxy passwords masked, column for column: the value of a
/// `proxy` key entirely, and the userinfo of any `scheme://user:pass@`
/// URL. Error messages quote lines; credentials must never be in them.
fn mask_secrets(line: &str) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    let star = |c: &mut char| {
        if !matches!(*c, '"' | '\'' | ' ') {
            *c = '*';
        }
    };
    // `proxy = ...`, also inside an inline table.
    let text: String = chars.iter().collect();
    let mut from = 0;
    while let Some(found) = text[from..].find("proxy") {
        let at = from + found;
        let after = text[at + 5..].trim_start();
        if let Some(value) = after.strip_prefix('=') {
            let start_byte = text.len() - value.len();
            let start = text[..start_byte].chars().count();
            let end = value
                .find([',', '}'])
                .map_or(chars.len(), |i| text[..start_byte + i].chars().count());
            chars[start..end].iter_mut().for_each(star);
        }
        from = at + 5;
    }
    // Any `://userinfo@`.
    let text: String = chars.iter().collect();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start_byte = from + found + 3;
        let rest = &text[start_byte..];
        let stop = rest.find(['"', '\'', ' ', '/']).unwrap_or(rest.len());
        if let Some(at) = rest[..stop].rfind('@') {
            let start = text[..start_byte].chars().count();
            let end = text[..start_byte + at].chars().count();
            chars[start..end].iter_mut().for_each(star);
        }
        from = start_byte;
    }
    chars.into_iter().collect()
}

/// The key path around byte `offset`, found from the text: the nearest
/// `key =` at or above the offset's line, within the nearest `[[table]]`,
/// counted from the top for its index. Used for the `toml` crate's own
/// errors, which carry a span but not a key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let upto = &text[..line_end];
    let mut key = None;
    let mut table = None;
    for line in upto.lines().rev() {
        let t = line.trim();
        if t.starts_with('[') {
            table = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            break;
        }
        if key.is_none() {
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim();
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    key = Some(k.to_string());
                }
            }
        }
    }
    let table = match table {
        Some(name) => {
            let header = format!("[[{name}]]");
            let index = upto
                .lines()
                .filter(|l| l.trim().replace(' ', "") == header)
                .count()
                .checked_sub(1);
            Some(match index {
                Some(i) => format!("{name}[{i}]"),
                None => name,
            })
        }
        None => None,
    };
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (t, k) => t.or(k),
    }
}

fn parse_duration(value: &str, positive: bool) -> Result<Duration, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration: {e} (expected e.g. 30s, 5m, 24h)"))
        .and_then(super::values::bounded_duration)?;
    if positive && d.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        ttl: Duration::from_secs(300),
        max_stale: Duration::from_secs(3600),
        template: TemplateLimits {
            max_tenants: 1000,
            max_tenants_on_disk: None,
            not_found_ttl: Duration::from_secs(60),
            max_cold_fetches: 32,
        },
        jwks_refetch_cooldown: Duration::from_secs(30),
    };

    fn ok(text: &str) -> Documents {
        parse(text, "gw.toml", DEFAULTS).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> ConfigFileError {
        parse(text, "gw.toml", DEFAULTS).expect_err("must be rejected")
    }

    #[test]
    fn a_full_file() {
        let d = ok(r#"
# Two tenants on one authorization server, one OpenID Provider elsewhere.
[[authorization_server]]
issuer = "https://auth.example.com/tenant1"
upstream = "http://auth.internal:8080/tenant1"
ttl = "10m"

[[authorization_server]]
issuer = "https://auth.example.com/tenant2"
max_stale = "0s"

[[authorization_server]]
issuer = "https://login.example.org"
openid_configuration = true

[[protected_resource]]
resource = "https://mcp.example.com/mcp"
scopes_supported = ["mcp:tools"]
bearer_methods_supported = ["header"]
resource_name = "Example MCP"
"#);
        let names: Vec<_> = d.documents.iter().map(|d| &*d.name).collect();
        assert_eq!(
            names,
            [
                "oauth-authorization-server/tenant1",
                "oauth-authorization-server/tenant2",
                "oauth-authorization-server",
                "openid-configuration"
            ]
        );
        assert_eq!(d.documents[0].ttl, Duration::from_secs(600));
        assert_eq!(d.documents[0].max_stale, DEFAULTS.max_stale);
        assert_eq!(
            d.documents[0].upstream_urls.first().unwrap().as_str(),
            "http://auth.internal:8080/.well-known/oauth-authorization-server/tenant1"
        );
        assert_eq!(d.documents[1].ttl, DEFAULTS.ttl);
        assert_eq!(d.documents[1].max_stale, Duration::ZERO);
        assert_eq!(
            d.documents[1].upstream_urls.first().unwrap().as_str(),
            "https://auth.example.com/.well-known/oauth-authorization-server/tenant2"
        );
        let pr = &d.protected_resources[0];
        assert_eq!(
            pr.routes.len(),
            2,
            "a single resource is also served at the root"
        );
        let body: serde_json::Value = serde_json::from_slice(&pr.body).unwrap();
        assert_eq!(
            body["authorization_servers"],
            serde_json::json!([
                "https://auth.example.com/tenant1",
                "https://auth.example.com/tenant2",
                "https://login.example.org"
            ])
        );
        assert_eq!(body["resource_name"], "Example MCP");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_give_line_and_key() {
        let e = err("[[authorization_server]]\nissuer = \"https://a\"\nisuer = \"https://b\"\n");
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert_eq!(
            e.key.as_deref(),
            Some("authorization_server[0].isuer"),
            "{e}"
        );
        assert!(e.message.contains("unknown field `isuer`"), "{e}");
        assert!(e.to_string().contains("3 | isuer = \"https://b\""), "{e}");

        let e = err("[[authorization_server]]\nissuer = \"https://a\"\n\n[[authorization_server]]\nissuer = 42\n");
        assert_eq!(e.position, Some((5, 10)), "{e}");
        assert_eq!(
            e.key.as_deref(),
            Some("authorization_server[1].issuer"),
            "{e}"
        );

        let e = err("[[authorization_server]\nissuer = \"https://a\"\n");
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");

        let e = err("[[authorization_server]]\nupstream = \"https://a\"\n");
        assert!(e.message.contains("missing field `issuer`"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");

        let e = err("[[authorisation_server]]\nissuer = \"https://a\"\n");
        assert!(
            e.message.contains("unknown field `authorisation_server`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_point_at_their_key() {
        for (text, line, key, needle) in [
            (
                "[[authorization_server]]\nissuer = \"ftp://a\"\n",
                2,
                "authorization_server[0].issuer",
                "http or https",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/t\"\nupstream = \"https://b/x/../t\"\n",
                3,
                "authorization_server[0].upstream",
                "`..`",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a\"\nttl = \"soon\"\n",
                3,
                "authorization_server[0].ttl",
                "not a duration",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a\"\nttl = \"0s\"\n",
                3,
                "authorization_server[0].ttl",
                "greater than zero",
            ),
            (
                "[[protected_resource]]\nresource = \"https://m/mcp\"\n",
                1,
                "protected_resource[0].authorization_servers",
                "no [[authorization_server]]",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a\"\n[[protected_resource]]\nresource = \"https://m/mcp\"\nbearer_methods_supported = [\"header\", \"cookie\"]\n",
                5,
                "protected_resource[0].bearer_methods_supported[1]",
                "cookie",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a\"\n[[protected_resource]]\nresource = \"mcp\"\n",
                4,
                "protected_resource[0].resource",
                "not a URL",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.position.map(|p| p.0), Some(line), "{e}");
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }

    #[test]
    fn conflicting_routes_are_refused() {
        // The same issuer path on two hosts: one route, two documents.
        let e = err("[[authorization_server]]\nissuer = \"https://a/t\"\n\n[[authorization_server]]\nissuer = \"https://b/t\"\n");
        assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
        assert!(
            e.message.contains("/.well-known/oauth-authorization-server/t is already served by authorization_server[0] (line 2)"),
            "{e}"
        );
        // Two resources with paths both wanting the root route.
        let e = err("[[authorization_server]]\nissuer = \"https://a\"\n[[protected_resource]]\nresource = \"https://m/one\"\nalso_at_root = true\n[[protected_resource]]\nresource = \"https://m/two\"\nalso_at_root = true\n");
        assert!(e.message.contains("also_at_root = false"), "{e}");
        assert_eq!(e.key.as_deref(), Some("protected_resource[1].resource"));
        // Without also_at_root, several resources coexist.
        let d = ok("[[authorization_server]]\nissuer = \"https://a\"\n[[protected_resource]]\nresource = \"https://m/one\"\n[[protected_resource]]\nresource = \"https://m/two\"\n");
        assert_eq!(d.protected_resources[0].routes.len(), 1);
    }

    #[test]
    fn issuer_templates() {
        let d = ok(r#"
[[authorization_server]]
issuer = "https://auth.example.com/realms/{tenant}"
upstream = "http://keycloak.internal:8080/realms/{tenant}"
max_tenants = 10000
max_tenants_on_disk = 50000
not_found_ttl = "5m"
openid_configuration = true

[[authorization_server]]
issuer = "https://login.example.com/oauth2/{tenant}"

[[authorization_server]]
issuer = "https://auth.example.com/fixed"

[[protected_resource]]
resource = "https://mcp.example.com/mcp"
"#);
        assert_eq!(d.documents.len(), 1);
        assert_eq!(d.templates.len(), 3);
        let t = &d.templates[0];
        assert_eq!(&*t.name, "oauth-authorization-server/realms/{tenant}");
        assert_eq!(t.max_tenants, 10000);
        assert_eq!(t.max_tenants_on_disk, 50000);
        assert_eq!(
            d.templates[2].max_tenants_on_disk, 100_000,
            "100 × max_tenants"
        );
        assert_eq!(t.not_found_ttl, Duration::from_secs(300));
        assert_eq!(t.max_cold_fetches, 32);
        assert_eq!(
            t.upstream_urls[0].render("acme"),
            "http://keycloak.internal:8080/.well-known/oauth-authorization-server/realms/acme"
        );
        assert_eq!(d.templates[2].max_tenants, 1000, "the default");
        let body: serde_json::Value =
            serde_json::from_slice(&d.protected_resources[0].body).unwrap();
        assert_eq!(
            body["authorization_servers"],
            serde_json::json!(["https://auth.example.com/fixed"]),
            "templates name no single issuer"
        );
    }

    #[test]
    fn template_errors_point_at_their_key() {
        for (text, line, key, needle) in [
            (
                "[[authorization_server]]\nissuer = \"https://a/x\"\nmax_tenants = 5\n",
                3,
                "authorization_server[0].max_tenants",
                "only an issuer template",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/{tenant}\"\nmax_tenants = 0\n",
                3,
                "authorization_server[0].max_tenants",
                "at least 1",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/{tenant}\"\nmax_tenants = 50\nmax_tenants_on_disk = 49\n",
                4,
                "authorization_server[0].max_tenants_on_disk",
                "at least max_tenants (50)",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/x\"\nmax_tenants_on_disk = 5000\n",
                3,
                "authorization_server[0].max_tenants_on_disk",
                "only an issuer template",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/{tenant}\"\nupstream = \"http://b/x\"\n",
                3,
                "authorization_server[0].upstream",
                "must contain {tenant}",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/t{tenant}\"\n",
                2,
                "authorization_server[0].issuer",
                "whole path segment",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a/{tenant}\"\n\n[[authorization_server]]\nissuer = \"https://b/{tenant}\"\n",
                5,
                "authorization_server[1].issuer",
                "can match the same path",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.position.map(|p| p.0), Some(line), "{e}");
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }

    #[test]
    fn an_empty_file_is_refused() {
        let e = err("# nothing\n");
        assert!(e.message.contains("declares no documents"), "{e}");
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(line_col("ab\ncé=x", 6), (2, 3));
        assert_eq!(line_col("", 0), (1, 1));
    }

    #[test]
    fn a_proxy_per_server_by_upstream_origin() {
        let d = ok(r#"
[[authorization_server]]
issuer = "https://a.example/t1"
proxy = "http://u:s3cretpw@proxy.corp:3128"

[[authorization_server]]
issuer = "https://a.example/t2"
proxy = "http://u:s3cretpw@proxy.corp:3128"

[[authorization_server]]
issuer = "https://b.example/realms/{tenant}"
proxy = "none"

[[authorization_server]]
issuer = "https://c.example"
"#);
        let shown: Vec<String> = d.proxies.iter().map(|(o, s)| format!("{o} {s}")).collect();
        assert_eq!(
            shown,
            [
                "https://a.example:443 http://u:***@proxy.corp:3128",
                "https://b.example:443 none"
            ]
        );
    }

    #[test]
    fn proxy_errors_never_quote_the_password() {
        for (text, key, wanted) in [
            (
                "[[authorization_server]]\nissuer = \"https://a.example\"\nproxy = \"socks5://u:s3cretpw@p:1080\"\n",
                Some("authorization_server[0].proxy"),
                "SOCKS",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a.example\"\nproxy = \"http://u:s3cretpw@p:1080\n",
                None,
                "line 3",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a.example/1\"\nproxy = \"http://u:s3cretpw@p:1\"\n\n[[authorization_server]]\nissuer = \"https://a.example/2\"\nproxy = \"http://u:other@p:1\"\n",
                Some("authorization_server[1].proxy"),
                "already goes through http://u:***@p:1 (authorization_server[0].proxy, line 3)",
            ),
            (
                "[[authorization_server]]\nissuer = \"https://a.example\"\nproxy = { url = \"http://u:s3cretpw@p:1\" }\n",
                Some("authorization_server[0].proxy"),
                "string",
            ),
        ] {
            let e = err(text);
            let shown = e.to_string();
            assert!(shown.contains(wanted), "{shown}");
            if let Some(key) = key {
                assert_eq!(e.key.as_deref(), Some(key), "{shown}");
            }
            assert!(!shown.contains("s3cretpw"), "{shown}");
            assert!(!shown.contains("other@"), "{shown}");
        }
    }

    #[test]
    fn quoted_lines_mask_proxy_credentials_column_for_column() {
        assert_eq!(
            mask_secrets(r#"proxy = "http://u:pw@h:1""#),
            format!("proxy = \"{}\"", "*".repeat("http://u:pw@h:1".len()))
        );
        assert_eq!(
            mask_secrets(r#"upstream = "https://u:pw@h/x""#),
            r#"upstream = "https://****@h/x""#
        );
        assert_eq!(
            mask_secrets("issuer = \"https://a/\""),
            "issuer = \"https://a/\""
        );
        let line = r#"{ issuer = "https://a", proxy = "h:1" }"#;
        assert_eq!(
            mask_secrets(line),
            r#"{ issuer = "https://a", proxy = "***" }"#
        );
        assert_eq!(mask_secrets(line).chars().count(), line.chars().count());
    }

    #[test]
    fn key_set_settings() {
        let d = ok("[[authorization_server]]\nissuer = \"https://a/t1\"\nupstream = \"http://in/t1/\"\njwks_route = \"/.well-known/jwks.json\"\njwks_ttl = \"1h\"\njwks_refetch_cooldown = \"10s\"\n");
        let ks = &d.documents[1];
        assert_eq!(&*ks.name, "oauth-authorization-server/t1#jwks");
        assert_eq!(&*ks.routes[0], "/.well-known/jwks.json");
        assert!(
            ks.upstream_urls.is_empty(),
            "follows the metadata's jwks_uri"
        );
        assert_eq!(ks.ttl, Duration::from_secs(3600));
        let c = ks.key_set.as_deref().unwrap();
        assert_eq!(c.refetch_cooldown, Duration::from_secs(10));
        let f = c.follows.as_ref().unwrap();
        assert_eq!((&*f.issuer, &*f.upstream), ("https://a/t1", "http://in/t1"));
        // A configured jwks_uri is the one upstream URL; plain http allowed.
        let d = ok("[[authorization_server]]\nissuer = \"https://a\"\njwks_route = \"/keys\"\njwks_uri = \"http://k/jwks\"\n");
        assert_eq!(
            d.documents[1].upstream_urls.first().unwrap().as_str(),
            "http://k/jwks"
        );
        assert_eq!(
            d.documents[1].key_set.as_deref().unwrap().refetch_cooldown,
            Duration::from_secs(30)
        );
        for (text, key, needle) in [
            ("[[authorization_server]]\nissuer = \"https://a\"\njwks_uri = \"https://k\"\n", "authorization_server[0].jwks_uri", "needs jwks_route"),
            ("[[authorization_server]]\nissuer = \"https://a\"\njwks_route = \"keys\"\n", "authorization_server[0].jwks_route", "must start with /"),
            ("[[authorization_server]]\nissuer = \"https://a\"\njwks_route = \"/k\"\njwks_uri = \"ftp://k\"\n", "authorization_server[0].jwks_uri", "http or https"),
            ("[[authorization_server]]\nissuer = \"https://a/{tenant}\"\njwks_route = \"/keys\"\n", "authorization_server[0].jwks_route", "{tenant} once"),
            ("[[authorization_server]]\nissuer = \"https://a/{tenant}\"\njwks_route = \"/{tenant}/k\"\njwks_uri = \"https://k/jwks\"\n", "authorization_server[0].jwks_uri", "{tenant} once"),
            ("[[authorization_server]]\nissuer = \"https://a\"\njwks_route = \"/k\"\njwks_ttl = \"0s\"\n", "authorization_server[0].jwks_ttl", ""),
        ] {
            let e = err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
        // Two servers claiming one key-set route: named both.
        let e = err("[[authorization_server]]\nissuer = \"https://a\"\njwks_route = \"/keys\"\n\n[[authorization_server]]\nissuer = \"https://b/x\"\njwks_route = \"/keys\"\n");
        assert!(e.message.contains("/keys"), "{e}");
    }
}
