//! HTTPS on the listener (`--tls-cert`, `--tls-key`) with a certificate
//! generated for the test by rcgen: the metadata over HTTP/1.1 and over
//! HTTP/2 (ALPN), and the start-up errors for bad files.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use awc::http::Version;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::*;

/// A test CA, a leaf for 127.0.0.1/localhost signed by it, and the PEM
/// files in a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca_der: rustls_pki_types::CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "omg-tls-listener-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        // Leaf first, then the CA, as a server sends its chain.
        std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        Self {
            ca_der: ca.der().clone(),
            dir,
            cert,
            key,
        }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An awc client trusting only the test CA and offering `alpn`.
fn https_client(ca: &rustls_pki_types::CertificateDer<'static>, alpn: &[&[u8]]) -> awc::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)).limit(0))
        .timeout(Duration::from_secs(10))
        .finish()
}

async fn start(upstream: &Upstream, pki: &Pki) -> (TestGateway, String) {
    let args = pki.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = TestGateway::in_front_of(upstream, &args).await;
    let base = format!("https://127.0.0.1:{}", gw.addr.port());
    (gw, base)
}

#[actix_web::test]
async fn serves_the_metadata_over_http1_and_http2() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let pki = Pki::new();
    let (gw, base) = start(&upstream, &pki).await;

    let h1: &[&[u8]] = &[b"http/1.1"];
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let h2_only: &[&[u8]] = &[b"h2"];
    for (alpn, version) in [
        (h1, Version::HTTP_11),
        (both, Version::HTTP_2),
        (h2_only, Version::HTTP_2),
    ] {
        let c = https_client(&pki.ca_der, alpn);
        let mut res = c
            .get(format!("{base}{AS_PATH}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(res.version(), version);
        assert_eq!(res.status(), 200);
        let got = res.body().await.unwrap();
        assert_eq!(got, body.as_bytes(), "{version:?}");
        let h = res.headers();
        assert_eq!(h.get("access-control-allow-origin").unwrap(), "*");
        assert!(h.get("etag").is_some());
        assert!(h
            .get("cache-status")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("oauth-metadata-gateway;"));

        // A body on a metadata route is refused on either protocol.
        let res = c
            .get(format!("{base}{AS_PATH}"))
            .insert_header(("content-type", "application/json"))
            .send_body("{}")
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(res.status(), 413, "{version:?}");
        assert_eq!(
            res.headers().get("access-control-allow-origin").unwrap(),
            "*"
        );
    }
    // One upstream fetch served every request.
    assert_eq!(upstream.requests(), 1);
    gw.stop().await.unwrap();
}

#[actix_web::test]
async fn plain_http_to_the_tls_listener_gets_no_answer() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let pki = Pki::new();
    let (gw, _base) = start(&upstream, &pki).await;
    let res = client()
        .get(format!("http://127.0.0.1:{}{AS_PATH}", gw.addr.port()))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        res.is_err(),
        "plain HTTP was answered: {:?}",
        res.map(|r| r.status())
    );
    // ...and the listener still serves HTTPS afterwards.
    let mut ok = https_client(&pki.ca_der, &[b"http/1.1"])
        .get(format!("https://127.0.0.1:{}/healthz", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let _ = ok.body().await;
    gw.stop().await.unwrap();
}

#[actix_web::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let pki = Pki::new();
    let other = Pki::new();
    let (gw, base) = start(&upstream, &pki).await;
    let res = https_client(&other.ca_der, &[b"http/1.1"])
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(res.is_err(), "a certificate from the wrong CA was accepted");
    gw.stop().await.unwrap();
}

fn config_error(args: &[&str]) -> clap::Error {
    let mut full = vec!["oauth-metadata-gateway"];
    full.extend_from_slice(args);
    support::config_from_args(full).expect_err("must be refused")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn bad_tls_files_are_usage_errors_naming_the_flag() {
    let pki = Pki::new();
    let other = Pki::new();
    let missing = pki.dir.join("missing.pem");
    let garbage = pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--tls-cert", p(&pki.cert)], "--tls-key", "required"),
        (vec!["--tls-key", p(&pki.key)], "--tls-cert", "required"),
        (
            vec!["--tls-cert", p(&missing), "--tls-key", p(&pki.key)],
            "--tls-cert",
            "cannot read",
        ),
        (
            vec!["--tls-cert", p(&garbage), "--tls-key", p(&pki.key)],
            "--tls-cert",
            "not a PEM certificate",
        ),
        (
            vec!["--tls-cert", p(&pki.cert), "--tls-key", p(&missing)],
            "--tls-key",
            "cannot read",
        ),
        (
            vec!["--tls-cert", p(&pki.cert), "--tls-key", p(&pki.cert)],
            "--tls-key",
            "no PEM private key",
        ),
        (
            vec!["--tls-cert", p(&pki.cert), "--tls-key", p(&other.key)],
            "--tls-key",
            "does not belong",
        ),
    ];
    for (args, flag, needle) in cases {
        let err = config_error(&args);
        assert_eq!(err.exit_code(), 2, "{args:?}");
        let text = err.to_string();
        assert!(text.contains(flag), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}

#[test]
fn the_binary_exits_2_on_a_mismatched_key() {
    let pki = Pki::new();
    let other = Pki::new();
    let out = support::without_proxy_env(&mut std::process::Command::new(env!(
        "CARGO_BIN_EXE_oauth-metadata-gateway"
    )))
    .args([
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        p(&pki.cert),
        "--tls-key",
        p(&other.key),
    ])
    .env_remove("GATEWAY_LISTEN")
    .output()
    .expect("run the binary");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");
}

/// The connection watchdog also recognises TLS connections: a kept-alive
/// HTTPS connection whose second request head trickles is cut off.
#[actix_web::test]
async fn a_slow_second_request_over_tls_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let pki = Pki::new();
    let mut args = pki.args();
    args.extend(["--client-request-timeout", "1s", "--keep-alive", "1s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = TestGateway::in_front_of(&upstream, &args).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");

    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("first response in time")
            .unwrap();
        assert!(n > 0, "closed before the first response");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    let started = std::time::Instant::now();
    let mut cut = false;
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
    {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the trickled second request held the TLS connection for 10s"
    );
    gw.stop().await.unwrap();
}

/// The gateway's HTTPS listener with its certificate files in `ca`'s
/// directory, checked for changes every 100 ms.
async fn start_reloading(upstream: &Upstream, ca: &support::pki::TestCa) -> TestGateway {
    let mut args = ca.args();
    args.extend(["--tls-reload-interval", "100ms"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestGateway::in_front_of(upstream, &args).await
}

/// cert-manager and the kubelet replace a mounted Secret's files without
/// any signal: a new connection gets the new certificate within the check
/// period, over the same listener, and still gets its answer.
#[actix_web::test]
async fn replaced_certificate_files_are_served_without_a_signal() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let ca = support::pki::TestCa::new();
    let first = ca.leaf();
    ca.install(&first.cert_pem, &first.key_pem);
    let gw = start_reloading(&upstream, &ca).await;
    assert_eq!(ca.served_leaf(gw.addr).await.unwrap(), first.der);

    let second = ca.leaf();
    ca.install(&second.cert_pem, &second.key_pem);
    ca.wait_for_leaf(gw.addr, &second.der, Duration::from_secs(10))
        .await;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(ca.client_config()))
        .timeout(Duration::from_secs(10))
        .finish();
    let base = format!("https://127.0.0.1:{}", gw.addr.port());
    let res = client.get(format!("{base}{AS_PATH}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut res = client.get(format!("{base}/metrics")).send().await.unwrap();
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("metadata_gateway_tls_certificate_reloads_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    gw.stop().await.unwrap();
}

/// A certificate whose key is not the one in --tls-key is refused (and
/// counted), and the previous pair keeps serving new connections.
#[actix_web::test]
async fn a_mismatched_pair_is_refused_and_the_old_one_keeps_serving() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let ca = support::pki::TestCa::new();
    let first = ca.leaf();
    ca.install(&first.cert_pem, &first.key_pem);
    let gw = start_reloading(&upstream, &ca).await;
    let client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(ca.client_config())
                .limit(0),
        )
        .timeout(Duration::from_secs(10))
        .finish();
    let metrics = format!("https://127.0.0.1:{}/metrics", gw.addr.port());

    let other = ca.leaf();
    ca.install(&other.cert_pem, &first.key_pem);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut res = client.get(&metrics).send().await.unwrap();
        let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
        if text.contains("metadata_gateway_tls_certificate_reloads_total{outcome=\"refused\"} 1") {
            assert!(
                text.contains("metadata_gateway_tls_certificate_reloads_total{outcome=\"ok\"} 0"),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mismatched pair was never refused:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ca.served_leaf(gw.addr).await.unwrap(), first.der);
    let res = client
        .get(format!("https://127.0.0.1:{}{AS_PATH}", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.stop().await.unwrap();
}
