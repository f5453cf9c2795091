//! https upstreams: a private CA given with `--upstream-ca` is trusted; the
//! same server is refused without it (and nothing is cached).

mod support;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oauth-metadata-gateway test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

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

#[actix_web::test]
async fn https_upstream_with_a_private_ca() {
    let pki = pki();
    let upstream = Upstream::start_tls(Behaviour::status(500), pki.server.clone()).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    assert!(upstream.base_url.starts_with("https://127.0.0.1:"));

    let dir = std::env::temp_dir().join(format!("omg-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    let trusted =
        TestGateway::in_front_of(&upstream, &["--upstream-ca", ca_file.to_str().unwrap()]).await;
    let r = poll_until(&trusted.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.body, body.as_bytes());

    // Without the CA the web PKI roots do not cover this server.
    let untrusted = TestGateway::in_front_of(&upstream, &["--retry-backoff-min", "5s"]).await;
    let r = get(&untrusted.url(AS_PATH)).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.cache_status().contains("detail=connect_error"),
        "{}",
        r.cache_status()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
