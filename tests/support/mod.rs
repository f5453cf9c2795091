//! Test harness: a switchable upstream authorization server, a gateway
//! started in-process through `run`, and a small HTTP client. Every server
//! listens on 127.0.0.1 with an ephemeral port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth_metadata_gateway::{run, Cli};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

pub mod node;
pub mod pki;
pub mod process;

/// Environment variables that send a process's fetches through a forward
/// proxy: cleared for every gateway and `check` a test starts, so a
/// machine (or CI runner) behind a corporate proxy still passes.
pub const PROXY_VARS: [&str; 11] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
    "GATEWAY_UPSTREAM_PROXY",
    "GATEWAY_UPSTREAM_NO_PROXY",
];

/// Removes [`PROXY_VARS`] from `cmd`'s environment.
pub fn without_proxy_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The in-process configuration for `args` (the program name first), as
/// the binary would build it in an environment without proxy variables.
pub fn config_from_args<I, T>(args: I) -> Result<oauth_metadata_gateway::Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::config_from_args_env(
        args,
        &oauth_metadata_gateway::upstream::proxy_rules::ProxyEnv::default(),
    )
}

/// A realistic document, exactly as the reference server sends it (for an
/// issuer the test fills in).
pub fn document(issuer: &str) -> String {
    format!(
        r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/oauth/authorize","token_endpoint":"{issuer}/oauth/token","registration_endpoint":"{issuer}/oauth/register","scopes_supported":["user:read","entries:read"],"response_types_supported":["code"],"response_modes_supported":["query"],"grant_types_supported":["authorization_code","refresh_token"],"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","none"],"revocation_endpoint":"{issuer}/oauth/token","code_challenge_methods_supported":["plain","S256"]}}"#
    )
}

/// What the upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with this status, content type and body after `delay`.
    Respond {
        status: u16,
        content_type: String,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Read the request, then close the connection without answering.
    Close,
    /// A multi-tenant authorization server: a request for
    /// `<path_prefix><tenant>` is answered after `delay` with the
    /// document of issuer `<issuer_prefix><tenant>` ([`document`]); a
    /// tenant whose last segment starts with `missing` gets 404, any other
    /// path 404; one whose last segment starts with `slow` waits `slow` instead of `delay`.
    Tenants {
        path_prefix: String,
        issuer_prefix: String,
        delay: Duration,
        slow: Duration,
    },
}

impl Behaviour {
    /// [`Behaviour::Tenants`] for every tenant under `upstream`'s root:
    /// `<AS_PATH>/<tenant>` answers issuer `<base_url>/<tenant>`.
    pub fn tenants(base_url: &str, delay: Duration) -> Self {
        Self::Tenants {
            path_prefix: format!("{AS_PATH}/"),
            issuer_prefix: format!("{base_url}/"),
            delay,
            slow: delay,
        }
    }

    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self::Respond {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A bare `304 Not Modified` (no body, no validators) whatever the
    /// request asked: an upstream that claims a document is unchanged
    /// when the gateway never had validators to offer.
    pub fn not_modified() -> Self {
        Self::Respond {
            status: 304,
            content_type: "application/json".into(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Self {
        Self::Respond {
            status,
            content_type: "application/json".into(),
            body: br#"{"error":"server_error"}"#.to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_content_type(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::Respond {
            status: 200,
            content_type: content_type.into(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn delayed(self, d: Duration) -> Self {
        match self {
            Self::Respond {
                status,
                content_type,
                body,
                ..
            } => Self::Respond {
                status,
                content_type,
                body,
                delay: d,
            },
            other => other,
        }
    }
}

struct UpstreamState {
    behaviour: Mutex<Behaviour>,
    /// Behaviours for particular paths, overriding `behaviour`.
    by_path: Mutex<std::collections::HashMap<String, Behaviour>>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    paths: Mutex<Vec<String>>,
    /// Every request's header block (request line included), in order.
    heads: Mutex<Vec<String>>,
    /// Extra response headers on every answer.
    headers: Mutex<Vec<(String, String)>>,
    /// Extra response headers for particular paths, replacing `headers`.
    headers_by_path: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
    /// Validators given with every 200 and honoured in conditional requests.
    validators: Mutex<Validators>,
    /// `304 Not Modified` answers sent.
    not_modified: AtomicUsize,
    held: watch::Sender<bool>,
}

/// The validators the upstream gives with its 200s (RFC 9110 §8.8) and
/// checks conditional requests against (RFC 9110 §13.1.1, §13.1.3).
#[derive(Debug, Clone, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A test authorization server whose behaviour can be switched at any time.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub base_url: String,
    state: Arc<UpstreamState>,
}

impl Upstream {
    /// Plain-HTTP upstream serving `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_inner("127.0.0.1", behaviour, None).await
    }

    /// Plain-HTTP upstream on another loopback address (`127.0.0.2`...).
    pub async fn start_at(ip: &str, behaviour: Behaviour) -> Self {
        Self::start_inner(ip, behaviour, None).await
    }

    /// HTTPS upstream with the given rustls server config.
    pub async fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(
            "127.0.0.1",
            behaviour,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )
        .await
    }

    async fn start_inner(
        ip: &str,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let (held, _) = watch::channel(false);
        let state = Arc::new(UpstreamState {
            behaviour: Mutex::new(behaviour),
            by_path: Mutex::new(std::collections::HashMap::new()),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            paths: Mutex::new(Vec::new()),
            heads: Mutex::new(Vec::new()),
            headers: Mutex::new(Vec::new()),
            headers_by_path: Mutex::new(std::collections::HashMap::new()),
            validators: Mutex::new(Validators::default()),
            not_modified: AtomicUsize::new(0),
            held,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_connection(s, st).await;
                            }
                        }
                        None => serve_connection(stream, st).await,
                    }
                });
            }
        });
        Self {
            addr,
            base_url: format!("{scheme}://{addr}"),
            state,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Answers requests for exactly `path` with `behaviour` (other paths
    /// keep the general behaviour).
    pub fn set_path(&self, path: &str, behaviour: Behaviour) {
        self.state
            .by_path
            .lock()
            .unwrap()
            .insert(path.to_string(), behaviour);
    }

    /// Adds these headers to every answer (replacing earlier ones), e.g.
    /// `&[("cache-control", "max-age=30"), ("age", "5")]`.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.state.headers.lock().unwrap() = owned_headers(headers);
    }

    /// Adds these headers to answers for exactly `path`, instead of the
    /// ones of [`Upstream::set_headers`].
    pub fn set_path_headers(&self, path: &str, headers: &[(&str, &str)]) {
        self.state
            .headers_by_path
            .lock()
            .unwrap()
            .insert(path.to_string(), owned_headers(headers));
    }

    /// Revalidation: every 200 carries `ETag: <etag>` (when given); a
    /// request whose `If-None-Match` lists that tag gets `304 Not
    /// Modified` with no body (plus the extra headers and the ETag).
    pub fn set_etag(&self, etag: Option<&str>) {
        self.state.validators.lock().unwrap().etag = etag.map(str::to_string);
    }

    /// Revalidation by date: every 200 carries `Last-Modified: <date>`
    /// (when given); a request without `If-None-Match` whose
    /// `If-Modified-Since` is that date or later gets `304 Not Modified`.
    pub fn set_last_modified(&self, date: Option<&str>) {
        self.state.validators.lock().unwrap().last_modified = date.map(str::to_string);
    }

    /// `304 Not Modified` answers sent so far (revalidations and bare 304s).
    pub fn not_modified_sent(&self) -> usize {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    /// The header block of every request received so far (request line
    /// first), in arrival order.
    pub fn request_heads(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }

    /// Requests received so far (each is one upstream fetch).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests received and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received for exactly `path`.
    pub fn requests_for(&self, path: &str) -> usize {
        self.state
            .paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }

    /// Holds every answer until [`Upstream::release`].
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Waits until the upstream has received at least `n` requests.
    pub async fn wait_for_requests(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.requests() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream saw {} requests, expected {n} within {limit:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    st: Arc<UpstreamState>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let head = match head.find("\r\n\r\n") {
        Some(end) => head[..end].to_string(),
        None => head,
    };
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    st.paths.lock().unwrap().push(path.clone());
    st.heads.lock().unwrap().push(head.clone());
    st.requests.fetch_add(1, Ordering::SeqCst);
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut held = st.held.subscribe();
    let _ = held.wait_for(|h| !*h).await;
    let by_path = st.by_path.lock().unwrap().get(&path).cloned();
    let mut behaviour = by_path.unwrap_or_else(|| st.behaviour.lock().unwrap().clone());
    if let Behaviour::Tenants {
        path_prefix,
        issuer_prefix,
        delay,
        slow,
    } = &behaviour
    {
        behaviour = match path.strip_prefix(path_prefix.as_str()) {
            Some(t) if !last_segment(t).starts_with("missing") && !t.is_empty() => {
                let wait = if last_segment(t).starts_with("slow") {
                    *slow
                } else {
                    *delay
                };
                Behaviour::json(document(&format!("{issuer_prefix}{t}"))).delayed(wait)
            }
            _ => Behaviour::status(404).delayed(*delay),
        };
    }
    match behaviour {
        Behaviour::Close | Behaviour::Tenants { .. } => {}
        Behaviour::Respond {
            status,
            content_type,
            body,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            let extra = st
                .headers_by_path
                .lock()
                .unwrap()
                .get(&path)
                .cloned()
                .unwrap_or_else(|| st.headers.lock().unwrap().clone());
            let validators = st.validators.lock().unwrap().clone();
            let status = if status == 200 && validators.matches(&head) {
                304
            } else {
                status
            };
            let mut out = format!("HTTP/1.1 {status} X\r\n");
            if status == 304 {
                // RFC 9110 §15.4.5: no content; the validators and the
                // caching headers a 200 would have had.
                st.not_modified.fetch_add(1, Ordering::SeqCst);
            } else {
                out.push_str(&format!(
                    "content-type: {content_type}\r\ncontent-length: {}\r\n",
                    body.len()
                ));
            }
            if status == 200 || status == 304 {
                if let Some(tag) = &validators.etag {
                    out.push_str(&format!("etag: {tag}\r\n"));
                }
                if let Some(date) = &validators.last_modified {
                    out.push_str(&format!("last-modified: {date}\r\n"));
                }
            }
            for (k, v) in &extra {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("connection: close\r\n\r\n");
            let _ = stream.write_all(out.as_bytes()).await;
            if status != 304 {
                let _ = stream.write_all(&body).await;
            }
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        }
    }
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
}

impl Validators {
    /// Whether a request with this header block is answered 304: its
    /// `If-None-Match` lists the ETag (weak comparison), or it has no
    /// `If-None-Match` and its `If-Modified-Since` is not before
    /// `Last-Modified` (RFC 9110 §13.2.2: If-None-Match takes precedence).
    fn matches(&self, head: &str) -> bool {
        if let Some(inm) = header_of(head, "if-none-match") {
            let Some(tag) = &self.etag else {
                return false;
            };
            let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
            return inm
                .split(',')
                .any(|t| t.trim() == "*" || bare(t) == bare(tag));
        }
        match (header_of(head, "if-modified-since"), &self.last_modified) {
            (Some(since), Some(modified)) => {
                match (
                    httpdate::parse_http_date(&since),
                    httpdate::parse_http_date(modified),
                ) {
                    (Ok(since), Ok(modified)) => since >= modified,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

fn owned_headers(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of header `name` (case-insensitive) in a header block, as
/// [`Upstream::request_heads`] returns them; several fields of that name
/// are joined with ", ".
pub fn header_of(head: &str, name: &str) -> Option<String> {
    let values: Vec<&str> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `t` as an HTTP date (RFC 9110 §5.6.7), e.g. for `Date` and `Expires`.
pub fn http_date(t: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The delta-seconds value of `directive` in a `Cache-Control` value
/// (`max-age`, `stale-if-error`...), if present and numeric.
pub fn directive(cache_control: &str, directive: &str) -> Option<u64> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(directive)
            .then(|| v.trim().trim_matches('"').parse().ok())
            .flatten()
    })
}

/// The `ttl` parameter of a `Cache-Status` value (RFC 9211 §2.6).
pub fn cache_status_ttl(cache_status: &str) -> Option<i64> {
    cache_status
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl=")?.parse().ok())
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A gateway running in-process on an ephemeral port.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub base_url: String,
    /// The admin listener's base URL, when started with one.
    pub admin_url: Option<String>,
    reloads: tokio::sync::mpsc::UnboundedSender<()>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), oauth_metadata_gateway::RunError>>>,
}

impl TestGateway {
    /// Starts a gateway with these command-line arguments (the listener is
    /// the test's own `127.0.0.1:0`).
    pub async fn start(args: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(listener, args).await
    }

    /// Starts a gateway on a listener the test bound itself (so it can put
    /// the gateway's own address into the configuration).
    pub async fn start_on(listener: std::net::TcpListener, args: &[&str]) -> Self {
        Self::start_listeners(listener.into(), args).await
    }

    /// Starts a gateway with an admin listener on its own `127.0.0.1:0`.
    pub async fn start_with_admin(args: &[&str]) -> Self {
        let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_listeners(
            oauth_metadata_gateway::Listeners {
                public,
                admin: Some(admin),
                demo: None,
            },
            args,
        )
        .await
    }

    /// Starts a gateway (with an admin listener) whose proxy environment
    /// (`HTTPS_PROXY`, `NO_PROXY`...) is `env` rather than none.
    pub async fn start_with_proxy_env(
        args: &[&str],
        env: &oauth_metadata_gateway::upstream::proxy_rules::ProxyEnv,
    ) -> Self {
        let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listeners = oauth_metadata_gateway::Listeners {
            public,
            admin: Some(admin),
            demo: None,
        };
        let mut full = vec!["oauth-metadata-gateway", "--workers", "2"];
        full.extend_from_slice(args);
        let config = Cli::config_from_args_env(full, env).expect("valid test arguments");
        Self::run_config(listeners, config)
    }

    async fn start_listeners(listeners: oauth_metadata_gateway::Listeners, args: &[&str]) -> Self {
        let mut full = vec!["oauth-metadata-gateway", "--workers", "2"];
        full.extend_from_slice(args);
        let config = config_from_args(full).expect("valid test arguments");
        Self::run_config(listeners, config)
    }

    fn run_config(
        listeners: oauth_metadata_gateway::Listeners,
        config: oauth_metadata_gateway::Config,
    ) -> Self {
        let addr = listeners.public.local_addr().unwrap();
        let admin_url = listeners
            .admin
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        let (reloads, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            config,
            listeners,
            async move {
                let _ = stopped.await;
            },
            reload_rx,
        ));
        Self {
            addr,
            base_url: format!("http://{addr}"),
            admin_url,
            reloads,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks for a config reload, as SIGHUP does in the binary.
    pub fn reload(&self) {
        self.reloads.send(()).expect("gateway running");
    }

    /// A URL on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.admin_url
                .as_deref()
                .expect("started with an admin listener")
        )
    }

    /// A gateway in front of `upstream` with these extra arguments.
    pub async fn in_front_of(upstream: &Upstream, args: &[&str]) -> Self {
        let mut full = vec!["--upstream", upstream.base_url.as_str()];
        full.extend_from_slice(args);
        Self::start(&full).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the gateway gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), oauth_metadata_gateway::RunError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take().unwrap().await.expect("run task panicked")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub const AS_PATH: &str = "/.well-known/oauth-authorization-server";

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts the gateway's JSON error shape: `application/json` with a
    /// string `error` member.
    #[track_caller]
    pub fn assert_json_error_body(&self) {
        assert!(
            self.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{:?}",
            self.header("content-type")
        );
        assert!(self.json()["error"].is_string(), "{}", self.json());
    }

    /// `max-age` of the `Cache-Control` header (panics when absent).
    pub fn max_age(&self) -> u64 {
        let cc = self.header("cache-control").unwrap_or("");
        directive(cc, "max-age").unwrap_or_else(|| panic!("no max-age in {cc:?}"))
    }

    /// The `Age` header in seconds (panics when absent or not a number).
    pub fn age(&self) -> u64 {
        let age = self.header("age");
        age.and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no numeric Age header: {age:?}"))
    }

    /// The `ttl` of `Cache-Status` (panics when absent).
    pub fn ttl(&self) -> i64 {
        cache_status_ttl(self.cache_status())
            .unwrap_or_else(|| panic!("no ttl in Cache-Status {:?}", self.cache_status()))
    }
}

/// An HTTP client (awc; tests run on the actix runtime).
pub fn client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(10))
        .disable_redirects()
        .finish()
}

/// Sends `method url` with `headers`; a client-side timeout fails the test
/// rather than hanging it.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    send_with(&client(), method, url, headers).await
}

pub async fn send_with(
    c: &awc::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = c.request(
        awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
        url,
    );
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let body = res
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .expect("body")
        .to_vec();
    Reply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, &[]).await
}

/// Polls `url` until `pred` holds (bounded), returning the matching reply.
pub async fn poll_until(url: &str, limit: Duration, pred: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let r = get(url).await;
        if pred(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}; last reply: {} {:?} {}",
            r.status,
            r.cache_status(),
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `GET <raw_path>` exactly as written (no client-side
/// normalisation of `..`, `//` or percent-encoding) over a fresh
/// connection and returns the status code and the whole response text.
pub async fn raw_get(addr: SocketAddr, raw_path: &str) -> (u16, String) {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {raw_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8_lossy(&response).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| panic!("GET {raw_path}: no answer within 10s"));
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {raw_path}: not an HTTP response: {text:?}"));
    (status, text)
}

/// A free port on 127.0.0.1, for a server the test starts by address
/// (released at once, so another socket could take it in between).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 that refuses connections: bound but not listening,
/// so no other socket can take it while the returned socket lives.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A multi-tenant upstream ([`Behaviour::tenants`]) answering at once.
pub async fn tenants_upstream() -> Upstream {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, Duration::ZERO));
    upstream
}

/// Every regular file under `dir` (recursively), sorted, but the lock
/// file: it holds the PID of whichever process holds the directory, so it
/// changes from run to run and is not state.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.is_file() && e.file_name() != ".lock" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `text` written as `gateway.toml` in a new temporary directory; the
/// directory lives as long as the returned handle. Returns it and the path.
pub fn config_file_in_temp_dir(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}
