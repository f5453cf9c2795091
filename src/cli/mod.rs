//! The command-line front: clap flags (each also `GATEWAY_<NAME>` in the
//! environment) turned into the typed [`Config`] in one place.
//!
//! All checks that can be made before serving are made here or in
//! [`crate::config`], so a bad value fails at start-up with one line naming
//! the flag and exit code 2 (clap's usage-error code), never later and
//! never as a panic. [`Cli::try_parse_from`] plus [`Cli::into_config`]
//! make the whole path testable without a process.
//!
//! The documents to serve come either from the single-upstream flags
//! (`--upstream`, `--issuer`, `--openid-configuration`, `--resource ...`),
//! the short form, or from a TOML file (`--config`, see
//! [`crate::config::file`]); the two are exclusive. Either way they end up
//! as the same [`Documents`], with every route checked to be claimed once.
//! Nothing below this module knows about clap or the environment: the
//! proxy variables (`HTTPS_PROXY`, `NO_PROXY`...) are read here into a
//! [`ProxyEnv`] and handed down ([`Cli::into_config_with`] takes one, so
//! tests never depend on the machine's environment).

mod listener_args;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

pub use listener_args::ListenerArgs;

/// `--log-format`'s values: the command line's side of
/// [`LogFormat`], so the typed configuration does not depend on clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable single lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

use crate::config::documents::{
    self, AuthorizationServerSpec, IssuerDocuments, KeySetSpec, SpecField,
};
use crate::config::values::{
    load_ca_file, parse_duration, parse_positive_duration, parse_size, sensitive, SensitiveArg,
};
use crate::config::{
    Config, ConfigFile, Documents, LogFormat, TemplateLimits, UpstreamConfig,
    DEFAULT_METRICS_DOCUMENT_LABELS, DEFAULT_UPSTREAM_CONCURRENCY,
};
use crate::discovery::DocumentKind;
use crate::protected_resource::{ProtectedResourceConfig, ResourceMetadata};
use crate::upstream::proxy_rules::{Origin, ProxyEnv, ProxyRoutes, ProxyRules};

/// The proxy variables of this process's environment.
pub fn process_proxy_env() -> ProxyEnv {
    ProxyEnv::from_lookup(|name| std::env::var(name).ok())
}

/// Command-line interface, as the user types it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "oauth-metadata-gateway",
    version,
    about = "Caching gateway for OAuth authorization-server metadata (RFC 8414) in front of MCP servers"
)]
pub struct Cli {
    /// What to do instead of running the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also listen here for operations (GET /documents, POST /refresh, /metrics,
    /// /healthz, /readyz); off by default. Bind it to loopback or a private network:
    /// it is not for clients.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Where the gateway reaches the authorization server: its issuer URL as
    /// seen from the gateway. The document is fetched with GET from
    /// `/.well-known/oauth-authorization-server<path>` there (RFC 8414 §3.1),
    /// falling back to the openid-configuration locations on a 4xx.
    /// With an `--issuer` template, it carries `{tenant}` too.
    /// [default: http://localhost:7788; with --demo, the demo server's address]
    #[arg(long, env = "GATEWAY_UPSTREAM", value_parser = parse_upstream, conflicts_with = "config")]
    pub upstream: Option<String>,

    /// Issuer the document must declare (RFC 8414 §3.3); defaults to the upstream URL.
    /// Its path gives the served route: /.well-known/oauth-authorization-server<path>.
    /// With `{tenant}` as one path segment it is a template: every tenant is served
    /// and cached on demand (see --max-tenants).
    #[arg(long, env = "GATEWAY_ISSUER", value_parser = parse_issuer, conflicts_with = "config")]
    pub issuer: Option<String>,

    /// Also serve the issuer's key set (RFC 7517 JWK Set, from its metadata's jwks_uri)
    /// at this path, e.g. /.well-known/jwks.json; with an --issuer template, {tenant}
    /// as one path segment (e.g. /{tenant}/keys).
    #[arg(long, env = "GATEWAY_JWKS_ROUTE", conflicts_with = "config")]
    pub jwks_route: Option<String>,

    /// At most one on-demand key-set revalidation (a client's Cache-Control: no-cache or
    /// max-age=0, or an unknown ?kid) per key set per this long; the default for --config.
    #[arg(long, env = "GATEWAY_JWKS_REFETCH_COOLDOWN", default_value = "30s", value_parser = parse_duration)]
    pub jwks_refetch_cooldown: Duration,

    /// Also serve the issuer's OpenID Provider metadata at
    /// /.well-known/openid-configuration<path> and <path>/.well-known/openid-configuration.
    #[arg(long, env = "GATEWAY_OPENID_CONFIGURATION", conflicts_with = "config")]
    pub openid_configuration: bool,

    /// The MCP server's resource identifier (e.g. https://mcp.example.com/mcp): serve RFC 9728
    /// protected resource metadata for it, naming the issuer as its authorization server.
    #[arg(long, env = "GATEWAY_RESOURCE", conflicts_with = "config")]
    pub resource: Option<String>,

    /// `scopes_supported` of the protected resource metadata (comma-separated).
    #[arg(
        long,
        env = "GATEWAY_RESOURCE_SCOPES",
        value_delimiter = ',',
        requires = "resource"
    )]
    pub resource_scopes: Vec<String>,

    /// `bearer_methods_supported` of the protected resource metadata (comma-separated: header, body, query).
    #[arg(
        long,
        env = "GATEWAY_RESOURCE_BEARER_METHODS",
        value_delimiter = ',',
        requires = "resource"
    )]
    pub resource_bearer_methods: Vec<String>,

    /// `resource_name` of the protected resource metadata.
    #[arg(long, env = "GATEWAY_RESOURCE_NAME", requires = "resource")]
    pub resource_name: Option<String>,

    /// `resource_documentation` URL of the protected resource metadata.
    #[arg(long, env = "GATEWAY_RESOURCE_DOCUMENTATION", requires = "resource")]
    pub resource_documentation: Option<String>,

    /// TOML file listing the documents to serve (several issuers, upstreams and
    /// protected resources); replaces the single-upstream flags above.
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// How long a fetched document is fresh (humantime: 30s, 5m, 1h); the default for --config documents.
    #[arg(long, env = "GATEWAY_TTL", default_value = "300s", value_parser = parse_positive_duration)]
    pub ttl: Duration,

    /// How long past its TTL a document may still be served while the upstream fails (RFC 5861 stale-if-error); the default for --config documents.
    #[arg(long, env = "GATEWAY_MAX_STALE", default_value = "24h", value_parser = parse_duration)]
    pub max_stale: Duration,

    /// The least time a document is held fresh, whatever the upstream's
    /// Cache-Control says (also what no-store, no-cache, private and
    /// max-age=0 get); lowered to a document's TTL when above it.
    #[arg(long, env = "GATEWAY_MIN_TTL", default_value = "10s", value_parser = parse_positive_duration)]
    pub min_ttl: Duration,

    /// Ignore the upstream's Cache-Control, Expires and Age: every document
    /// is fresh for exactly its --ttl.
    #[arg(long, env = "GATEWAY_IGNORE_UPSTREAM_FRESHNESS")]
    pub ignore_upstream_freshness: bool,

    /// Directory where validated documents are saved (atomically) so a
    /// restart during an upstream outage still serves them; overrides the
    /// config file's state_dir.
    #[arg(long, env = "GATEWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Deadline for one whole upstream fetch: connect, response head and body.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,

    /// Largest upstream document accepted (bytes, or with a KiB/MiB suffix).
    #[arg(long, env = "GATEWAY_MAX_BODY_SIZE", default_value = "256KiB", value_parser = parse_size)]
    pub max_body_size: usize,

    /// First delay before retrying a failed upstream fetch; doubles per failure.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MIN", default_value = "1s", value_parser = parse_positive_duration)]
    pub retry_backoff_min: Duration,

    /// Cap on the delay between retries of a failing upstream.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MAX", default_value = "30s", value_parser = parse_positive_duration)]
    pub retry_backoff_max: Duration,

    /// PEM file with extra CA certificates to trust for an https upstream (in addition to the web PKI roots).
    #[arg(long, env = "GATEWAY_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Forward proxy for every upstream fetch: http://[user:password@]host[:port]
    /// (CONNECT tunnels; credentials percent-encoded), or `none` to ignore the
    /// environment. Default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY as curl reads them.
    #[arg(long, env = "GATEWAY_UPSTREAM_PROXY", hide_env_values = true, value_name = "URL", value_parser = sensitive)]
    pub upstream_proxy: Option<SensitiveArg>,

    /// Hosts fetched without a proxy, comma-separated: domain suffixes (corp, .corp),
    /// IP addresses, CIDR blocks, or *. Replaces NO_PROXY / no_proxy.
    #[arg(long, env = "GATEWAY_UPSTREAM_NO_PROXY", value_name = "LIST")]
    pub upstream_no_proxy: Option<String>,

    /// Disable the cache: fetch and validate the document upstream for every
    /// request (the naive design; for benchmarks and debugging, not production).
    #[arg(long, env = "GATEWAY_NO_CACHE")]
    pub no_cache: bool,

    /// Also run a built-in demo authorization server (see --demo-listen) so the gateway has something to serve.
    #[arg(long, env = "GATEWAY_DEMO")]
    pub demo: bool,

    /// Where the demo authorization server listens. Without --upstream, the
    /// gateway fetches from here (`localhost` for a loopback address).
    #[arg(long, env = "GATEWAY_DEMO_LISTEN", default_value = "127.0.0.1:7788")]
    pub demo_listen: SocketAddr,

    /// Most tenants of an issuer template cached at once (per template
    /// document); the default for --config templates.
    #[arg(long, env = "GATEWAY_MAX_TENANTS", default_value_t = TemplateLimits::default().max_tenants, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tenants: u64,

    /// Most tenants of an issuer template kept in the state directory
    /// (--state-dir), the second tier behind memory (per template
    /// document); the default for --config templates. Default: 100 ×
    /// the template's max_tenants. At least --max-tenants.
    #[arg(long, env = "GATEWAY_MAX_TENANTS_ON_DISK", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tenants_on_disk: Option<u64>,

    /// Most upstream requests in flight per upstream host (scheme, host, port),
    /// start-up warm-up and refreshes included; a share is kept for client
    /// requests that find nothing cached.
    #[arg(long, env = "GATEWAY_UPSTREAM_CONCURRENCY", default_value_t = DEFAULT_UPSTREAM_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=4096).map(usize::from))]
    pub upstream_concurrency: usize,

    /// Up to this many configured documents, metrics carry one `document`
    /// label value per document; above it, one per document kind (per-document
    /// detail is in the admin listener's GET /documents).
    #[arg(long, env = "GATEWAY_METRICS_DOCUMENT_LABELS", default_value_t = DEFAULT_METRICS_DOCUMENT_LABELS)]
    pub metrics_document_labels: usize,

    /// /readyz answers 200 while at least this percentage of the configured
    /// documents can be served (100: every one). With thousands of issuers,
    /// e.g. 99 keeps one broken tenant from taking every replica out of
    /// its load balancer.
    #[arg(long, env = "GATEWAY_READY_MIN_PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub ready_min_percent: u8,

    /// Number of HTTP worker threads (default: one per core).
    #[arg(long, env = "GATEWAY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Seconds allowed for in-flight requests to finish after SIGTERM/SIGINT.
    #[arg(long, env = "GATEWAY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log line format.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,

    /// TLS and client-connection limits (src/listener).
    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Fetch an issuer's metadata as the gateway would and report what is
    /// wrong with it against RFC 8414 and the MCP authorization spec
    /// (exit status 0 when nothing is, 1 otherwise).
    Check(crate::check::CheckArgs),
}

impl Cli {
    /// Parses arguments (and `GATEWAY_*` environment variables) and validates
    /// them; any problem is a clap error that prints one line and exits 2.
    pub fn parse_config() -> Config {
        match Self::parse().into_config() {
            Ok(config) => config,
            Err(err) => err.exit(),
        }
    }

    /// Parses an explicit argument list (the first item is the program
    /// name) into a validated [`Config`]; environment variables still apply.
    pub fn config_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)?.into_config()
    }

    /// Parses an explicit argument list like [`Cli::config_from_args`],
    /// with `env` as the proxy environment instead of the process's.
    pub fn config_from_args_env<I, T>(args: I, env: &ProxyEnv) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)?.into_config_with(env)
    }

    /// Validates cross-field rules and loads files named by flags; the
    /// proxy variables come from the process environment.
    pub fn into_config(self) -> Result<Config, clap::Error> {
        self.into_config_with(&process_proxy_env())
    }

    /// [`Cli::into_config`] with the proxy environment given.
    pub fn into_config_with(self, env: &ProxyEnv) -> Result<Config, clap::Error> {
        if self.command.is_some() {
            return Err(usage_error(
                "a subcommand was given: it does not run the gateway".to_string(),
            ));
        }
        if let Some(on_disk) = self.max_tenants_on_disk.filter(|n| *n < self.max_tenants) {
            return Err(usage_error(format!(
                "invalid value for '--max-tenants-on-disk': {on_disk} is less than --max-tenants ({}); the disk tier holds every tenant held in memory",
                self.max_tenants
            )));
        }
        if self.retry_backoff_min > self.retry_backoff_max {
            return Err(usage_error(format!(
                "invalid value for '--retry-backoff-min': {} is larger than --retry-backoff-max ({})",
                humantime::format_duration(self.retry_backoff_min),
                humantime::format_duration(self.retry_backoff_max)
            )));
        }
        let extra_roots = match &self.upstream_ca {
            Some(path) => load_ca_file(path)
                .map_err(|e| usage_error(format!("invalid value for '--upstream-ca': {e}")))?,
            None => Vec::new(),
        };
        let config_file = self.config.as_ref().map(|path| ConfigFile {
            path: path.clone(),
            defaults: crate::config::file::Defaults {
                ttl: self.ttl,
                max_stale: self.max_stale,
                template: TemplateLimits {
                    max_tenants: self.max_tenants,
                    max_tenants_on_disk: self.max_tenants_on_disk,
                    ..TemplateLimits::default()
                },
                jwks_refetch_cooldown: self.jwks_refetch_cooldown,
            },
        });
        let docs = match &config_file {
            Some(file) => crate::config::file::load(&file.path, file.defaults)
                .map_err(|e| usage_error(format!("invalid value for '--config': {e}")))?,
            None => self.documents_from_flags()?,
        };
        documents::check_routes(&docs).map_err(|c| usage_error(c.to_string()))?;
        if !extra_roots.is_empty() && !docs.upstream_urls().any(|u| u.starts_with("https://")) {
            return Err(usage_error(
                "'--upstream-ca' was given but no upstream is an https URL".to_string(),
            ));
        }
        if self.demo
            && !docs
                .documents
                .iter()
                .any(|d| d.kind == DocumentKind::AuthorizationServer)
        {
            return Err(usage_error(
                "'--demo' needs an authorization server to imitate, and the configuration has none"
                    .to_string(),
            ));
        }
        if self.admin_listen == Some(self.listen) {
            return Err(usage_error(format!(
                "invalid value for '--admin-listen': {} is also --listen; the admin listener needs an address of its own",
                self.listen
            )));
        }
        let state_dir = self.state_dir.clone().or_else(|| docs.state_dir.clone());
        if self.no_cache && state_dir.is_some() {
            return Err(usage_error(
                "'--state-dir' was given with '--no-cache': nothing is stored to save".to_string(),
            ));
        }
        let proxy = self.proxy_routes(env, &docs)?;
        let listener = self.listener.into_config()?;
        Ok(Config {
            listen: self.listen,
            documents: docs,
            config_file,
            admin_listen: self.admin_listen,
            upstream: UpstreamConfig {
                timeout: self.upstream_timeout,
                max_body_size: self.max_body_size,
                backoff_min: self.retry_backoff_min,
                backoff_max: self.retry_backoff_max,
                concurrency: self.upstream_concurrency,
                extra_roots,
                freshness: crate::cache_rules::upstream_freshness::Settings {
                    min_ttl: self.min_ttl,
                    honour_upstream: !self.ignore_upstream_freshness,
                },
                proxy,
            },
            metrics_document_labels: self.metrics_document_labels,
            ready_min_percent: self.ready_min_percent,
            no_cache: self.no_cache,
            state_dir,
            demo: self.demo.then_some(self.demo_listen),
            workers: self.workers.map(usize::from),
            shutdown_timeout: self.shutdown_timeout,
            log_format: self.log_format.into(),
            listener,
        })
    }
}

impl Cli {
    /// The proxy rules from `--upstream-proxy`/`--upstream-no-proxy` or
    /// `env`; with `--demo`, the demo server's origin is always direct.
    fn proxy_routes(&self, env: &ProxyEnv, docs: &Documents) -> Result<ProxyRoutes, clap::Error> {
        let rules = ProxyRules::resolve(
            self.upstream_proxy.as_ref().map(|a| a.0.as_str()),
            self.upstream_no_proxy.as_deref(),
            env,
        )
        .map_err(|e| usage_error(e.to_string()))?;
        let mut routes = ProxyRoutes::new(rules);
        if self.demo {
            // The demo server is never fetched through a proxy: neither
            // where it listens nor the upstream it stands in for.
            let listen = Origin::of(&format!("http://{}", self.demo_listen));
            let imitated = docs
                .documents
                .iter()
                .filter(|d| d.kind == DocumentKind::AuthorizationServer)
                .flat_map(|d| d.upstream_urls.first())
                .next()
                .and_then(|u| Origin::of(&u));
            for origin in [listen, imitated].into_iter().flatten() {
                routes = routes.with_direct(origin);
            }
        }
        Ok(routes)
    }

    /// The short form: one issuer from `--upstream`/`--issuer`, optionally
    /// its OpenID configuration, optionally one protected resource.
    fn documents_from_flags(&self) -> Result<Documents, clap::Error> {
        let upstream = self.upstream_url();
        let issuer = match &self.issuer {
            Some(issuer) => issuer.clone(),
            // As typed minus trailing slashes: `https://as.example.com/`
            // names the issuer `https://as.example.com`.
            None => upstream.trim_end_matches('/').to_string(),
        };
        let templated = documents::is_template(&issuer);
        let issuer_docs = documents::authorization_server(&AuthorizationServerSpec {
            issuer: &issuer,
            upstream: Some(upstream.as_str()),
            openid_configuration: self.openid_configuration,
            ttl: self.ttl,
            max_stale: self.max_stale,
            template: templated.then_some(TemplateLimits {
                max_tenants: self.max_tenants,
                max_tenants_on_disk: self.max_tenants_on_disk,
                ..TemplateLimits::default()
            }),
            key_set: self.jwks_route.as_deref().map(|route| KeySetSpec {
                route,
                jwks_uri: None,
                ttl: None,
                refetch_cooldown: self.jwks_refetch_cooldown,
            }),
        })
        .map_err(|(field, e)| {
            let flag = match (field, self.issuer.is_some()) {
                (SpecField::JwksRoute, _) => "--jwks-route",
                (SpecField::Issuer, true) => "--issuer",
                _ => "--upstream",
            };
            usage_error(format!("invalid value for '{flag}': {e}"))
        })?;
        let (documents, templates) = match issuer_docs {
            IssuerDocuments::Fixed(d) => (d, Vec::new()),
            IssuerDocuments::Templates(t) => (Vec::new(), t),
        };
        let mut protected_resources = Vec::new();
        if let Some(resource) = &self.resource {
            if templated {
                return Err(usage_error(
                    "'--resource' needs a fixed issuer to name as its authorization server; with an --issuer template, use a --config file with a [[protected_resource]] per tenant".to_string(),
                ));
            }
            let metadata = ResourceMetadata {
                resource: resource.clone(),
                authorization_servers: vec![issuer.clone()],
                scopes_supported: (!self.resource_scopes.is_empty())
                    .then(|| self.resource_scopes.clone()),
                bearer_methods_supported: (!self.resource_bearer_methods.is_empty())
                    .then(|| self.resource_bearer_methods.clone()),
                resource_name: self.resource_name.clone(),
                resource_documentation: self.resource_documentation.clone(),
                ..ResourceMetadata::default()
            };
            let pr = ProtectedResourceConfig::new(&metadata, true, self.ttl).map_err(|e| {
                let flag = match e.field {
                    "scopes_supported" => "--resource-scopes",
                    "bearer_methods_supported" => "--resource-bearer-methods",
                    "resource_documentation" => "--resource-documentation",
                    "authorization_servers" => "--issuer",
                    _ => "--resource",
                };
                usage_error(format!("invalid value for '{flag}': {e}"))
            })?;
            protected_resources.push(pr);
        }
        Ok(Documents {
            documents,
            templates,
            protected_resources,
            state_dir: None,
            proxies: Vec::new(),
        })
    }
}

impl Cli {
    /// `--upstream` as given; otherwise, with `--demo`, the demo server's
    /// address, so `--demo --demo-listen ADDR` serves what the demo
    /// publishes; otherwise [`DEFAULT_UPSTREAM`].
    fn upstream_url(&self) -> String {
        match &self.upstream {
            Some(upstream) => upstream.clone(),
            None if self.demo => demo_url(self.demo_listen),
            None => DEFAULT_UPSTREAM.to_string(),
        }
    }
}

/// The upstream when neither `--upstream` nor `--demo` says otherwise.
pub const DEFAULT_UPSTREAM: &str = "http://localhost:7788";

/// The URL the gateway reaches a demo server listening on `addr` at:
/// `localhost` for a loopback or unspecified address (as a browser or curl
/// user would type it), the address itself otherwise.
pub fn demo_url(addr: SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// A clap usage error (exit code 2) with `message`.
pub(crate) fn usage_error(message: String) -> clap::Error {
    Cli::command().error(ErrorKind::ValueValidation, message)
}

/// `--upstream`: a base URL, or a template with `{tenant}` in its path.
fn parse_upstream(value: &str) -> Result<String, String> {
    if documents::is_template(value) {
        crate::discovery::split_template_url(value)?;
        return Ok(value.to_string());
    }
    parse_base_url(value).map(|_| value.to_string())
}

/// An http(s) URL with a host, no query and no fragment (the upstream base).
fn parse_base_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    // The path rules of well-known URIs (no `..`, `//`, `%`...), checked on
    // the text as typed: the URL crate would quietly resolve `..`.
    crate::discovery::split_url(value)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry credentials".to_string());
    }
    Ok(url)
}

/// RFC 8414 §2: an issuer is an https URL (http tolerated for local setups)
/// with no query or fragment. Kept as typed, since §3.3 compares it exactly.
fn parse_issuer(value: &str) -> Result<String, String> {
    if documents::is_template(value) {
        crate::discovery::split_template_url(value)?;
    } else {
        parse_base_url(value)?;
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AS_METADATA_PATH;
    use crate::upstream::proxy_rules::ProxyEnv;

    /// Strings to compare with literals.
    fn strs<S: AsRef<str>>(v: &[S]) -> Vec<&str> {
        v.iter().map(AsRef::as_ref).collect()
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut full = vec!["oauth-metadata-gateway"];
        full.extend_from_slice(args);
        Cli::config_from_args(full)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.documents.documents.len(), 1);
        let d = &c.documents.documents[0];
        assert_eq!(&*d.name, "oauth-authorization-server");
        assert_eq!(strs(&d.routes), [AS_METADATA_PATH]);
        assert_eq!(
            strs(&d.upstream_urls.to_strings()),
            [
                "http://localhost:7788/.well-known/oauth-authorization-server",
                "http://localhost:7788/.well-known/openid-configuration"
            ]
        );
        assert_eq!(d.issuer.as_str(), "http://localhost:7788");
        assert_eq!(d.ttl, Duration::from_secs(300));
        assert_eq!(d.max_stale, Duration::from_secs(24 * 3600));
        assert!(c.documents.protected_resources.is_empty());
        assert_eq!(c.upstream.timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.max_body_size, 256 * 1024);
        assert_eq!(c.upstream.backoff_max, Duration::from_secs(30));
        assert!(c.demo.is_none());
        assert!(!c.no_cache);
    }

    #[test]
    fn demo_listen_is_the_upstream_unless_one_is_given() {
        let issuer = |args: &[&str]| {
            parse(args).unwrap().documents.documents[0]
                .issuer
                .as_str()
                .to_string()
        };
        assert_eq!(issuer(&["--demo"]), "http://localhost:7788");
        // A loopback or unspecified address is written `localhost`.
        for (listen, want) in [
            ("127.0.0.1:18961", "http://localhost:18961"),
            ("[::1]:5", "http://localhost:5"),
            ("0.0.0.0:6", "http://localhost:6"),
            ("10.1.2.3:7", "http://10.1.2.3:7"),
        ] {
            assert_eq!(
                issuer(&["--demo", "--demo-listen", listen]),
                want,
                "{listen}"
            );
        }
        // Explicit flags win; without --demo, --demo-listen changes nothing.
        assert_eq!(
            issuer(&[
                "--demo",
                "--demo-listen",
                "127.0.0.1:18961",
                "--upstream",
                "http://as.test"
            ]),
            "http://as.test"
        );
        assert_eq!(
            issuer(&["--demo-listen", "127.0.0.1:18961"]),
            "http://localhost:7788"
        );
        let c = parse(&[
            "--demo",
            "--demo-listen",
            "127.0.0.1:18961",
            "--issuer",
            "http://as.test/t1",
        ])
        .unwrap();
        let d = &c.documents.documents[0];
        assert_eq!(d.issuer.as_str(), "http://as.test/t1");
        // The upstream is the issuer as seen from the gateway: the demo's
        // address, where it publishes the document of that issuer.
        assert_eq!(
            d.upstream_urls.first().unwrap().as_str(),
            "http://localhost:18961/.well-known/oauth-authorization-server"
        );
        assert_eq!(&*d.routes[0], "/.well-known/oauth-authorization-server/t1");
    }

    #[test]
    fn no_cache_flag() {
        assert!(parse(&["--no-cache"]).unwrap().no_cache);
    }

    #[test]
    fn upstream_with_trailing_slash_or_path_builds_the_fetch_url() {
        let c = parse(&["--upstream", "https://as.example.com/"]).unwrap();
        assert_eq!(
            c.documents.documents[0]
                .upstream_urls
                .first()
                .unwrap()
                .as_str(),
            "https://as.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            c.documents.documents[0].issuer.as_str(),
            "https://as.example.com"
        );
        // RFC 8414 §3.1: the well-known suffix goes before the issuer path.
        let c = parse(&["--upstream", "https://as.example.com/tenant1"]).unwrap();
        let d = &c.documents.documents[0];
        assert_eq!(d.issuer.as_str(), "https://as.example.com/tenant1");
        assert_eq!(
            strs(&d.routes),
            ["/.well-known/oauth-authorization-server/tenant1"]
        );
        assert_eq!(
            strs(&d.upstream_urls.to_strings()),
            [
                "https://as.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://as.example.com/.well-known/openid-configuration/tenant1",
                "https://as.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(&*d.name, "oauth-authorization-server/tenant1");
    }

    #[test]
    fn durations_and_sizes_parse() {
        let c = parse(&[
            "--ttl",
            "2s",
            "--max-stale",
            "5m",
            "--upstream-timeout",
            "250ms",
            "--max-body-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(c.documents.documents[0].ttl, Duration::from_secs(2));
        assert_eq!(c.documents.documents[0].max_stale, Duration::from_secs(300));
        assert_eq!(c.upstream.timeout, Duration::from_millis(250));
        assert_eq!(c.upstream.max_body_size, 1024 * 1024);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--ttl", "soon"], "--ttl"),
            (vec!["--ttl", "0s"], "--ttl"),
            (vec!["--listen", "nowhere"], "--listen"),
            (vec!["--upstream", "ftp://x"], "--upstream"),
            (vec!["--upstream", "not a url"], "--upstream"),
            (vec!["--issuer", "https://a/?q=1"], "--issuer"),
            (vec!["--max-body-size", "12 parsecs"], "--max-body-size"),
            (vec!["--workers", "0"], "--workers"),
            (
                vec!["--upstream-ca", "/nonexistent/ca.pem"],
                "--upstream-ca",
            ),
            (
                vec!["--retry-backoff-min", "1m", "--retry-backoff-max", "1s"],
                "--retry-backoff-min",
            ),
        ] {
            let err = parse(&args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(flag), "{args:?}: {text}");
        }
    }

    #[test]
    fn issuer_served_from_an_internal_upstream() {
        let c = parse(&[
            "--upstream",
            "http://auth.internal:8080/t1",
            "--issuer",
            "https://auth.example.com/t1",
            "--openid-configuration",
        ])
        .unwrap();
        assert_eq!(c.documents.documents.len(), 2);
        assert_eq!(
            c.documents.documents[0]
                .upstream_urls
                .first()
                .unwrap()
                .as_str(),
            "http://auth.internal:8080/.well-known/oauth-authorization-server/t1"
        );
        assert_eq!(&*c.documents.documents[1].name, "openid-configuration/t1");
        assert_eq!(
            strs(&c.documents.documents[1].routes),
            [
                "/.well-known/openid-configuration/t1",
                "/t1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn resource_flags_build_protected_resource_metadata() {
        let c = parse(&[
            "--issuer",
            "https://auth.example.com",
            "--resource",
            "https://mcp.example.com/mcp",
            "--resource-scopes",
            "mcp:tools,mcp:resources",
            "--resource-bearer-methods",
            "header",
            "--resource-name",
            "Example",
        ])
        .unwrap();
        let pr = &c.documents.protected_resources[0];
        assert_eq!(
            strs(&pr.routes),
            [
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource"
            ]
        );
        let v: serde_json::Value = serde_json::from_slice(&pr.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://auth.example.com"],
                "scopes_supported": ["mcp:tools", "mcp:resources"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Example",
            })
        );
    }

    #[test]
    fn short_form_errors_name_the_flag() {
        for (args, flag) in [
            (vec!["--resource", "mcp.example.com"], "--resource"),
            (
                vec![
                    "--resource",
                    "https://m/mcp",
                    "--resource-bearer-methods",
                    "cookie",
                ],
                "--resource-bearer-methods",
            ),
            (vec!["--resource-scopes", "a"], "--resource"),
            (vec!["--upstream", "https://a/x/../y"], "--upstream"),
            (vec!["--issuer", "https://a/x//y"], "--issuer"),
            (
                vec!["--config", "/x.toml", "--upstream", "https://a"],
                "--upstream",
            ),
            (vec!["--config", "/nonexistent/gw.toml"], "--config"),
        ] {
            let err = parse(&args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_issuer_template_from_the_flags() {
        let c = parse(&[
            "--issuer",
            "https://auth.example.com/realms/{tenant}",
            "--upstream",
            "http://keycloak:8080/realms/{tenant}",
            "--max-tenants",
            "50",
        ])
        .unwrap();
        assert!(c.documents.documents.is_empty());
        let t = &c.documents.templates[0];
        assert_eq!(t.max_tenants, 50);
        assert_eq!(t.max_tenants_on_disk, 5000, "100 × --max-tenants");
        let with_disk = parse(&[
            "--issuer",
            "https://auth.example.com/realms/{tenant}",
            "--upstream",
            "http://keycloak:8080/realms/{tenant}",
            "--max-tenants",
            "50",
            "--max-tenants-on-disk",
            "70",
        ])
        .unwrap();
        assert_eq!(with_disk.documents.templates[0].max_tenants_on_disk, 70);
        assert_eq!(
            t.upstream_urls[0].render("a"),
            "http://keycloak:8080/.well-known/oauth-authorization-server/realms/a"
        );
        for (args, flag) in [
            (vec!["--issuer", "https://a/realms/{tenant}"], "--upstream"),
            (vec!["--upstream", "http://k/{tenant}x"], "--upstream"),
            (
                vec![
                    "--issuer",
                    "https://a/{tenant}",
                    "--upstream",
                    "http://k/{tenant}",
                    "--resource",
                    "https://m/mcp",
                ],
                "--resource",
            ),
            (vec!["--max-tenants", "0"], "--max-tenants"),
            (
                vec!["--max-tenants", "10", "--max-tenants-on-disk", "9"],
                "--max-tenants-on-disk",
            ),
            (
                vec!["--upstream-concurrency", "0"],
                "--upstream-concurrency",
            ),
        ] {
            let err = parse(&args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    fn proxy_env(pairs: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn parse_env(args: &[&str], env: &ProxyEnv) -> Result<Config, clap::Error> {
        let mut full = vec!["oauth-metadata-gateway"];
        full.extend_from_slice(args);
        Cli::config_from_args_env(full, env)
    }

    #[test]
    fn proxy_flags_and_environment() {
        let env = proxy_env(&[("HTTPS_PROXY", "http://u:s3cretpw@proxy.corp:3128")]);
        let c = parse_env(&["--upstream", "https://as.example.com"], &env).unwrap();
        let p = c
            .upstream
            .proxy
            .proxy_for(&c.documents.documents[0].upstream_urls.first().unwrap());
        assert_eq!(p.unwrap().to_string(), "http://u:***@proxy.corp:3128");
        assert!(!format!("{c:?}").contains("s3cretpw"));
        let c = parse_env(
            &[
                "--upstream",
                "https://as.example.com",
                "--upstream-no-proxy",
                "example.com",
            ],
            &env,
        )
        .unwrap();
        assert!(c
            .upstream
            .proxy
            .proxy_for("https://as.example.com/x")
            .is_none());
        let c = parse_env(
            &[
                "--upstream",
                "https://as.example.com",
                "--upstream-proxy",
                "none",
            ],
            &env,
        )
        .unwrap();
        assert!(c
            .upstream
            .proxy
            .proxy_for("https://as.example.com/x")
            .is_none());
        // The process environment is not read by config_from_args_env.
        let c = parse_env(
            &["--upstream", "https://as.example.com"],
            &ProxyEnv::default(),
        )
        .unwrap();
        assert!(!c.upstream.proxy.rules().any());
    }

    #[test]
    fn the_demo_server_is_never_proxied() {
        let env = proxy_env(&[("http_proxy", "http://proxy.corp:3128")]);
        let c = parse_env(&["--demo"], &env).unwrap();
        let demo_url = c.documents.documents[0].upstream_urls.first().unwrap();
        assert!(demo_url.starts_with("http://localhost:7788/"), "{demo_url}");
        assert!(c.upstream.proxy.proxy_for(&demo_url).is_none());
        assert!(c
            .upstream
            .proxy
            .proxy_for("http://127.0.0.1:7788/x")
            .is_none());
        // Loopback is not special otherwise (as in curl).
        assert!(c
            .upstream
            .proxy
            .proxy_for("http://localhost:7789/x")
            .is_some());
        let c = parse_env(&[], &env).unwrap();
        assert!(c.upstream.proxy.proxy_for(&demo_url).is_some());
    }

    #[test]
    fn bad_proxy_values_name_the_source_without_the_password() {
        for (args, env, source) in [
            (
                vec!["--upstream-proxy", "socks5://u:s3cretpw@p:1080"],
                vec![],
                "--upstream-proxy",
            ),
            (
                vec!["--upstream-proxy", "https://u:s3cretpw@p"],
                vec![],
                "--upstream-proxy",
            ),
            (
                vec!["--upstream-proxy", "http://u:s3cretpw@p:http"],
                vec![],
                "--upstream-proxy",
            ),
            (
                vec![],
                vec![("ALL_PROXY", "socks5h://u:s3cretpw@p")],
                "ALL_PROXY",
            ),
            (
                vec!["--upstream-no-proxy", "a..b"],
                vec![],
                "--upstream-no-proxy",
            ),
            (vec![], vec![("no_proxy", "10.0.0.0/40")], "no_proxy"),
        ] {
            let err = parse_env(&args, &proxy_env(&env)).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(source), "{args:?}: {text}");
            assert!(!text.contains("s3cretpw"), "{args:?}: {text}");
        }
        let cli = Cli::try_parse_from([
            "oauth-metadata-gateway",
            "--upstream-proxy",
            "http://u:s3cretpw@p",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("s3cretpw"));
    }
}
