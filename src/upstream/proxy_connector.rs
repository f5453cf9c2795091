//! An HTTP `CONNECT` tunnel through a forward proxy, as awc's custom TCP
//! connector (`awc::Connector::connector`).
//!
//! awc has no proxy support, and actix-http writes only origin-form
//! request targets, so a proxy cannot be asked for an `http://` URL in
//! absolute form. Every proxied fetch therefore opens a tunnel (RFC 9110
//! §9.3.6): a TCP connection to the proxy, `CONNECT host:port HTTP/1.1`
//! with `Proxy-Authorization` when the proxy URL has credentials, and a
//! 2xx answer; the stream is then the upstream's. awc puts its own rustls
//! client on top for https upstreams, so TLS runs end to end and the
//! certificate is checked against the upstream's name (with
//! `--upstream-ca`), exactly as without a proxy. The upstream's name is
//! resolved by the proxy, not here.
//!
//! A failure (proxy unreachable, non-2xx answer such as 407, no answer
//! within the deadline, a garbled answer) is a typed
//! [`FetchError::Proxy`] naming the proxy (password hidden) and what it
//! answered; it travels through awc inside the connect error's
//! `io::Error` and is taken out again by [`proxy_error_of`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::proxy_rules::ProxyUrl;
use crate::error::{FetchError, ProxyFailure};

/// Largest proxy answer head read (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// awc's TCP connector service that tunnels through one proxy. Clone is
/// cheap (awc clones it per connection).
#[derive(Debug, Clone)]
pub struct ProxyConnector {
    proxy: Arc<ProxyUrl>,
    /// Bound on reaching the proxy and reading its answer to CONNECT.
    deadline: Duration,
}

impl ProxyConnector {
    /// A connector through `proxy`, giving up on it after `deadline`.
    pub fn new(proxy: Arc<ProxyUrl>, deadline: Duration) -> Self {
        Self { proxy, deadline }
    }
}

impl Service<ConnectInfo<Uri>> for ProxyConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let proxy = self.proxy.clone();
        let deadline = self.deadline;
        Box::pin(async move {
            // `Uri::host` keeps IPv6 brackets: `[::1]:443` as CONNECT wants.
            let target = format!("{}:{}", req.hostname(), req.port());
            let failure = match tokio::time::timeout(deadline, tunnel(&proxy, &target)).await {
                Ok(Ok(stream)) => return Ok(Connection::new(req.request().clone(), stream)),
                Ok(Err(failure)) => failure,
                Err(_) => ProxyFailure::Timeout(deadline),
            };
            let error = FetchError::Proxy {
                proxy: proxy.to_string(),
                target,
                failure,
            };
            // Never `InvalidInput`: awc's conversion of it panics.
            Err(ConnectError::Io(std::io::Error::other(error)))
        })
    }
}

/// The proxy failure carried by an awc connect error, if it is one.
pub fn proxy_error_of(error: &awc::error::ConnectError) -> Option<FetchError> {
    match error {
        awc::error::ConnectError::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<FetchError>())
            .cloned(),
        _ => None,
    }
}

/// Connects to the proxy and asks it for a tunnel to `target`.
async fn tunnel(proxy: &ProxyUrl, target: &str) -> Result<TcpStream, ProxyFailure> {
    let host = proxy.host().trim_start_matches('[').trim_end_matches(']');
    let mut stream = TcpStream::connect((host, proxy.port()))
        .await
        .map_err(|e| ProxyFailure::Unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: oauth-metadata-gateway/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(auth) = proxy.authorization() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(auth.expose());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| {
        ProxyFailure::Protocol(format!("the connection broke while sending CONNECT: {e}"))
    })?;
    drop(request);

    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| ProxyFailure::Protocol(format!("the connection broke: {e}")))?;
        if n == 0 {
            // A status line is enough to say what it answered.
            return Err(match parse_status(&head) {
                Some(Ok((status, reason))) if !(200..300).contains(&status) => {
                    ProxyFailure::Refused { status, reason }
                }
                _ => ProxyFailure::Protocol(
                    "it closed the connection without a complete answer".to_string(),
                ),
            });
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&head, b"\r\n\r\n") {
            let (status, reason) = parse_status(&head[..end + 2])
                .unwrap_or_else(|| Err("no status line".to_string()))
                .map_err(ProxyFailure::Protocol)?;
            if !(200..300).contains(&status) {
                return Err(ProxyFailure::Refused { status, reason });
            }
            if end + 4 != head.len() {
                // Bytes the upstream never sent: nothing may precede the
                // client's first bytes in a fresh tunnel.
                return Err(ProxyFailure::Protocol(
                    "data followed its 2xx answer before the tunnel was used".to_string(),
                ));
            }
            return Ok(stream);
        }
        if head.len() > MAX_HEAD {
            return Err(match parse_status(&head) {
                Some(Ok((status, reason))) if !(200..300).contains(&status) => {
                    ProxyFailure::Refused { status, reason }
                }
                _ => ProxyFailure::Protocol(format!("its answer head exceeds {MAX_HEAD} bytes")),
            });
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status and (sanitised) reason of `HTTP/1.x NNN reason`, once the
/// first line is complete; `None` before that.
fn parse_status(head: &[u8]) -> Option<Result<(u16, String), String>> {
    let line_end = find(head, b"\r\n").or_else(|| {
        // A whole head without CRLF: judge what is there.
        (head.len() > MAX_HEAD).then_some(head.len())
    })?;
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") {
        return Some(Err(format!(
            "not an HTTP/1.x answer ({:?})",
            sanitise(version, 16)
        )));
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s));
    let Some(status) = status else {
        return Some(Err("the status line has no valid status code".to_string()));
    };
    let reason = sanitise(parts.next().unwrap_or("").trim(), 64);
    Some(Ok((status, reason)))
}

/// Printable ASCII only, at most `max` characters: text from a proxy ends
/// up in logs and error bodies.
fn sanitise(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n"),
            Some(Ok((200, "Connection established".into())))
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\nX: y"),
            Some(Ok((407, "Proxy Authentication Required".into())))
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 502\r\n"),
            Some(Ok((502, String::new())))
        );
        assert_eq!(parse_status(b"HTTP/1.1 20"), None, "incomplete");
        assert!(matches!(parse_status(b"SSH-2.0-x\r\n"), Some(Err(_))));
        assert!(matches!(parse_status(b"HTTP/1.1 2000 x\r\n"), Some(Err(_))));
        assert_eq!(
            parse_status(b"HTTP/1.1 403 \x1b[31mno\x07\r\n"),
            Some(Ok((403, "[31mno".into())))
        );
    }

    /// A one-shot fake proxy on 127.0.0.1 that reads the CONNECT head and
    /// answers `answer` (or nothing, with `None`); returns its URL and the
    /// head it received.
    async fn fake_proxy(
        answer: Option<&'static [u8]>,
    ) -> (ProxyUrl, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 256];
            while find(&head, b"\r\n\r\n").is_none() {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&b[..n]);
            }
            match answer {
                Some(a) => {
                    s.write_all(a).await.unwrap();
                    // Keep the connection open a moment, as a proxy would.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        let url = ProxyUrl::parse(&format!("http://bob:pa%20ss@127.0.0.1:{port}")).unwrap();
        (url, task)
    }

    #[tokio::test]
    async fn a_tunnel_opens_on_2xx_with_credentials() {
        let (proxy, task) = fake_proxy(Some(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n")).await;
        assert!(tunnel(&proxy, "as.example:443").await.is_ok());
        let head = task.await.unwrap();
        assert!(
            head.starts_with("CONNECT as.example:443 HTTP/1.1\r\nHost: as.example:443\r\n"),
            "{head}"
        );
        // RFC 7617: base64("bob:pa ss").
        assert!(
            head.contains("Proxy-Authorization: Basic Ym9iOnBhIHNz\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn proxy_failures_say_what_it_answered() {
        for (answer, wanted) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
                    [..],
                "answered 407 Proxy Authentication Required",
            ),
            (
                &b"HTTP/1.0 403 Forbidden\r\n\r\n"[..],
                "answered 403 Forbidden",
            ),
            (
                &b"HTTP/1.1 502 Bad Gateway\r\n"[..],
                "answered 502 Bad Gateway",
            ),
            (
                &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
                "unusable answer: not an HTTP/1.x answer",
            ),
            (
                &b"HTTP/1.1 200 OK\r\n\r\nearly"[..],
                "data followed its 2xx answer",
            ),
            (&b"HTTP/1.1 20"[..], "without a complete answer"),
        ] {
            let (proxy, _task) = fake_proxy(Some(answer)).await;
            let failure = tunnel(&proxy, "as.example:443").await.expect_err(wanted);
            assert!(failure.to_string().contains(wanted), "{failure}");
        }
    }

    #[tokio::test]
    async fn a_silent_or_absent_proxy_fails_within_the_deadline_naming_it() {
        let (proxy, _task) = fake_proxy(None).await;
        let connector = ProxyConnector::new(Arc::new(proxy), Duration::from_millis(200));
        let uri: Uri = "https://as.example/x".parse().unwrap();
        let started = std::time::Instant::now();
        let err = connector
            .call(ConnectInfo::new(uri.clone()))
            .await
            .expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(2));
        let awc_err = awc::error::ConnectError::from(err);
        let e = proxy_error_of(&awc_err).expect("a proxy error");
        assert_eq!(e.outcome_label(), "proxy_error");
        assert_eq!(
            e.client_status(),
            actix_web::http::StatusCode::GATEWAY_TIMEOUT
        );
        let shown = e.to_string();
        assert!(
            shown.contains("the proxy http://bob:***@127.0.0.1:"),
            "{shown}"
        );
        assert!(
            shown.contains("did not answer within 200ms (CONNECT as.example:443)"),
            "{shown}"
        );
        assert!(
            !shown.contains("pa ss") && !shown.contains("Ym9i"),
            "{shown}"
        );

        // Nothing listening: unreachable, 503.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let proxy = ProxyUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let connector = ProxyConnector::new(Arc::new(proxy), Duration::from_secs(2));
        let err = connector
            .call(ConnectInfo::new(uri))
            .await
            .expect_err("refused");
        let e = proxy_error_of(&awc::error::ConnectError::from(err)).unwrap();
        assert_eq!(
            e.client_status(),
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(e.to_string().contains("cannot be reached"), "{e}");
    }
}
