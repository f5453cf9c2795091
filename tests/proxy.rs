//! Egress through a real forward proxy: Debian's `tinyproxy` (installed by
//! `.ci/install-deps.sh`), started per test on 127.0.0.1 with an ephemeral
//! port, BasicAuth, and CONNECT allowed to any port (no `ConnectPort`
//! line). Each test first checks that tinyproxy answers as expected (407
//! without credentials, 200 with them) before asserting on the gateway.
//!
//! Covered: an https upstream with a private CA through a CONNECT tunnel
//! (byte-identical, certificate checked against the upstream's name, TLS
//! end to end); an http upstream through CONNECT (from `http_proxy`);
//! `NO_PROXY` sending a second upstream on 127.0.0.2 direct; a per-server
//! `proxy` in the config file; a 407 on a cold fetch (JSON 5xx naming the
//! proxy, no fall-through, no negative caching of a tenant); a silent
//! proxy (504 naming it, within `--upstream-timeout`); a reload changing a
//! server's proxy; the proxy down while warm (the last good document); and
//! the password never in logs, `GET /documents`, error bodies, `check`
//! output or start-up errors.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oauth_metadata_gateway::upstream::proxy_rules::ProxyEnv;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use support::process::Process;
use support::*;

/// The proxy user's password: must never show up anywhere but on the wire
/// to the proxy.
const PASSWORD: &str = "Hunter2SecretPw";
const USER: &str = "alice";

/// A tinyproxy process on 127.0.0.1, killed on drop.
struct Tinyproxy {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Tinyproxy {
    /// Starts tinyproxy requiring `USER:PASSWORD` (BasicAuth), on a free
    /// port (retrying when another process took it meanwhile), and checks
    /// its answers: 407 without credentials, a tunnel with them.
    fn start() -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join("tinyproxy.conf");
            let log = dir.path().join("tinyproxy.log");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nLogLevel Info\n\
                     LogFile \"{}\"\nDisableViaHeader Yes\nBasicAuth {USER} {PASSWORD}\n",
                    log.display()
                ),
            )
            .unwrap();
            let child = match Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot run tinyproxy ({e}): install it with .ci/install-deps.sh (Debian package tinyproxy)"
                ),
            };
            let mut proxy = Self {
                child: Some(child),
                dir,
                port,
            };
            if proxy.wait_until_listening() && proxy.answers_like_tinyproxy() {
                return proxy;
            }
            proxy.stop();
        }
        panic!("tinyproxy did not start on a free port in 5 attempts");
    }

    fn wait_until_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false; // exited: the port was taken
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The precondition of every test: this is our tinyproxy and it
    /// refuses a CONNECT without credentials with 407.
    fn answers_like_tinyproxy(&self) -> bool {
        let head = raw_connect(self.port, "127.0.0.1:9", None);
        head.starts_with("HTTP/1.0 407") && head.contains("tinyproxy")
    }

    /// `http://127.0.0.1:PORT`, without credentials.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy URL with `user:password`.
    fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// How the gateway shows this proxy with credentials.
    fn shown(&self) -> String {
        format!("http://{USER}:***@127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// CONNECT requests tinyproxy logged for `target` (`host:port`).
    fn connects_to(&self, target: &str) -> usize {
        self.log()
            .matches(&format!("CONNECT {target} HTTP/1.1"))
            .count()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `CONNECT target` to the proxy and returns its answer head (the
/// first 1 KiB), with `auth` as `user:password` in Basic credentials.
fn raw_connect(port: u16, target: &str, auth: Option<(&str, &str)>) -> String {
    use base64::Engine as _;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

/// A private CA and a server certificate for `localhost` (and 127.0.0.1).
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "oauth-metadata-gateway proxy test CA",
    );
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

fn env(pairs: &[(&str, String)]) -> ProxyEnv {
    ProxyEnv::from_lookup(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
}

/// `r` is a failure with `status`, its `Cache-Status` naming `detail`.
fn assert_failed(r: &Reply, status: u16, detail: &str) {
    assert_eq!(r.status, status, "{}", text(r));
    assert!(
        r.cache_status().contains(&format!("detail={detail}")),
        "{}",
        r.cache_status()
    );
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value of `metadata_gateway_upstream_fetches_total` with `outcome`.
async fn fetches(metrics_url: &str, outcome: &str) -> f64 {
    let r = get(metrics_url).await;
    text(&r)
        .lines()
        .filter(|l| {
            l.starts_with("metadata_gateway_upstream_fetches_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_web::test]
async fn an_https_upstream_through_a_connect_tunnel_is_byte_identical() {
    let proxy = Tinyproxy::start();
    let pki = pki();
    let upstream = Upstream::start_tls(Behaviour::status(500), pki.server.clone()).await;
    // The certificate names `localhost` only: the gateway must check it
    // against the upstream's name, which the proxy resolves.
    let port = upstream.addr.port();
    let base = format!("https://localhost:{port}");
    let body = document(&base);
    upstream.set(Behaviour::json(body.clone()));
    let target = format!("localhost:{port}");
    assert!(
        raw_connect(proxy.port, &target, Some((USER, PASSWORD))).starts_with("HTTP/1.0 200"),
        "tinyproxy tunnels with credentials"
    );
    let before = proxy.connects_to(&target);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();
    let via = proxy.url_with(USER, PASSWORD);
    let gw = TestGateway::start(&[
        "--upstream",
        &base,
        "--upstream-ca",
        ca,
        "--upstream-proxy",
        &via,
    ])
    .await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.body, body.as_bytes(), "byte for byte");
    assert!(
        proxy.connects_to(&target) > before,
        "fetched through the tunnel: {}",
        proxy.log()
    );

    // TLS runs end to end: without --upstream-ca the same tunnel carries a
    // handshake the gateway refuses (the proxy never sees plaintext).
    let untrusted = TestGateway::start(&[
        "--upstream",
        &base,
        "--upstream-proxy",
        &via,
        "--retry-backoff-min",
        "5s",
    ])
    .await;
    let r = get(&untrusted.url(AS_PATH)).await;
    assert_failed(&r, 503, "connect_error");
    assert!(text(&r).contains(&proxy.shown()), "{}", text(&r));
    assert!(!text(&r).contains(PASSWORD));
}

#[actix_web::test]
async fn an_http_upstream_goes_through_connect_too_from_http_proxy() {
    let proxy = Tinyproxy::start();
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let target = format!("127.0.0.1:{}", upstream.addr.port());
    assert!(raw_connect(proxy.port, &target, Some((USER, PASSWORD))).starts_with("HTTP/1.0 200"));
    let before = proxy.connects_to(&target);

    // As curl: http_proxy for http upstreams; https_proxy (a dead port
    // here) is not consulted for them.
    let (_refusing, dead) = refusing_port();
    let env = env(&[
        ("http_proxy", proxy.url_with(USER, PASSWORD)),
        ("https_proxy", format!("http://127.0.0.1:{dead}")),
    ]);
    let gw = TestGateway::start_with_proxy_env(&["--upstream", &upstream.base_url], &env).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.body, body.as_bytes());
    assert!(proxy.connects_to(&target) > before, "{}", proxy.log());
    // The upstream saw an ordinary origin-form request, and no proxy
    // credentials.
    let heads = upstream.request_heads();
    let first = heads.first().expect("one request");
    assert!(
        first.starts_with(&format!("GET {AS_PATH} HTTP/1.1")),
        "{first}"
    );
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("proxy-authorization")),
        "{heads:?}"
    );
}

#[actix_web::test]
async fn no_proxy_sends_another_upstream_direct() {
    let proxy = Tinyproxy::start();
    let a = Upstream::start(Behaviour::status(500)).await;
    let b = Upstream::start_at("127.0.0.2", Behaviour::status(500)).await;
    let issuer_a = format!("{}/a", a.base_url);
    let issuer_b = format!("{}/b", b.base_url);
    a.set(Behaviour::json(document(&issuer_a)));
    b.set(Behaviour::json(document(&issuer_b)));
    let (_dir, file) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{issuer_a}\"\n\n[[authorization_server]]\nissuer = \"{issuer_b}\"\n"
    ));
    let env = env(&[
        ("HTTP_PROXY", proxy.url_with(USER, PASSWORD)),
        ("NO_PROXY", "example.com,127.0.0.2".to_string()),
    ]);
    let gw = TestGateway::start_with_proxy_env(&["--config", &file], &env).await;
    for (path, upstream) in [("/a", &a), ("/b", &b)] {
        let url = gw.url(&format!("{AS_PATH}{path}"));
        let r = poll_until(&url, Duration::from_secs(10), |r| r.status == 200).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
        assert!(upstream.requests() >= 1);
    }
    assert!(
        proxy.connects_to(&format!("127.0.0.1:{}", a.addr.port())) >= 1,
        "{}",
        proxy.log()
    );
    assert!(
        !proxy.log().contains("127.0.0.2"),
        "127.0.0.2 is in NO_PROXY: {}",
        proxy.log()
    );
}

#[actix_web::test]
async fn a_per_server_proxy_in_the_config_file() {
    let proxy = Tinyproxy::start();
    let a = Upstream::start(Behaviour::status(500)).await;
    let b = Upstream::start_at("127.0.0.2", Behaviour::status(500)).await;
    let issuer_a = format!("{}/a", a.base_url);
    let issuer_b = format!("{}/b", b.base_url);
    a.set(Behaviour::json(document(&issuer_a)));
    b.set(Behaviour::json(document(&issuer_b)));
    // The global proxy (a dead port) is replaced for one server by
    // tinyproxy, and turned off for the other.
    let (_refusing, dead) = refusing_port();
    let (_dir, file) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{issuer_a}\"\nproxy = \"{}\"\n\n\
         [[authorization_server]]\nissuer = \"{issuer_b}\"\nproxy = \"none\"\n",
        proxy.url_with(USER, PASSWORD)
    ));
    let global = format!("http://127.0.0.1:{dead}");
    let gw = TestGateway::start(&["--config", &file, "--upstream-proxy", &global]).await;
    for path in ["/a", "/b"] {
        let url = gw.url(&format!("{AS_PATH}{path}"));
        let r = poll_until(&url, Duration::from_secs(10), |r| r.status == 200).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
    }
    assert!(proxy.connects_to(&format!("127.0.0.1:{}", a.addr.port())) >= 1);
    assert!(!proxy.log().contains("127.0.0.2"));
}

#[actix_web::test]
async fn a_reload_changes_a_servers_proxy() {
    let mut proxy = Tinyproxy::start();
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let issuer = format!("{}/t1", upstream.base_url);
    upstream.set(Behaviour::json(document(&issuer)));
    let target = format!("127.0.0.1:{}", upstream.addr.port());
    let write = |proxy_line: &str| {
        format!("[[authorization_server]]\nissuer = \"{issuer}\"\n{proxy_line}\n")
    };
    let (dir, file) = config_file_in_temp_dir(&write(&format!(
        "proxy = \"{}\"",
        proxy.url_with(USER, PASSWORD)
    )));
    let gw = TestGateway::start_with_admin(&["--config", &file]).await;
    let url = gw.url(&format!("{AS_PATH}/t1"));
    let r = poll_until(&url, Duration::from_secs(10), |r| r.status == 200).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let documents = text(&get(&gw.admin("/documents")).await);
    assert!(
        documents.contains(&format!("\"proxy\":\"{}\"", proxy.shown())),
        "{documents}"
    );
    let through_proxy = proxy.connects_to(&target);
    assert!(through_proxy >= 1, "{}", proxy.log());

    // The proxy goes away and the file says `none`: after the reload the
    // refresh goes direct (a stale client of the old proxy would fail).
    proxy.stop();
    std::fs::write(dir.path().join("gateway.toml"), write("proxy = \"none\"")).unwrap();
    gw.reload();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let documents = text(&get(&gw.admin("/documents")).await);
        if !documents.contains("\"proxy\"") {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {documents}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = upstream.requests();
    let r = send("POST", &gw.admin("/refresh"), &[]).await;
    assert!(r.status < 300, "{}", text(&r));
    // The proxy is down: a request reaching the upstream came direct.
    upstream
        .wait_for_requests(before + 1, Duration::from_secs(10))
        .await;
    let metrics = gw.admin("/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetches(&metrics, "ok").await < 2.0 && fetches(&metrics, "proxy_error").await < 1.0 {
        assert!(Instant::now() < deadline, "the refresh did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fetches(&metrics, "proxy_error").await, 0.0);
    assert_eq!(fetches(&metrics, "ok").await, 2.0);
}

#[actix_web::test]
async fn a_407_on_a_cold_fetch_is_a_json_5xx_naming_the_proxy_without_fall_through() {
    let proxy = Tinyproxy::start();
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let target = format!("127.0.0.1:{}", upstream.addr.port());
    // What tinyproxy answers a CONNECT without credentials.
    let head = raw_connect(proxy.port, &target, None);
    assert!(
        head.starts_with("HTTP/1.0 407 Proxy Authentication Required"),
        "{head}"
    );
    let before = proxy.connects_to(&target);

    let gw = TestGateway::start(&[
        "--upstream",
        &upstream.base_url,
        "--upstream-proxy",
        &proxy.url(),
        "--retry-backoff-min",
        "10s",
        "--retry-backoff-max",
        "10s",
    ])
    .await;
    let r = get(&gw.url(AS_PATH)).await;
    assert_failed(&r, 502, "proxy_error");
    r.assert_json_error_body();
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(
        description.contains(&format!("the proxy {}", proxy.url()))
            && description.contains("answered 407"),
        "{description}"
    );
    assert!(
        !r.cache_status().contains("fwd-status"),
        "{}",
        r.cache_status()
    );
    assert!(r.header("retry-after").is_some());
    // No fall-through to the openid-configuration location: one CONNECT
    // per fetch (both locations are on the same host and port), and the
    // upstream was never reached.
    let failed = fetches(&gw.url("/metrics"), "proxy_error").await;
    assert!(failed >= 1.0);
    assert_eq!(
        (proxy.connects_to(&target) - before) as f64,
        failed,
        "{}",
        proxy.log()
    );
    assert_eq!(upstream.requests(), 0);

    // A wrong password: tinyproxy answers 401 (not 407); still the
    // proxy's failure, named, and the password is not in it.
    let wrong = TestGateway::start(&[
        "--upstream",
        &upstream.base_url,
        "--upstream-proxy",
        &proxy.url_with(USER, "NotThePassword"),
        "--retry-backoff-min",
        "10s",
    ])
    .await;
    assert!(
        raw_connect(proxy.port, &target, Some((USER, "NotThePassword")))
            .starts_with("HTTP/1.0 401")
    );
    let r = get(&wrong.url(AS_PATH)).await;
    assert_eq!(r.status, 502, "{}", text(&r));
    assert!(text(&r).contains("answered 401"), "{}", text(&r));
    assert!(text(&r).contains(&format!("http://{USER}:***@127.0.0.1:{}", proxy.port)));
    assert!(!text(&r).contains("NotThePassword"));

    // A template tenant is not remembered as unknown (no negative
    // caching): every request is an error, never a 404.
    let template = format!("{}/realms/{{tenant}}", upstream.base_url);
    let tenants = TestGateway::start(&[
        "--upstream",
        &template,
        "--issuer",
        &template,
        "--upstream-proxy",
        &proxy.url(),
    ])
    .await;
    for _ in 0..2 {
        let r = get(&tenants.url(&format!("{AS_PATH}/realms/t1"))).await;
        assert_failed(&r, 502, "proxy_error");
    }
    assert_eq!(upstream.requests(), 0);
}

#[actix_web::test]
async fn a_silent_proxy_is_a_504_naming_it_within_the_upstream_timeout() {
    // A proxy that accepts and never answers (no tinyproxy setting does that).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let upstream = Upstream::start(Behaviour::json(document("http://unused"))).await;
    let gw = TestGateway::start(&[
        "--upstream",
        &upstream.base_url,
        "--upstream-proxy",
        &format!("http://127.0.0.1:{port}"),
        "--upstream-timeout",
        "1s",
        "--retry-backoff-min",
        "10s",
    ])
    .await;
    // The tunnel's own deadline (a tenth under --upstream-timeout) names
    // the proxy; the whole fetch's would only say "timeout".
    let r = get(&gw.url(AS_PATH)).await;
    assert_failed(&r, 504, "proxy_error");
    assert!(
        text(&r).contains(&format!(
            "the proxy http://127.0.0.1:{port} did not answer within 900ms"
        )),
        "{}",
        text(&r)
    );
    assert_eq!(upstream.requests(), 0);
    hold.abort();
}

#[actix_web::test]
async fn with_the_proxy_down_the_last_good_document_is_served() {
    let mut proxy = Tinyproxy::start();
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let gw = TestGateway::start(&[
        "--upstream",
        &upstream.base_url,
        "--upstream-proxy",
        &proxy.url_with(USER, PASSWORD),
        "--ttl",
        "1s",
        "--max-stale",
        "1h",
        "--retry-backoff-min",
        "1s",
        "--retry-backoff-max",
        "1s",
    ])
    .await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.body, body.as_bytes());
    proxy.stop();
    assert!(
        raw_connect(proxy.port, "127.0.0.1:9", None).is_empty(),
        "the proxy is down"
    );
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(15), |r| {
        r.cache_status().contains("detail=proxy_error")
    })
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.body, body.as_bytes(), "the last good document");
    assert!(
        r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );
}

#[actix_web::test]
async fn the_password_never_leaks() {
    let proxy = Tinyproxy::start();
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let admin = format!("127.0.0.1:{}", free_port());
    let admin_url = format!("http://{admin}");

    // The real binary, through the proxy with the right password, with
    // debug logs: start-up line, fetches, /documents.
    let gw = Process::start(
        &["--upstream", &upstream.base_url, "--admin-listen", &admin],
        &[
            ("GATEWAY_UPSTREAM_PROXY", &proxy.url_with(USER, PASSWORD)),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.status, 200);
    let documents = get(&format!("{admin_url}/documents")).await;
    assert_eq!(documents.status, 200);
    assert!(!text(&documents).contains(PASSWORD), "{}", text(&documents));
    let log = gw.text();
    assert!(
        log.contains(&proxy.shown()),
        "the start-up line names the proxy: {log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");

    // Failing fetches (a wrong password in the URL): logs, error bodies,
    // /documents.
    let wrong = "Wr0ngButSecret";
    let admin = format!("127.0.0.1:{}", free_port());
    let admin_url = format!("http://{admin}");
    let failing = Process::start(
        &[
            "--upstream",
            &upstream.base_url,
            "--admin-listen",
            &admin,
            "--upstream-proxy",
            &proxy.url_with(USER, wrong),
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let r = get(&failing.url(AS_PATH)).await;
    assert_eq!(r.status, 502, "{}", text(&r));
    assert!(text(&r).contains("answered 401"), "{}", text(&r));
    failing
        .wait_for_log("answered 401", Duration::from_secs(10))
        .await;
    let documents = get(&format!("{admin_url}/documents")).await;
    assert!(text(&documents).contains("proxy"), "{}", text(&documents));
    for place in [text(&r), text(&documents), failing.text()] {
        assert!(!place.contains(wrong), "{place}");
    }

    // Start-up errors: a bad flag, a bad variable, a bad config file key,
    // and a config line with a syntax error are refused without the
    // password; --help does not show the variable's value.
    let (_dir, bad_file) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{}\"\nproxy = \"socks5://{USER}:{PASSWORD}@127.0.0.1:1080\"\n",
        upstream.base_url
    ));
    let (_dir2, broken_file) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{}\"\nproxy = \"http://{USER}:{PASSWORD}@127.0.0.1:3128\n",
        upstream.base_url
    ));
    let socks = format!("socks5://{USER}:{PASSWORD}@127.0.0.1:1080");
    let bad_port = format!("http://{USER}:{PASSWORD}@127.0.0.1:99999");
    let https = format!("https://{USER}:{PASSWORD}@127.0.0.1:3128");
    /// Arguments, environment, and what the message must name.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--upstream-proxy", &socks], vec![], "--upstream-proxy"),
        (
            vec![],
            vec![("GATEWAY_UPSTREAM_PROXY", &https)],
            "--upstream-proxy",
        ),
        (vec![], vec![("HTTPS_PROXY", &bad_port)], "HTTPS_PROXY"),
        (vec!["--config", &bad_file], vec![], "proxy"),
        (vec!["--config", &broken_file], vec![], "line 3"),
    ];
    for (args, envs, names) in cases {
        let (status, out) = Process::spawn(&args, &envs)
            .wait(Duration::from_secs(10))
            .await;
        assert_eq!(status.code(), Some(2), "{args:?} {out}");
        assert!(out.contains(names), "{args:?}: {out}");
        assert!(!out.contains(PASSWORD), "{args:?}: {out}");
    }
    let (_, help) = Process::spawn(&["--help"], &[("GATEWAY_UPSTREAM_PROXY", &socks)])
        .wait(Duration::from_secs(10))
        .await;
    assert!(help.contains("--upstream-proxy"), "{help}");
    assert!(!help.contains(PASSWORD), "{help}");

    // `check` fetches through the proxy too, and shows it redacted.
    let mut child = without_proxy_env(&mut Command::new(support::process::BIN))
        .args([
            "check",
            &upstream.base_url,
            "--upstream-timeout",
            "5s",
            "--upstream-proxy",
            &proxy.url_with(USER, PASSWORD),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not blocking: this runtime serves the upstream meanwhile.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "check hangs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.contains(&format!("fetching through the proxy {}", proxy.shown())),
        "{out}"
    );
    assert!(
        out.contains(&format!("GET {}{AS_PATH}: HTTP 200", upstream.base_url)),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");
}
