//! One configured authorization server → the documents the gateway caches
//! for it: its RFC 8414 document and, when asked, its OpenID Provider
//! document, with their routes and upstream URLs from
//! [`crate::discovery`]. An issuer with `{tenant}` in its path becomes
//! templates instead ([`crate::tenant`]).
//!
//! Also the whole-configuration checks: every exact route belongs to one
//! document, and no two templates can match the same path.

use std::sync::Arc;
use std::time::Duration;

use crate::discovery::{self, DocumentKind, SplitUrl};
use crate::document::ExpectedIssuer;
use crate::tenant::{Pattern, PLACEHOLDER};
use crate::upstream_urls::UpstreamUrls;

use super::{
    DocumentConfig, Documents, FollowedMetadata, KeySetConfig, TemplateConfig, TemplateLimits,
};

/// The routes the operations endpoints take on the public listener: no
/// document may claim them.
pub const OPS_ROUTES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// The name of a key set: its metadata document's name and `#jwks`.
pub fn key_set_name(metadata_name: &str) -> String {
    format!("{metadata_name}#jwks")
}

/// A configured `jwks_uri`: an absolute http(s) URL without a fragment;
/// `{tenant}` once in a template, never otherwise. Plain http is allowed
/// here: configured explicitly.
fn check_jwks_uri(uri: &str, template: bool) -> Result<(), String> {
    let parsed = url::Url::parse(&uri.replace(PLACEHOLDER, "tenant"))
        .map_err(|e| format!("{uri:?} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{uri:?} must be an http or https URL with a host"));
    }
    if parsed.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    let count = uri.matches(PLACEHOLDER).count();
    match (template, count) {
        (false, 0) | (true, 1) => Ok(()),
        (false, _) => Err(format!("{uri:?} has {PLACEHOLDER} but the issuer is not a template")),
        (true, _) => Err(format!(
            "{uri:?} must hold {PLACEHOLDER} once: the issuer is a template, so every tenant has its own key set"
        )),
    }
}

/// The key-set config of `spec` for the metadata document `metadata`.
fn key_set_config(
    spec: &AuthorizationServerSpec<'_>,
    ks: &KeySetSpec<'_>,
    metadata: &str,
) -> Arc<KeySetConfig> {
    let trim = |s: &str| Arc::<str>::from(s.trim_end_matches('/'));
    Arc::new(KeySetConfig {
        follows: ks.jwks_uri.is_none().then(|| FollowedMetadata {
            document: metadata.into(),
            issuer: trim(spec.issuer),
            upstream: trim(spec.upstream.unwrap_or(spec.issuer)),
        }),
        refetch_cooldown: ks.refetch_cooldown,
    })
}

/// How one authorization server is configured.
#[derive(Debug, Clone)]
pub struct AuthorizationServerSpec<'a> {
    /// The issuer identifier (or template), verbatim (RFC 8414 §3.3
    /// compares exactly).
    pub issuer: &'a str,
    /// Where the gateway reaches it; `None` means the issuer itself.
    pub upstream: Option<&'a str>,
    /// Also serve the `openid-configuration` routes.
    pub openid_configuration: bool,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// How long past `ttl` it may be served stale.
    pub max_stale: Duration,
    /// For a template: its limits. `None` when none was given for it.
    pub template: Option<TemplateLimits>,
    /// Also serve its key set (`jwks_route`...).
    pub key_set: Option<KeySetSpec<'a>>,
}

/// How an authorization server's key set is served.
#[derive(Debug, Clone)]
pub struct KeySetSpec<'a> {
    /// The route (`jwks_route`, `--jwks-route`); `{tenant}` as a segment
    /// in a template.
    pub route: &'a str,
    /// `jwks_uri`: a configured location instead of the metadata's.
    pub jwks_uri: Option<&'a str>,
    /// `jwks_ttl`: its freshness cap instead of the server's `ttl`.
    pub ttl: Option<Duration>,
    /// `jwks_refetch_cooldown`.
    pub refetch_cooldown: Duration,
}

/// Where a spec error lies, for callers that point at a config key or flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    /// The `issuer` value.
    Issuer,
    /// The `upstream` value.
    Upstream,
    /// A template-only setting on an issuer without `{tenant}`.
    TemplateSetting,
    /// The `jwks_route` value.
    JwksRoute,
    /// The `jwks_uri` value.
    JwksUri,
}

/// What one authorization server contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerDocuments {
    /// A fixed issuer: documents cached under their own routes.
    Fixed(Vec<DocumentConfig>),
    /// An issuer template: documents per tenant.
    Templates(Vec<TemplateConfig>),
}

/// Strings made once while parsing, kept shared (and exactly sized) for as
/// long as any generation of the configuration refers to them.
fn shared(strings: Vec<String>) -> Vec<Arc<str>> {
    strings.into_iter().map(Arc::from).collect()
}

/// True when `issuer` is a template.
pub fn is_template(issuer: &str) -> bool {
    issuer.contains(PLACEHOLDER)
}

/// Turns one authorization-server spec into its documents.
pub fn authorization_server(
    spec: &AuthorizationServerSpec<'_>,
) -> Result<IssuerDocuments, (SpecField, String)> {
    let mut kinds = vec![DocumentKind::AuthorizationServer];
    if spec.openid_configuration {
        kinds.push(DocumentKind::OpenIdConfiguration);
    }
    if !is_template(spec.issuer) {
        if spec.template.is_some() {
            return Err((
                SpecField::TemplateSetting,
                format!(
                    "only an issuer template (with {PLACEHOLDER} in its path) takes this setting"
                ),
            ));
        }
        if spec.upstream.is_some_and(is_template) {
            return Err((
                SpecField::Upstream,
                format!("the upstream has {PLACEHOLDER} but the issuer does not"),
            ));
        }
        let issuer = discovery::split_url(spec.issuer).map_err(|e| (SpecField::Issuer, e))?;
        let upstream = match spec.upstream {
            Some(u) => discovery::split_url(u).map_err(|e| (SpecField::Upstream, e))?,
            None => issuer.clone(),
        };
        let mut docs: Vec<DocumentConfig> = kinds
            .into_iter()
            .map(|kind| DocumentConfig {
                name: kind.label(&issuer.path).into(),
                kind,
                routes: shared(discovery::served_routes(kind, &issuer.path)).into(),
                upstream_urls: UpstreamUrls::discovered(kind, &upstream),
                issuer: ExpectedIssuer::new(spec.issuer),
                ttl: spec.ttl,
                max_stale: spec.max_stale,
                key_set: None,
            })
            .collect();
        if let Some(ks) = &spec.key_set {
            discovery::check_route(ks.route, false).map_err(|e| (SpecField::JwksRoute, e))?;
            if let Some(uri) = ks.jwks_uri {
                check_jwks_uri(uri, false).map_err(|e| (SpecField::JwksUri, e))?;
            }
            let metadata = docs[0].name.clone();
            docs.push(DocumentConfig {
                name: key_set_name(&metadata).into(),
                kind: DocumentKind::KeySet,
                routes: shared(vec![ks.route.to_string()]).into(),
                upstream_urls: UpstreamUrls::listed(ks.jwks_uri),
                issuer: ExpectedIssuer::new(spec.issuer),
                ttl: ks.ttl.unwrap_or(spec.ttl),
                max_stale: spec.max_stale,
                key_set: Some(key_set_config(spec, ks, &metadata)),
            });
        }
        return Ok(IssuerDocuments::Fixed(docs));
    }
    let issuer = discovery::split_template_url(spec.issuer).map_err(|e| (SpecField::Issuer, e))?;
    let upstream: SplitUrl = match spec.upstream {
        Some(u) if is_template(u) => {
            discovery::split_template_url(u).map_err(|e| (SpecField::Upstream, e))?
        }
        Some(u) => {
            return Err((
                SpecField::Upstream,
                format!("{u:?} must contain {PLACEHOLDER} too: the issuer is a template, so every tenant needs its own upstream URL"),
            ))
        }
        None => issuer.clone(),
    };
    let issuer_pattern = Pattern::parse(spec.issuer)
        .ok_or_else(|| (SpecField::Issuer, format!("{PLACEHOLDER} must appear once")))?;
    let limits = spec.template.unwrap_or_default();
    let patterns = |urls: Vec<String>| -> Vec<Pattern> {
        urls.iter().filter_map(|u| Pattern::parse(u)).collect()
    };
    let mut templates: Vec<TemplateConfig> = kinds
        .into_iter()
        .map(|kind| TemplateConfig {
            name: kind.label(&issuer.path),
            kind,
            routes: patterns(discovery::served_routes(kind, &issuer.path)),
            upstream_urls: patterns(discovery::upstream_urls(kind, &upstream)),
            issuer: issuer_pattern.clone(),
            ttl: spec.ttl,
            max_stale: spec.max_stale,
            max_tenants: limits.max_tenants,
            max_tenants_on_disk: limits.max_tenants_on_disk(),
            not_found_ttl: limits.not_found_ttl,
            max_cold_fetches: limits.max_cold_fetches,
            key_set: None,
        })
        .collect();
    if let Some(ks) = &spec.key_set {
        discovery::check_route(ks.route, true).map_err(|e| (SpecField::JwksRoute, e))?;
        if let Some(uri) = ks.jwks_uri {
            check_jwks_uri(uri, true).map_err(|e| (SpecField::JwksUri, e))?;
        }
        let metadata = templates[0].name.clone();
        templates.push(TemplateConfig {
            name: key_set_name(&metadata),
            kind: DocumentKind::KeySet,
            routes: patterns(vec![ks.route.to_string()]),
            upstream_urls: patterns(ks.jwks_uri.map(str::to_string).into_iter().collect()),
            issuer: issuer_pattern,
            ttl: ks.ttl.unwrap_or(spec.ttl),
            max_stale: spec.max_stale,
            max_tenants: limits.max_tenants,
            max_tenants_on_disk: limits.max_tenants_on_disk(),
            not_found_ttl: limits.not_found_ttl,
            max_cold_fetches: limits.max_cold_fetches,
            key_set: Some(key_set_config(spec, ks, &metadata)),
        });
    }
    Ok(IssuerDocuments::Templates(templates))
}

/// A route claimed twice, or two templates that can match one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    /// The route (or the first template's route pattern).
    pub route: String,
    /// The first claimant's name.
    pub first: String,
    /// The second claimant's name.
    pub second: String,
}

impl std::fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "two documents claim the route {}: {} and {}",
            self.route, self.first, self.second
        )
    }
}

/// Checks that every exact route has one owner and that no two template
/// routes overlap. An exact route that a template would also match is
/// allowed: the exact route wins (a tenant configured on its own).
pub fn check_routes(docs: &Documents) -> Result<(), RouteConflict> {
    // The operations endpoints are served before any document route.
    for (route, owner) in docs.routes() {
        if OPS_ROUTES.contains(&route) {
            return Err(RouteConflict {
                route: route.to_string(),
                first: format!("the operations endpoint {route}"),
                second: owner.to_string(),
            });
        }
    }
    for t in &docs.templates {
        for p in &t.routes {
            if let Some(ops) = OPS_ROUTES
                .iter()
                .find(|o| p.capture(o).is_some_and(crate::tenant::valid_tenant))
            {
                return Err(RouteConflict {
                    route: p.to_string(),
                    first: format!("the operations endpoint {ops}"),
                    second: t.name.clone(),
                });
            }
        }
    }
    if let Some((route, first, second)) =
        discovery::find_conflict(docs.routes().map(|(r, o)| (r, o.to_string())))
    {
        return Err(RouteConflict {
            route,
            first,
            second,
        });
    }
    let patterns: Vec<(&Pattern, &str)> = docs
        .templates
        .iter()
        .flat_map(|t| t.routes.iter().map(move |r| (r, t.name.as_str())))
        .collect();
    for (i, (a, owner_a)) in patterns.iter().enumerate() {
        for (b, owner_b) in &patterns[i + 1..] {
            if a.overlaps(b) {
                return Err(RouteConflict {
                    route: format!("{a} (and {b})"),
                    first: (*owner_a).to_string(),
                    second: (*owner_b).to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(issuer: &'a str, upstream: Option<&'a str>) -> AuthorizationServerSpec<'a> {
        AuthorizationServerSpec {
            issuer,
            upstream,
            openid_configuration: true,
            ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(600),
            template: None,
            key_set: None,
        }
    }

    #[test]
    fn a_path_issuer_behind_another_upstream() {
        let IssuerDocuments::Fixed(docs) = authorization_server(&spec(
            "https://auth.example.com/tenant1",
            Some("http://10.0.0.5:8080/tenant1"),
        ))
        .unwrap() else {
            panic!("not a template")
        };
        assert_eq!(docs.len(), 2);
        assert_eq!(&*docs[0].name, "oauth-authorization-server/tenant1");
        assert_eq!(
            docs[0].upstream_urls.first().unwrap().as_str(),
            "http://10.0.0.5:8080/.well-known/oauth-authorization-server/tenant1"
        );
        assert_eq!(docs[0].issuer.as_str(), "https://auth.example.com/tenant1");
        assert_eq!(&*docs[1].name, "openid-configuration/tenant1");
        assert_eq!(docs[1].routes.len(), 2);
        let err = authorization_server(&spec("https://auth.example.com/t", Some("https://x/../y")))
            .unwrap_err();
        assert_eq!(err.0, SpecField::Upstream);
    }

    #[test]
    fn a_template_in_the_middle_of_the_path() {
        let IssuerDocuments::Templates(t) = authorization_server(&spec(
            "https://login.example.com/{tenant}/v2.0",
            Some("http://entra.internal/{tenant}/v2.0"),
        ))
        .unwrap() else {
            panic!("a template")
        };
        assert_eq!(&*t[0].name, "oauth-authorization-server/{tenant}/v2.0");
        assert_eq!(
            t[0].routes[0].render("acme"),
            "/.well-known/oauth-authorization-server/acme/v2.0"
        );
        assert_eq!(
            t[0].upstream_urls
                .iter()
                .map(|u| u.render("acme"))
                .collect::<Vec<_>>(),
            [
                "http://entra.internal/.well-known/oauth-authorization-server/acme/v2.0",
                "http://entra.internal/.well-known/openid-configuration/acme/v2.0",
                "http://entra.internal/acme/v2.0/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            t[0].issuer.render("acme"),
            "https://login.example.com/acme/v2.0"
        );
        assert_eq!(
            t[1].routes
                .iter()
                .map(|r| r.render("acme"))
                .collect::<Vec<_>>(),
            [
                "/.well-known/openid-configuration/acme/v2.0",
                "/acme/v2.0/.well-known/openid-configuration"
            ]
        );
        assert_eq!(t[0].max_tenants, TemplateLimits::default().max_tenants);
    }

    #[test]
    fn template_mistakes_are_refused() {
        for (issuer, upstream, field) in [
            (
                "https://a/realms/{tenant}",
                Some("http://kc/realms/x"),
                SpecField::Upstream,
            ),
            (
                "https://a/realms/x",
                Some("http://kc/realms/{tenant}"),
                SpecField::Upstream,
            ),
            ("https://{tenant}.a/", None, SpecField::Issuer),
            ("https://a/r{tenant}", None, SpecField::Issuer),
        ] {
            let err = authorization_server(&spec(issuer, upstream)).unwrap_err();
            assert_eq!(err.0, field, "{issuer} {upstream:?}: {}", err.1);
        }
        let mut s = spec("https://a/x", None);
        s.template = Some(TemplateLimits::default());
        assert_eq!(
            authorization_server(&s).unwrap_err().0,
            SpecField::TemplateSetting
        );
    }

    #[test]
    fn overlapping_templates_conflict() {
        let docs = |issuers: &[&str]| {
            let mut d = Documents::default();
            for i in issuers {
                match authorization_server(&spec(i, None)).unwrap() {
                    IssuerDocuments::Fixed(f) => d.documents.extend(f),
                    IssuerDocuments::Templates(t) => d.templates.extend(t),
                }
            }
            d
        };
        assert!(check_routes(&docs(&[
            "https://a/realms/{tenant}",
            "https://b/oauth2/{tenant}"
        ]))
        .is_ok());
        let err = check_routes(&docs(&[
            "https://a/realms/{tenant}",
            "https://b/{tenant}/x",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("realms/{tenant}"), "{err}");
        // An exact tenant next to the template: allowed, the exact one wins.
        assert!(check_routes(&docs(&[
            "https://a/realms/{tenant}",
            "https://a/realms/special"
        ]))
        .is_ok());
        let err = check_routes(&docs(&["https://a/t", "https://b/t"])).unwrap_err();
        assert_eq!(err.route, "/.well-known/oauth-authorization-server/t");
    }
}
