//! Which forward proxy an upstream URL is fetched through: pure rules, no
//! I/O, no crate imports (the configuration layer builds them, the fetcher
//! applies them).
//!
//! Enterprise networks reach identity providers only through a forward
//! proxy, and operators configure it the way they configure curl. So the
//! rules are curl's:
//!
//! - an explicit proxy (`--upstream-proxy`, or `proxy = ...` on a server in
//!   the config file) wins; `none` turns proxying off for that scope;
//! - otherwise the environment: `https_proxy`/`HTTPS_PROXY` for https
//!   upstreams, `http_proxy` (and `HTTP_PROXY`, except when
//!   `REQUEST_METHOD` is set: a CGI request could set it through a
//!   `Proxy:` header, "httpoxy") for http ones, `all_proxy`/`ALL_PROXY` as
//!   the fallback; lower case first, an empty variable counts as unset;
//! - `no_proxy`/`NO_PROXY` (or `--upstream-no-proxy`, which replaces them)
//!   lists hosts fetched directly, whichever proxy would be used: host
//!   suffixes (`corp` and `.corp` match `corp` and every subdomain), exact
//!   IP addresses, CIDR blocks (matched against literal IP hosts only, no
//!   DNS lookup) and `*` for every host; loopback is not special;
//! - a proxy URL is `http://[user[:password]@]host[:port]` (a missing
//!   scheme means http, a missing port 1080, as in curl); https and SOCKS
//!   proxies are refused with a clear error.
//!
//! Credentials come from the URL's userinfo, percent-decoded; the only
//! place they go is the `Proxy-Authorization` header of a CONNECT. A
//! [`ProxyUrl`] shows itself as `http://user:***@host:port` in every
//! `Display` and `Debug`, and errors about a value never quote its
//! password (they show [`redact`]ed text).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;

/// curl's port for a proxy URL that names none.
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// The word that turns proxying off (`--upstream-proxy none`, `proxy = "none"`).
pub const NONE: &str = "none";

/// Environment variables the rules read (and tests clear).
pub const ENV_VARS: [&str; 9] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
];

/// A value that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An HTTP forward proxy, parsed and checked. Displays (and debugs) as
/// `http://user:***@host:port`: the password never leaves it except as
/// the `Proxy-Authorization` value of a CONNECT.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    /// Host as `url` normalises it (lower case, IPv6 in brackets).
    host: String,
    port: u16,
    /// The user name as typed (still percent-encoded), for display.
    user: Option<String>,
    /// `Basic base64(user:password)` (RFC 7617), when credentials are given.
    authorization: Option<Secret>,
}

impl ProxyUrl {
    /// Parses a proxy URL. Errors never contain the password.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        let shown = redact(value);
        if value.is_empty() {
            return Err("empty proxy URL".to_string());
        }
        let (scheme, rest) = match value.split_once("://") {
            Some((s, rest)) => (s.to_ascii_lowercase(), rest),
            None => ("http".to_string(), value),
        };
        match scheme.as_str() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "{shown}: https:// proxies (TLS to the proxy) are not supported; use an http:// proxy URL (tunnels to https upstreams are still end-to-end TLS)"
                ))
            }
            s if s.starts_with("socks") => {
                return Err(format!(
                    "{shown}: SOCKS proxies are not supported; use an http:// proxy URL (HTTP CONNECT)"
                ))
            }
            other => {
                return Err(format!(
                    "{shown}: unsupported proxy scheme {other:?}; use an http:// proxy URL"
                ))
            }
        }
        // The userinfo ends at the last `@` (a password may hold one only
        // percent-encoded, but be lenient about where the host starts).
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
        let (authority, tail) = hostpart.split_at(end);
        if !(tail.is_empty() || tail == "/") {
            return Err(format!(
                "{shown}: a proxy URL is only scheme, credentials, host and port (no path, query or fragment)"
            ));
        }
        let (host, port) = split_host_port(authority).map_err(|e| format!("{shown}: {e}"))?;
        let (user, authorization) = match userinfo {
            None => (None, None),
            Some(info) => {
                if info.contains(['/', '?', '#']) {
                    return Err(format!(
                        "{shown}: characters such as / ? # @ in the user name or password must be percent-encoded"
                    ));
                }
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, p),
                    None => (info, ""),
                };
                let user_decoded =
                    decode(user).map_err(|e| format!("{shown}: the user name {e}"))?;
                let password =
                    decode(password).map_err(|e| format!("{shown}: the password {e}"))?;
                if user_decoded.contains(':') {
                    // RFC 7617 §2: the user-id cannot contain a colon.
                    return Err(format!(
                        "{shown}: the user name must not contain a colon (RFC 7617 §2)"
                    ));
                }
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user_decoded}:{password}"));
                (
                    Some(user.to_string()),
                    Some(Secret(format!("Basic {token}"))),
                )
            }
        };
        Ok(Self {
            host,
            port,
            user,
            authorization,
        })
    }

    /// The proxy's host (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Proxy-Authorization` value, when the URL has credentials.
    pub fn authorization(&self) -> Option<&Secret> {
        self.authorization.as_ref()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}:***@")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// `raw` with everything between the scheme and the last `@` hidden, for
/// error messages about a value that may hold a password:
/// `http://u:secret@p:3128` → `http://***@p:3128`. Without an `@`, a
/// "port" that is not a number may be a password typed without its host
/// (`http://alice:secret`), so it is hidden too: `http://alice:***`.
pub fn redact(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    match raw.rfind('@') {
        Some(at) => format!("{}***{}", &raw[..start.min(at)], &raw[at..]),
        None => {
            let end = raw[start..]
                .find(['/', '?', '#'])
                .map_or(raw.len(), |i| start + i);
            match raw[start..end].rfind(':') {
                Some(colon)
                    if !raw[start + colon + 1..end]
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
                {
                    format!("{}***{}", &raw[..start + colon + 1], &raw[end..])
                }
                _ => raw.to_string(),
            }
        }
    }
}

/// Percent-decodes userinfo (RFC 3986 §2.1) into UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err("has a % that is not followed by two hex digits".to_string());
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "is not UTF-8 once percent-decoded".to_string())
}

/// `host[:port]` of a proxy URL, port 1080 when absent.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| "an IPv6 host needs its closing ]".to_string())?;
        let after = &rest[close + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "unexpected text after the IPv6 host".to_string())?,
            ),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the proxy URL has no host".to_string());
    }
    let host = url::Host::parse(host)
        .map_err(|e| format!("the proxy host is not valid ({e})"))?
        .to_string();
    let port = match port {
        None | Some("") => DEFAULT_PROXY_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| "the proxy port is not a port number (1-65535)".to_string())?,
    };
    Ok((host, port))
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    /// `*`: every host.
    All,
    /// A domain: the host itself and its subdomains (on that port only,
    /// when one is given).
    Domain(String, Option<u16>),
    /// An exact IP address (on that port only, when one is given).
    Ip(IpAddr, Option<u16>),
    /// A CIDR block: literal IP hosts within it.
    Cidr(IpAddr, u8),
}

/// A parsed `NO_PROXY` list: which hosts are fetched directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

impl NoProxy {
    /// Parses a comma- (or space-) separated list. Entries that are
    /// neither an IP, a CIDR block nor a host name are refused.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in list.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
            entries.push(Self::entry(raw)?);
        }
        Ok(Self { entries })
    }

    fn entry(raw: &str) -> Result<NoProxyEntry, String> {
        if raw == "*" {
            return Ok(NoProxyEntry::All);
        }
        if let Some((ip, bits)) = raw.split_once('/') {
            let ip = strip_brackets(ip)
                .parse::<IpAddr>()
                .map_err(|_| format!("{raw:?} is not a CIDR block (address/bits)"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{raw:?}: the prefix length must be 0-{max}"))?;
            return Ok(NoProxyEntry::Cidr(ip, bits));
        }
        if let Ok(ip) = strip_brackets(raw).parse::<IpAddr>() {
            return Ok(NoProxyEntry::Ip(ip, None));
        }
        // `host:port` and `[v6]:port` (as Go and many tools write them):
        // that port only.
        let (raw, port) = match raw.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || (h.starts_with('[') && h.ends_with(']')) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{raw:?}: the port must be 1-65535"))?;
                (h, Some(port))
            }
            _ => (raw, None),
        };
        if let Ok(ip) = strip_brackets(raw).parse::<IpAddr>() {
            return Ok(NoProxyEntry::Ip(ip, port));
        }
        // `.corp` and `*.corp` mean the same as `corp` (curl strips the dot).
        let domain = raw
            .strip_prefix("*.")
            .or_else(|| raw.strip_prefix('.'))
            .unwrap_or(raw)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(format!(
                "{raw:?} is not a host name, domain suffix, IP address, CIDR block or *"
            ));
        }
        Ok(NoProxyEntry::Domain(domain, port))
    }

    /// True when `host` (as in a URL: IPv6 in brackets) on `port` is
    /// fetched directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = strip_brackets(&host).parse::<IpAddr>().ok();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.entries.iter().any(|e| match e {
            NoProxyEntry::All => true,
            NoProxyEntry::Ip(a, p) => ip == Some(*a) && port_ok(p),
            NoProxyEntry::Cidr(net, bits) => ip.is_some_and(|ip| in_cidr(ip, *net, *bits)),
            NoProxyEntry::Domain(d, p) => {
                ip.is_none()
                    && port_ok(p)
                    && (host == *d
                        || host
                            .strip_suffix(d.as_str())
                            .is_some_and(|prefix| prefix.ends_with('.')))
            }
        })
    }

    /// True when the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The proxy variables of an environment, read once by the command line
/// and handed down (so everything below is testable without touching the
/// process environment).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    vars: Vec<(&'static str, String)>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| *k).collect();
        write!(f, "ProxyEnv({names:?})")
    }
}

impl ProxyEnv {
    /// Builds it from `lookup` (e.g. `|k| std::env::var(k).ok()`), keeping
    /// only the variables in [`ENV_VARS`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let vars = ENV_VARS
            .iter()
            .filter_map(|k| lookup(k).map(|v| (*k, v)))
            .collect();
        Self { vars }
    }

    /// The value of `name` when set and not empty.
    fn get(&self, name: &str) -> Option<(&'static str, &str)> {
        self.vars
            .iter()
            .find(|(k, v)| *k == name && !v.trim().is_empty())
            .map(|(k, v)| (*k, v.as_str()))
    }

    fn first(&self, names: &[&str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|n| self.get(n))
    }
}

/// An explicit proxy choice: a proxy, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    /// Fetch directly.
    Off,
    /// Fetch through this proxy.
    Via(Arc<ProxyUrl>),
}

impl ProxySetting {
    /// `none` (any case) or a proxy URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().eq_ignore_ascii_case(NONE) {
            Ok(Self::Off)
        } else {
            ProxyUrl::parse(raw).map(|p| Self::Via(Arc::new(p)))
        }
    }

    fn proxy(&self) -> Option<&Arc<ProxyUrl>> {
        match self {
            Self::Off => None,
            Self::Via(p) => Some(p),
        }
    }
}

impl fmt::Display for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str(NONE),
            Self::Via(p) => p.fmt(f),
        }
    }
}

/// `scheme://host:port` of an upstream, the unit a proxy choice applies
/// to (per-server proxies, the demo server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an http(s) URL; `None` for anything else.
    pub fn of(url: &str) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: u.scheme().to_string(),
            host: u.host_str()?.to_ascii_lowercase(),
            port: u.port_or_known_default()?,
        })
    }

    /// The host, as in the URL (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Where a rule came from, for errors: a flag, a variable or a file key.
pub type Source = &'static str;

/// The process-wide rules: a proxy per upstream scheme and the hosts that
/// skip it, from the flags or the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    /// For `http://` upstreams.
    http: Option<Arc<ProxyUrl>>,
    /// For `https://` upstreams.
    https: Option<Arc<ProxyUrl>>,
    /// Hosts fetched directly.
    no_proxy: NoProxy,
    /// Where each choice came from, for the start-up log line.
    http_source: Option<Source>,
    https_source: Option<Source>,
}

/// A proxy rule that cannot be used: `source` names the flag or variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxy {
    /// The flag or environment variable the value came from.
    pub source: Source,
    /// What is wrong (never the password).
    pub message: String,
}

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for '{}': {}", self.source, self.message)
    }
}

impl ProxyRules {
    /// The rules from the explicit flags (`explicit`: `--upstream-proxy`,
    /// `no_proxy`: `--upstream-no-proxy`) and, where they are absent, the
    /// environment, as curl reads it.
    pub fn resolve(
        explicit: Option<&str>,
        no_proxy: Option<&str>,
        env: &ProxyEnv,
    ) -> Result<Self, InvalidProxy> {
        let invalid = |source: Source| move |message: String| InvalidProxy { source, message };
        let mut rules = Self::default();
        match explicit {
            Some(raw) => {
                let setting = ProxySetting::parse(raw).map_err(invalid("--upstream-proxy"))?;
                if let Some(p) = setting.proxy() {
                    rules.http = Some(p.clone());
                    rules.https = Some(p.clone());
                    rules.http_source = Some("--upstream-proxy");
                    rules.https_source = Some("--upstream-proxy");
                }
            }
            None => {
                let parse = |(name, raw): (Source, &str)| {
                    ProxyUrl::parse(raw)
                        .map(|p| (Arc::new(p), name))
                        .map_err(invalid(name))
                };
                let fallback = env.first(&["all_proxy", "ALL_PROXY"]);
                let https = env.first(&["https_proxy", "HTTPS_PROXY"]).or(fallback);
                // httpoxy: under CGI, HTTP_PROXY may come from a request header.
                let http_names: &[&str] = if env.get("REQUEST_METHOD").is_some() {
                    &["http_proxy"]
                } else {
                    &["http_proxy", "HTTP_PROXY"]
                };
                let http = env.first(http_names).or(fallback);
                if let Some((p, name)) = https.map(parse).transpose()? {
                    rules.https = Some(p);
                    rules.https_source = Some(name);
                }
                if let Some((p, name)) = http.map(parse).transpose()? {
                    rules.http = Some(p);
                    rules.http_source = Some(name);
                }
            }
        }
        rules.no_proxy = match no_proxy {
            Some(list) => NoProxy::parse(list).map_err(invalid("--upstream-no-proxy"))?,
            None => match env.first(&["no_proxy", "NO_PROXY"]) {
                Some((name, list)) => NoProxy::parse(list).map_err(invalid(name))?,
                None => NoProxy::default(),
            },
        };
        Ok(rules)
    }

    /// True when some upstream may be fetched through a proxy.
    pub fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// One line for the start-up log: each proxy (redacted) and its source.
    pub fn describe(&self) -> String {
        let one = |p: &Option<Arc<ProxyUrl>>, s: Option<Source>| match (p, s) {
            (Some(p), Some(s)) => format!("{p} (from {s})"),
            (Some(p), None) => p.to_string(),
            _ => "direct".to_string(),
        };
        format!(
            "https upstreams: {}; http upstreams: {}; no_proxy: {} entries",
            one(&self.https, self.https_source),
            one(&self.http, self.http_source),
            self.no_proxy.entries.len()
        )
    }

    /// The proxy for `url` under these rules alone, before the per-server
    /// choices and the direct origins of [`ProxyRoutes`].
    fn by_scheme(&self, scheme: &str) -> Option<&Arc<ProxyUrl>> {
        match scheme {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }
    }
}

/// The full routing: the process-wide [`ProxyRules`], per-origin choices
/// (a config-file server's `proxy`), and origins always fetched directly
/// (the `--demo` server). Cheap to consult per fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRoutes {
    rules: ProxyRules,
    overrides: Vec<(Origin, ProxySetting)>,
    direct: Vec<Origin>,
}

impl ProxyRoutes {
    /// Routing by `rules` alone.
    pub fn new(rules: ProxyRules) -> Self {
        Self {
            rules,
            overrides: Vec::new(),
            direct: Vec::new(),
        }
    }

    /// Adds an origin that is never fetched through a proxy.
    pub fn with_direct(mut self, origin: Origin) -> Self {
        if !self.direct.contains(&origin) {
            self.direct.push(origin);
        }
        self
    }

    /// The same rules with these per-origin choices instead of the
    /// previous ones (a config reload).
    pub fn with_overrides(&self, overrides: Vec<(Origin, ProxySetting)>) -> Self {
        Self {
            rules: self.rules.clone(),
            overrides,
            direct: self.direct.clone(),
        }
    }

    /// The process-wide rules.
    pub fn rules(&self) -> &ProxyRules {
        &self.rules
    }

    /// The proxy `url` is fetched through, or `None` for a direct fetch.
    /// `NO_PROXY` applies to every proxy, per-server ones included.
    pub fn proxy_for(&self, url: &str) -> Option<Arc<ProxyUrl>> {
        if self.overrides.is_empty() && !self.rules.any() {
            return None; // no proxy anywhere: no URL to parse
        }
        let origin = Origin::of(url)?;
        if self.direct.contains(&origin) {
            return None;
        }
        let chosen = match self.overrides.iter().find(|(o, _)| *o == origin) {
            Some((_, setting)) => setting.proxy(),
            None => self.rules.by_scheme(&origin.scheme),
        }?;
        if self.rules.no_proxy.matches(&origin.host, origin.port) {
            return None;
        }
        Some(chosen.clone())
    }

    /// Every distinct proxy these routes can choose.
    pub fn proxies(&self) -> Vec<Arc<ProxyUrl>> {
        let mut all: Vec<Arc<ProxyUrl>> = Vec::new();
        let candidates = [&self.rules.http, &self.rules.https]
            .into_iter()
            .flatten()
            .chain(self.overrides.iter().filter_map(|(_, s)| s.proxy()));
        for p in candidates {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn route(rules: ProxyRules, url: &str) -> Option<String> {
        ProxyRoutes::new(rules)
            .proxy_for(url)
            .map(|p| p.to_string())
    }

    #[test]
    fn proxy_urls_parse_like_curl() {
        let p = ProxyUrl::parse("http://proxy.corp:3128").unwrap();
        assert_eq!((p.host(), p.port()), ("proxy.corp", 3128));
        assert!(p.authorization().is_none());
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        // No scheme: http. No port: 1080 (curl's default), even for ":".
        let p = ProxyUrl::parse("proxy.corp").unwrap();
        assert_eq!(p.port(), 1080);
        assert_eq!(
            ProxyUrl::parse("HTTP://Proxy.Corp:/").unwrap().to_string(),
            "http://proxy.corp:1080"
        );
        // An explicit :80 is kept (the url crate would drop it as the default).
        assert_eq!(ProxyUrl::parse("http://p:80").unwrap().port(), 80);
        let p = ProxyUrl::parse("http://[::1]:3128").unwrap();
        assert_eq!((p.host(), p.port()), ("[::1]", 3128));
        assert_eq!(
            ProxyUrl::parse("http://10.0.0.1").unwrap().host(),
            "10.0.0.1"
        );
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let p = ProxyUrl::parse("http://al%40ice:s%3Ae%2Fcr%40t@proxy:3128").unwrap();
        let header = p.authorization().unwrap().expose().to_string();
        let token = header.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        assert_eq!(decoded, b"al@ice:s:e/cr@t");
        assert_eq!(p.to_string(), "http://al%40ice:***@proxy:3128");
        let debug = format!("{p:?} {:?}", p.authorization());
        assert!(!debug.contains("cr") && !debug.contains(token), "{debug}");
        // A user without a password is Basic `user:`.
        let p = ProxyUrl::parse("http://bob@proxy:1").unwrap();
        let token = p
            .authorization()
            .unwrap()
            .expose()
            .strip_prefix("Basic ")
            .unwrap()
            .to_string();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(token)
                .unwrap(),
            b"bob:"
        );
        assert_eq!(p.to_string(), "http://bob:***@proxy:1");
        // Equal URLs with other credentials are other proxies (never pooled together).
        assert_ne!(
            ProxyUrl::parse("http://a:1@p:1").unwrap(),
            ProxyUrl::parse("http://a:2@p:1").unwrap()
        );
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_the_password() {
        for (raw, wanted) in [
            ("https://u:hunter2@p:3128", "https:// proxies"),
            ("socks5://u:hunter2@p:1080", "SOCKS"),
            ("socks5h://p:1080", "SOCKS"),
            ("ftp://u:hunter2@p", "unsupported proxy scheme"),
            ("http://u:hunter2@p:99999", "port"),
            ("http://u:hunter2@p:0", "port"),
            ("http://u:hunter2@p:x", "port"),
            ("http://alice:hunter2", "port"),
            ("https://alice:hunter2", "https:// proxies"),
            ("http://u:hunter2@:3128", "no host"),
            ("http://u:hunter2@p:3128/path", "no path"),
            ("http://u:hunter2@p:3128?q", "no path"),
            ("http://u:hun/ter2@p", "percent-encoded"),
            ("http://u:hunter2%zz@p", "two hex digits"),
            ("http://u:hunter2%ff@p", "not UTF-8"),
            ("http://u%3Ax:hunter2@p", "colon"),
            ("http://u:hunter2@[::1", "closing ]"),
            ("http://u:hunter2@p q", "not valid"),
            ("", "empty"),
        ] {
            let err = ProxyUrl::parse(raw).expect_err(raw);
            assert!(err.contains(wanted), "{raw}: {err}");
            assert!(
                !err.contains("hunter2") && !err.contains("hun/"),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn redaction_hides_everything_before_the_host() {
        assert_eq!(redact("http://u:pw@p:1"), "http://***@p:1");
        assert_eq!(redact("u:p@w@p:1"), "***@p:1");
        assert_eq!(redact("http://p:1"), "http://p:1");
        assert_eq!(redact("socks5://a@b:c@h"), "socks5://***@h");
        // No `@`: a non-numeric "port" may be a password without its host.
        assert_eq!(redact("http://alice:hunter2"), "http://alice:***");
        assert_eq!(redact("alice:hunter2/x"), "alice:***/x");
        assert_eq!(redact("http://p:3128/"), "http://p:3128/");
        assert_eq!(redact("[::1]:3128"), "[::1]:3128");
    }

    #[test]
    fn no_proxy_entries() {
        let n =
            NoProxy::parse("corp, .example.com,*.internal 10.0.0.0/8,192.168.1.5,[::1],fd00::/8")
                .unwrap();
        for host in [
            "corp",
            "a.corp",
            "A.B.CORP.",
            "example.com",
            "x.example.com",
            "internal",
            "k.internal",
            "10.1.2.3",
            "192.168.1.5",
            "[::1]",
            "[fd00::1]",
        ] {
            assert!(n.matches(host, 443), "{host}");
        }
        for host in [
            "notcorp",
            "corp.evil",
            "example.com.evil",
            "xexample.com",
            "11.0.0.1",
            "192.168.1.6",
            "[::2]",
            "[fe00::1]",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(!n.matches(host, 443), "{host}");
        }
        // CIDRs and IPs match literal IPs only: a name is never resolved.
        let n = NoProxy::parse("127.0.0.0/8").unwrap();
        assert!(n.matches("127.0.0.2", 80));
        assert!(!n.matches("localhost", 80));
        assert!(NoProxy::parse("*").unwrap().matches("anything.example", 1));
        assert!(NoProxy::parse("0.0.0.0/0").unwrap().matches("8.8.8.8", 1));
        assert!(NoProxy::parse("").unwrap().is_empty());
        // `host:port` entries (Go's form) match that port only.
        let n = NoProxy::parse("registry.corp:5000,10.0.0.1:8443,[::1]:9000").unwrap();
        assert!(n.matches("registry.corp", 5000) && n.matches("a.registry.corp", 5000));
        assert!(!n.matches("registry.corp", 443));
        assert!(n.matches("10.0.0.1", 8443) && !n.matches("10.0.0.1", 443));
        assert!(n.matches("[::1]", 9000) && !n.matches("[::1]", 443));
        for bad in [
            "10.0.0.0/33",
            "x/8",
            "a..b",
            "foo:bar",
            "foo:0",
            "foo:70000",
        ] {
            assert!(NoProxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_as_curl_reads_it() {
        let e = env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("HTTP_PROXY", "http://plain:2"),
        ]);
        let r = ProxyRules::resolve(None, None, &e).unwrap();
        assert_eq!(
            route(r.clone(), "https://as.example/x").as_deref(),
            Some("http://lower:1")
        );
        assert_eq!(
            route(r, "http://as.example/x").as_deref(),
            Some("http://plain:2")
        );
        // HTTP_PROXY is ignored under CGI (REQUEST_METHOD set); http_proxy is not.
        let e = env(&[("HTTP_PROXY", "http://plain:2"), ("REQUEST_METHOD", "GET")]);
        let r = ProxyRules::resolve(None, None, &e).unwrap();
        assert_eq!(route(r, "http://as.example/x"), None);
        let e = env(&[("http_proxy", "http://low:2"), ("REQUEST_METHOD", "GET")]);
        let r = ProxyRules::resolve(None, None, &e).unwrap();
        assert_eq!(
            route(r, "http://as.example/x").as_deref(),
            Some("http://low:2")
        );
        // ALL_PROXY is the fallback; an empty variable counts as unset.
        let e = env(&[("https_proxy", ""), ("ALL_PROXY", "http://all:3")]);
        let r = ProxyRules::resolve(None, None, &e).unwrap();
        assert_eq!(
            route(r.clone(), "https://a/").as_deref(),
            Some("http://all:3")
        );
        assert_eq!(route(r, "http://a/").as_deref(), Some("http://all:3"));
        // Nothing set: direct.
        let r = ProxyRules::resolve(None, None, &ProxyEnv::default()).unwrap();
        assert!(!r.any());
        assert_eq!(route(r, "https://a/"), None);
    }

    #[test]
    fn flags_replace_the_environment() {
        let e = env(&[
            ("HTTPS_PROXY", "http://env:1"),
            ("NO_PROXY", "skip.example"),
        ]);
        let r = ProxyRules::resolve(Some("http://flag:9"), None, &e).unwrap();
        assert_eq!(
            route(r.clone(), "https://a/").as_deref(),
            Some("http://flag:9")
        );
        assert_eq!(
            route(r.clone(), "http://a/").as_deref(),
            Some("http://flag:9")
        );
        // NO_PROXY from the environment applies to the explicit proxy too.
        assert_eq!(route(r, "https://skip.example/"), None);
        // --upstream-no-proxy replaces NO_PROXY.
        let r = ProxyRules::resolve(None, Some("other.example"), &e).unwrap();
        assert_eq!(
            route(r.clone(), "https://skip.example/").as_deref(),
            Some("http://env:1")
        );
        assert_eq!(route(r, "https://x.other.example/"), None);
        // `none` turns the environment's proxy off.
        let r = ProxyRules::resolve(Some("NONE"), None, &e).unwrap();
        assert_eq!(route(r, "https://a/"), None);
    }

    #[test]
    fn errors_name_their_source_and_hide_the_password() {
        let e = env(&[("HTTPS_PROXY", "socks5://u:hunter2@p")]);
        let err = ProxyRules::resolve(None, None, &e).unwrap_err();
        assert_eq!(err.source, "HTTPS_PROXY");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = ProxyRules::resolve(Some("https://u:hunter2@p"), None, &e).unwrap_err();
        assert_eq!(err.source, "--upstream-proxy");
        assert!(err.to_string().contains("https://***@p"), "{err}");
        let err = ProxyRules::resolve(None, Some("10.0.0.0/99"), &ProxyEnv::default()).unwrap_err();
        assert_eq!(err.source, "--upstream-no-proxy");
        let e = env(&[("no_proxy", "a..b")]);
        assert_eq!(
            ProxyRules::resolve(None, None, &e).unwrap_err().source,
            "no_proxy"
        );
    }

    #[test]
    fn per_origin_choices_and_direct_origins() {
        let rules = ProxyRules::resolve(
            Some("http://global:1"),
            Some("nope.example"),
            &ProxyEnv::default(),
        )
        .unwrap();
        let special = Arc::new(ProxyUrl::parse("http://special:2").unwrap());
        let routes = ProxyRoutes::new(rules)
            .with_direct(Origin::of("http://localhost:7788/x").unwrap())
            .with_overrides(vec![
                (
                    Origin::of("https://a.example").unwrap(),
                    ProxySetting::Via(special.clone()),
                ),
                (
                    Origin::of("https://b.example:8443").unwrap(),
                    ProxySetting::Off,
                ),
                (
                    Origin::of("https://nope.example").unwrap(),
                    ProxySetting::Via(special),
                ),
            ]);
        let p = |u: &str| routes.proxy_for(u).map(|p| p.to_string());
        assert_eq!(
            p("https://a.example/.well-known/x").as_deref(),
            Some("http://special:2")
        );
        assert_eq!(
            p("https://a.example:443/jwks").as_deref(),
            Some("http://special:2")
        );
        // Another port is another origin.
        assert_eq!(
            p("https://a.example:444/").as_deref(),
            Some("http://global:1")
        );
        assert_eq!(p("https://b.example:8443/"), None);
        assert_eq!(
            p("https://nope.example/"),
            None,
            "NO_PROXY beats a per-server proxy"
        );
        assert_eq!(p("http://localhost:7788/.well-known/x"), None, "the demo");
        assert_eq!(
            p("http://localhost:7789/"),
            Some("http://global:1".into()),
            "loopback is not special"
        );
        assert_eq!(routes.proxies().len(), 2);
    }
}
