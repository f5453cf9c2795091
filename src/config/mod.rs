//! The typed configuration the rest of the program runs on, and the rules
//! that turn what an operator wrote into it.
//!
//! This is the bottom of the configuration stack: it depends on the pure
//! rules ([`crate::discovery`], [`crate::tenant`], [`crate::document`],
//! [`crate::protected_resource`]) and on nothing that reads it. The
//! command-line front ([`crate::cli`]: clap, environment variables) and the
//! TOML file ([`file`]) both produce a [`Config`]; the route table
//! ([`crate::routes`]) is built once from it.
//!
//! - [`documents`]: one issuer (or issuer template) → its documents;
//! - [`file`]: the `--config` TOML file, with located errors;
//! - [`values`]: durations, sizes and certificate files as typed.

pub mod documents;
pub mod file;
pub mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::discovery::DocumentKind;
use crate::document::ExpectedIssuer;
use crate::listener::ListenerConfig;
use crate::protected_resource::ProtectedResourceConfig;
use crate::tenant::Pattern;
use crate::upstream::proxy_rules::{Origin, ProxyRoutes, ProxySetting};
use crate::upstream_urls::UpstreamUrls;

/// RFC 8414 §3: the well-known suffix for authorization-server metadata.
pub const AS_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Default bound on upstream requests in flight per upstream host.
pub const DEFAULT_UPSTREAM_CONCURRENCY: usize = 8;

/// Default number of configured documents up to which metrics carry one
/// `document` label per document (above it, one per document kind).
pub const DEFAULT_METRICS_DOCUMENT_LABELS: usize = 32;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gateway listens on (used by `main`; tests pass their own listener).
    pub listen: SocketAddr,
    /// The documents to serve.
    pub documents: Documents,
    /// The `--config` file they came from, re-read on SIGHUP; `None` for the
    /// single-upstream flags (nothing to reload).
    pub config_file: Option<ConfigFile>,
    /// `--admin-listen`: where the admin listener (status, refresh,
    /// operations endpoints) listens; off when `None`.
    pub admin_listen: Option<SocketAddr>,
    /// Limits on upstream fetches.
    pub upstream: UpstreamConfig,
    /// Up to this many configured documents, metrics are labelled per
    /// document; above it, per document kind (`--metrics-document-labels`).
    pub metrics_document_labels: usize,
    /// `--ready-min-percent`: `/readyz` is 200 while at least this share
    /// (1..=100) of the configured documents is servable.
    pub ready_min_percent: u8,
    /// `--no-cache`: store nothing, fetch upstream for every request.
    pub no_cache: bool,
    /// `--state-dir` (or the config file's `state_dir`): where validated
    /// documents are saved to survive a restart.
    pub state_dir: Option<PathBuf>,
    /// Demo authorization server, when `--demo` is set.
    pub demo: Option<SocketAddr>,
    /// HTTP worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Log format for `main`.
    pub log_format: LogFormat,
    /// TLS and client-connection limits.
    pub listener: ListenerConfig,
}

impl Config {
    /// For `--demo`: the first authorization server's issuer and the path
    /// of the first upstream URL the gateway fetches it from.
    pub fn demo_document(&self) -> Option<(&str, String)> {
        let doc = self
            .documents
            .documents
            .iter()
            .find(|d| d.kind == DocumentKind::AuthorizationServer)?;
        let url = url::Url::parse(&doc.upstream_urls.first()?).ok()?;
        Some((doc.issuer.as_str(), url.path().to_string()))
    }
}

/// A config file and the defaults (from flags) its documents were read
/// with: everything a reload needs to read it again the same way.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file, as given.
    pub path: PathBuf,
    /// Lifetimes and template limits from the flags.
    pub defaults: file::Defaults,
}

impl ConfigFile {
    /// Reads and checks the file again, exactly as at start-up.
    pub fn load(&self) -> Result<Documents, String> {
        let docs = file::load(&self.path, self.defaults).map_err(|e| e.to_string())?;
        documents::check_routes(&docs).map_err(|c| format!("{}: {c}", self.path.display()))?;
        Ok(docs)
    }
}

/// The documents to serve, from the flags or the config file.
#[derive(Debug, Clone, Default)]
pub struct Documents {
    /// Upstream documents, one cache slot each.
    pub documents: Vec<DocumentConfig>,
    /// Issuer templates: upstream documents per tenant, cached on demand.
    pub templates: Vec<TemplateConfig>,
    /// Protected resource documents, generated from configuration.
    pub protected_resources: Vec<ProtectedResourceConfig>,
    /// The config file's top-level `state_dir`, if it sets one (used at
    /// start-up only, when `--state-dir` is not given; a reload does not
    /// move the state directory).
    pub state_dir: Option<PathBuf>,
    /// Per-server forward proxies (`proxy = ...` in the config file), by
    /// upstream origin; applied again on every reload.
    pub proxies: Vec<(Origin, ProxySetting)>,
}

impl Documents {
    /// Every exact `(route, document name)` pair, in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        let fetched = self
            .documents
            .iter()
            .flat_map(|d| d.routes.iter().map(|r| (&**r, &*d.name)));
        let local = self
            .protected_resources
            .iter()
            .flat_map(|d| d.routes.iter().map(|r| (r.as_str(), d.name.as_str())));
        fetched.chain(local)
    }

    /// True when nothing is configured to be served.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.templates.is_empty()
            && self.protected_resources.is_empty()
    }

    /// Every upstream URL (configured documents and templates, as written).
    pub fn upstream_urls(&self) -> impl Iterator<Item = String> + '_ {
        let fixed = self
            .documents
            .iter()
            .flat_map(|d| d.upstream_urls.to_strings());
        let templated = self
            .templates
            .iter()
            .flat_map(|t| t.upstream_urls.iter().map(Pattern::as_template));
        fixed.chain(templated)
    }
}

/// One cached document: where it comes from and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocumentConfig {
    /// Name used in logs, metrics (while per-document labels are on) and
    /// the status endpoint: the document kind plus the configured issuer
    /// path, e.g. `oauth-authorization-server/tenant1` (bounded: never
    /// derived from a request). Shared with the document's cache slot.
    pub name: Arc<str>,
    /// What the document is.
    pub kind: DocumentKind,
    /// Paths the gateway serves it at (exact strings), shared with the
    /// route table.
    pub routes: Box<[Arc<str>]>,
    /// Upstream URLs it is fetched from, tried in order (a 4xx moves on);
    /// shared with the cache slot (one copy per document, however many
    /// generations of the route table refer to it).
    pub upstream_urls: UpstreamUrls,
    /// The issuer the document must declare.
    pub issuer: ExpectedIssuer,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// How long past `ttl` it may be served stale.
    pub max_stale: Duration,
    /// For a key set: where it comes from and its on-demand bound; `None`
    /// for metadata documents (a pointer, so they pay 8 bytes for it).
    pub key_set: Option<Arc<KeySetConfig>>,
}

/// Default `--jwks-refetch-cooldown`: at most one on-demand revalidation of
/// a key set per this long (jose's own cooldown is 30 s too).
pub const DEFAULT_JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

/// What a key-set document needs beyond a metadata document's fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySetConfig {
    /// `None` when `jwks_uri` is configured (it is then the document's one
    /// upstream URL); else the metadata document whose `jwks_uri` it
    /// follows.
    pub follows: Option<FollowedMetadata>,
    /// At most one on-demand revalidation (a client's `no-cache`,
    /// `max-age=0` or unknown `?kid`) per this long, counted from the start
    /// of the last one (`jwks_refetch_cooldown`).
    pub refetch_cooldown: Duration,
}

/// The metadata document a key set follows, and the issuer→upstream
/// mapping its `jwks_uri` goes through. In a template, `issuer` and
/// `upstream` hold `{tenant}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FollowedMetadata {
    /// The metadata document's (or template's) name.
    pub document: Arc<str>,
    /// The issuer as configured, without a trailing `/`.
    pub issuer: Arc<str>,
    /// Where the gateway reaches the issuer (the issuer itself when no
    /// `upstream` is configured), without a trailing `/`.
    pub upstream: Arc<str>,
}

/// An issuer template's document of one kind: every field with `{tenant}`
/// is filled in per request from the checked tenant segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateConfig {
    /// Name in logs and metrics labels, with the placeholder:
    /// `oauth-authorization-server/realms/{tenant}`.
    pub name: String,
    /// What the documents are.
    pub kind: DocumentKind,
    /// Route patterns, as for a configured document.
    pub routes: Vec<Pattern>,
    /// Upstream URL patterns, tried in order.
    pub upstream_urls: Vec<Pattern>,
    /// The issuer pattern each tenant's document must declare, byte for byte.
    pub issuer: Pattern,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// How long past `ttl` it may be served stale.
    pub max_stale: Duration,
    /// Most tenants cached at once (moka `max_capacity`).
    pub max_tenants: u64,
    /// Most tenants kept in the state directory (`--state-dir`), the
    /// second tier: at least `max_tenants`.
    pub max_tenants_on_disk: u64,
    /// How long an upstream 404/410 for a tenant is remembered.
    pub not_found_ttl: Duration,
    /// Most cold fetches (tenants not cached) in flight or waiting at once;
    /// beyond it a request gets 503 with `Retry-After`.
    pub max_cold_fetches: usize,
    /// For key sets: as [`DocumentConfig::key_set`].
    pub key_set: Option<Arc<KeySetConfig>>,
}

/// Per-template settings with their defaults (`--max-tenants`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Most tenants cached at once.
    pub max_tenants: u64,
    /// Most tenants kept in the state directory; `None`:
    /// [`DISK_TIER_FACTOR`] × `max_tenants`.
    pub max_tenants_on_disk: Option<u64>,
    /// How long an upstream 404/410 is remembered.
    pub not_found_ttl: Duration,
    /// Most cold fetches at once.
    pub max_cold_fetches: usize,
}

/// The default disk tier of a template: this many times its `max_tenants`.
pub const DISK_TIER_FACTOR: u64 = 100;

impl TemplateLimits {
    /// The disk tier's bound: the one set, else [`DISK_TIER_FACTOR`] ×
    /// `max_tenants` (never below `max_tenants`).
    pub fn max_tenants_on_disk(&self) -> u64 {
        self.max_tenants_on_disk
            .unwrap_or_else(|| self.max_tenants.saturating_mul(DISK_TIER_FACTOR))
            .max(self.max_tenants)
    }
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            max_tenants: 1000,
            max_tenants_on_disk: None,
            not_found_ttl: Duration::from_secs(60),
            max_cold_fetches: 32,
        }
    }
}

/// Settings shared by every upstream fetch.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Deadline for one whole fetch.
    pub timeout: Duration,
    /// Largest accepted body.
    pub max_body_size: usize,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Cap on the retry delay.
    pub backoff_max: Duration,
    /// Most upstream requests in flight per upstream host (scheme, host
    /// and port), warm-up and refreshes included.
    pub concurrency: usize,
    /// Extra trusted CA certificates (DER), loaded from `--upstream-ca`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `--min-ttl` and `--ignore-upstream-freshness`: how the upstream's
    /// own freshness (RFC 9111 §4.2) is bounded.
    pub freshness: crate::cache_rules::upstream_freshness::Settings,
    /// Forward proxies: `--upstream-proxy`/`--upstream-no-proxy` or the
    /// environment's `HTTPS_PROXY`, `NO_PROXY`..., and the origins always
    /// fetched directly (the `--demo` server). The config file's
    /// per-server choices are in [`Documents::proxies`].
    pub proxy: ProxyRoutes,
}
