//! Upstream fetches with awc, on a thread of their own.
//!
//! awc's `Client` is `!Send` (it holds `Rc`s), while the cache, the
//! refresher and the HTTP workers live on many threads. So one dedicated
//! thread owns the single awc client and its connection pool, and everything
//! else talks to it through [`Fetcher`], a cheap `Send + Sync` handle that
//! sends a job and awaits the reply. Jobs run concurrently on that thread's
//! event loop. The thread ends when the last handle is dropped.
//!
//! One fetch is one GET with a whole-fetch deadline (connect + head + body),
//! a status check (200, or 304 to a conditional request), a content-type
//! check (`application/json`, RFC 8414 §3.2) and a body size limit. It
//! returns the headers freshness and revalidation need
//! ([`crate::cache_rules::upstream_freshness::UpstreamHeaders`]). A refresh of a stored
//! document sends its validators (`If-None-Match`, `If-Modified-Since`,
//! RFC 9111 §4.3.1); a `304` to a request that sent none is an error. Validation of the JSON itself is
//! the caller's job ([`crate::document`]). [`Fetcher::fetch_raw`] makes the
//! same request without the status and content-type checks, for the
//! `check` subcommand, which reports them instead of stopping at them.
//!
//! Every request holds a [`limiter::Permit`] of its host while it is in
//! flight: the bound on upstream load per host, with a share kept for
//! clients ([`limiter`]).
//!
//! Forward proxies are chosen here, per URL, for every fetch (metadata,
//! key sets, `check`): the handle looks the URL up in its
//! [`proxy_rules::ProxyRoutes`] (the flags or the environment, per-server
//! choices from the config file, `NO_PROXY`), and the thread keeps one awc
//! client per distinct choice (direct, or each proxy with its
//! credentials), so connections made through different proxies, or none,
//! are never pooled together. A proxied client connects through a CONNECT
//! tunnel ([`proxy_connector`]).

pub mod limiter;
pub mod proxy_connector;
pub mod proxy_rules;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use arc_swap::ArcSwap;
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use proxy_rules::{Origin, ProxyRoutes, ProxySetting, ProxyUrl};

use crate::cache_rules::upstream_freshness::UpstreamHeaders;
use crate::config::UpstreamConfig;
use crate::error::{FetchError, RunError};

pub use limiter::{Permit, Priority};

/// A `Send + Sync` handle to the fetcher thread.
#[derive(Debug, Clone)]
pub struct Fetcher {
    jobs: mpsc::UnboundedSender<Job>,
    limiter: Arc<limiter::Limiter>,
    /// Which proxy each URL goes through; swapped on a config reload.
    routes: Arc<ArcSwap<ProxyRoutes>>,
}

#[derive(Debug)]
struct Job {
    url: Arc<str>,
    /// The proxy to tunnel through, `None` for a direct connection.
    proxy: Option<Arc<ProxyUrl>>,
    /// The routes `proxy` was chosen by: clients of proxies they no
    /// longer name are dropped when a job brings newer routes.
    routes: Arc<ProxyRoutes>,
    /// Held until the answer is read: the request counts as in flight.
    permit: Permit,
    /// Require 200 + JSON before reading the body (the gateway's fetch).
    strict: bool,
    /// Validators to send (a refresh of a stored document).
    conditional: Option<Validators>,
    reply: oneshot::Sender<Result<RawResponse, FetchError>>,
}

/// The validators of a stored document, sent on its refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// Sent as `If-None-Match`.
    pub etag: Option<Box<str>>,
    /// Sent as `If-Modified-Since`.
    pub last_modified: Option<Box<str>>,
}

impl Validators {
    /// The validators in `headers`, if there are any.
    pub fn of(headers: &UpstreamHeaders) -> Option<Self> {
        headers.has_validators().then(|| Self {
            etag: headers.etag.clone(),
            last_modified: headers.last_modified.clone(),
        })
    }
}

/// What a gateway fetch got.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `200` with a JSON body within the limit.
    Document {
        /// The body, untouched.
        body: Bytes,
        /// Freshness and validator headers.
        headers: UpstreamHeaders,
    },
    /// `304 Not Modified` to a conditional request: the stored document
    /// is still current.
    NotModified {
        /// Headers that update the stored ones (RFC 9111 §4.3.4).
        headers: UpstreamHeaders,
    },
}

/// What the upstream answered, for callers that judge it themselves.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header, if any (lossily decoded).
    pub content_type: Option<String>,
    /// The body, within the size limit.
    pub body: Bytes,
    /// Freshness and validator headers.
    pub headers: UpstreamHeaders,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_body_size: usize,
}

impl Fetcher {
    /// Starts the fetcher thread (its awc clients, one per proxy choice,
    /// are made on first use).
    pub fn start(config: &UpstreamConfig) -> Result<Self, RunError> {
        let tls = Arc::new(crate::upstream::tls::client_config(&config.extra_roots)?);
        let limits = Limits {
            timeout: config.timeout,
            max_body_size: config.max_body_size,
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("upstream-fetcher".into())
            .spawn(move || fetcher_thread(rx, tls, limits))
            .map_err(RunError::io("cannot start the upstream fetcher thread"))?;
        if config.proxy.rules().any() {
            tracing::info!("upstream proxies: {}", config.proxy.rules().describe());
        }
        Ok(Self {
            jobs,
            limiter: Arc::new(limiter::Limiter::new(config.concurrency)),
            routes: Arc::new(ArcSwap::from_pointee(config.proxy.clone())),
        })
    }

    /// Replaces the per-server proxy choices (the config file's `proxy`
    /// keys, per upstream origin), keeping the process-wide rules.
    pub fn set_proxy_overrides(&self, overrides: Vec<(Origin, ProxySetting)>) {
        let current = self.routes.load();
        let next = current.with_overrides(overrides);
        if next != **current {
            self.routes.store(Arc::new(next));
        }
    }

    /// The proxy `url` is fetched through (`None`: directly).
    pub fn proxy_for(&self, url: &str) -> Option<Arc<ProxyUrl>> {
        self.routes.load().proxy_for(url)
    }

    /// The most background requests in flight per host (see
    /// [`limiter::Limiter::background_limit`]).
    pub fn background_limit(&self) -> usize {
        self.limiter.background_limit()
    }

    /// Waits until a request to `url`'s host may be sent.
    pub async fn permit(&self, url: &str, priority: Priority) -> Permit {
        self.limiter.acquire(url, priority).await
    }

    /// Fetches `url` (with a permit of its host): the body of a 200
    /// `application/json` response no larger than the limit, or, when
    /// `conditional` validators are sent, possibly a 304.
    pub async fn fetch(
        &self,
        url: Arc<str>,
        permit: Permit,
        conditional: Option<Validators>,
    ) -> Result<Answer, FetchError> {
        let sent_validators = conditional.is_some();
        let r = self.send(url, permit, true, conditional).await?;
        match r.status {
            304 if sent_validators => Ok(Answer::NotModified { headers: r.headers }),
            200 => Ok(Answer::Document {
                body: r.body,
                headers: r.headers,
            }),
            other => Err(FetchError::HttpStatus(other)),
        }
    }

    /// The same GET (same client, headers, timeout and size limit) with
    /// any status and content type returned rather than refused.
    pub async fn fetch_raw(&self, url: Arc<str>) -> Result<RawResponse, FetchError> {
        let permit = self.permit(&url, Priority::Client).await;
        self.send(url, permit, false, None).await
    }

    async fn send(
        &self,
        url: Arc<str>,
        permit: Permit,
        strict: bool,
        conditional: Option<Validators>,
    ) -> Result<RawResponse, FetchError> {
        let (reply, answer) = oneshot::channel();
        let routes = self.routes.load_full();
        let proxy = routes.proxy_for(&url);
        self.jobs
            .send(Job {
                url,
                proxy,
                routes,
                permit,
                strict,
                conditional,
                reply,
            })
            .map_err(|_| FetchError::FetcherStopped)?;
        answer.await.map_err(|_| FetchError::FetcherStopped)?
    }
}

/// The pool key of a client: direct, or one proxy with its credentials.
type Route = Option<Arc<ProxyUrl>>;

fn fetcher_thread(
    mut rx: mpsc::UnboundedReceiver<Job>,
    tls: Arc<rustls::ClientConfig>,
    limits: Limits,
) {
    actix_web::rt::System::new().block_on(async move {
        let mut clients: HashMap<Route, awc::Client> = HashMap::new();
        let mut routes: Option<Arc<ProxyRoutes>> = None;
        while let Some(job) = rx.recv().await {
            if !routes.as_ref().is_some_and(|r| Arc::ptr_eq(r, &job.routes)) {
                // A reload may have retired a proxy: drop its client (and pool).
                let named = job.routes.proxies();
                clients.retain(|route, _| route.as_ref().is_none_or(|p| named.contains(p)));
                routes = Some(job.routes.clone());
            }
            let client = clients
                .entry(job.proxy.clone())
                .or_insert_with(|| client_for(job.proxy.as_ref(), &tls, limits))
                .clone();
            actix_web::rt::spawn(async move {
                let result = fetch_once(
                    &client,
                    &job.url,
                    limits,
                    job.strict,
                    job.conditional.as_ref(),
                )
                .await
                .map_err(|e| through_proxy(e, job.proxy.as_deref()));
                drop(job.permit);
                // The requester may have given up; nothing to do then.
                let _ = job.reply.send(result);
            });
        }
    });
}

/// The part of `--upstream-timeout` a proxy gets to open a tunnel: a
/// little less than the whole fetch's deadline, so a silent proxy is
/// reported as the proxy's failure (naming it) rather than as a plain
/// timeout, still within `--upstream-timeout`.
pub fn tunnel_deadline(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).min(Duration::from_millis(500)))
}

/// An awc client connecting directly, or through `proxy`, with its own
/// connection pool.
fn client_for(
    proxy: Option<&Arc<ProxyUrl>>,
    tls: &Arc<rustls::ClientConfig>,
    limits: Limits,
) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(tls.clone())
        .timeout(limits.timeout)
        .handshake_timeout(limits.timeout)
        .conn_keep_alive(Duration::from_secs(30));
    macro_rules! finish {
        ($connector:expr) => {
            awc::Client::builder()
                .connector($connector)
                .timeout(limits.timeout)
                .no_default_headers()
                .add_default_header((
                    header::USER_AGENT,
                    concat!("oauth-metadata-gateway/", env!("CARGO_PKG_VERSION")),
                ))
                .finish()
        };
    }
    match proxy {
        None => finish!(connector),
        Some(proxy) => finish!(connector.connector(proxy_connector::ProxyConnector::new(
            proxy.clone(),
            tunnel_deadline(limits.timeout),
        ))),
    }
}

/// Names the proxy in a connection failure behind it (a TLS handshake
/// with the upstream through the tunnel, say).
fn through_proxy(error: FetchError, proxy: Option<&ProxyUrl>) -> FetchError {
    match (error, proxy) {
        (FetchError::Connect(message), Some(p)) => {
            FetchError::Connect(format!("{message} (through the proxy {p})"))
        }
        (other, _) => other,
    }
}

async fn fetch_once(
    client: &awc::Client,
    url: &str,
    limits: Limits,
    strict: bool,
    conditional: Option<&Validators>,
) -> Result<RawResponse, FetchError> {
    let work = async {
        let mut request = client
            .get(url)
            .insert_header((header::ACCEPT, "application/json"));
        if let Some(v) = conditional {
            // RFC 9111 §4.3.1: If-None-Match is preferred; both are sent
            // when both are known (RFC 9110 §13.1.3 makes the server
            // ignore If-Modified-Since when If-None-Match is present).
            if let Some(etag) = v
                .etag
                .as_deref()
                .and_then(|e| header::HeaderValue::from_str(e).ok())
            {
                request = request.insert_header((header::IF_NONE_MATCH, etag));
            }
            if let Some(lm) = v
                .last_modified
                .as_deref()
                .and_then(|e| header::HeaderValue::from_str(e).ok())
            {
                request = request.insert_header((header::IF_MODIFIED_SINCE, lm));
            }
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| send_error(e, limits.timeout))?;
        let status = response.status();
        let headers = upstream_headers(response.headers());
        if strict && status == awc::http::StatusCode::NOT_MODIFIED {
            // No body to read; the caller decides whether a 304 was asked for.
            return Ok(RawResponse {
                status: 304,
                content_type: None,
                body: Bytes::new(),
                headers,
            });
        }
        let content_type = response.headers().get(header::CONTENT_TYPE);
        if strict {
            if status != awc::http::StatusCode::OK {
                return Err(FetchError::HttpStatus(status.as_u16()));
            }
            check_content_type(content_type)?;
        }
        let content_type = content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = response
            .body()
            .limit(limits.max_body_size)
            .await
            .map_err(|e| match e {
                PayloadError::Overflow => FetchError::TooLarge(limits.max_body_size),
                other => FetchError::Body(other.to_string()),
            })?;
        Ok(RawResponse {
            status: status.as_u16(),
            content_type,
            body,
            headers,
        })
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(limits.timeout)),
    }
}

/// The headers freshness and revalidation use; several field lines of
/// one name are joined with `, ` (RFC 9110 §5.3), values that are not
/// visible ASCII are dropped.
fn upstream_headers(h: &header::HeaderMap) -> UpstreamHeaders {
    let get = |name: header::HeaderName| -> Option<Box<str>> {
        let values: Vec<&str> = h.get_all(name).filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", ").into())
    };
    let first = |name: header::HeaderName| -> Option<Box<str>> {
        h.get(name).and_then(|v| v.to_str().ok()).map(Box::from)
    };
    UpstreamHeaders {
        cache_control: get(header::CACHE_CONTROL),
        expires: first(header::EXPIRES),
        date: first(header::DATE),
        age: first(header::AGE),
        etag: first(header::ETAG),
        last_modified: first(header::LAST_MODIFIED),
    }
}

fn send_error(e: SendRequestError, timeout: Duration) -> FetchError {
    match e {
        SendRequestError::Timeout => FetchError::Timeout(timeout),
        SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
            FetchError::Timeout(timeout)
        }
        SendRequestError::Connect(c) => proxy_connector::proxy_error_of(&c)
            .unwrap_or_else(|| FetchError::Connect(c.to_string())),
        other => FetchError::Connect(other.to_string()),
    }
}

/// RFC 8414 §3.2: the response uses `application/json`. Parameters such as
/// `charset` are allowed, and so is a structured `+json` suffix type.
pub fn check_content_type(value: Option<&header::HeaderValue>) -> Result<(), FetchError> {
    let raw = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(FetchError::ContentType(raw.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> Result<(), FetchError> {
        check_content_type(Some(&header::HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn content_types() {
        assert!(ct("application/json").is_ok());
        assert!(ct("Application/JSON; charset=utf-8").is_ok());
        assert!(ct("application/jwk-set+json").is_ok());
        assert!(ct("text/html").is_err());
        assert!(ct("application/jsonp").is_err());
        assert!(check_content_type(None).is_err());
    }
}
