//! A test certificate authority (rcgen) issuing leaf certificates for
//! 127.0.0.1/localhost into PEM files that a test can replace while the
//! gateway runs, and a TLS client that reports the leaf a listener served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;

/// One leaf certificate and its key, as PEM, plus the leaf's DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A CA and a directory (removed on drop) holding `cert.pem`/`key.pem`.
pub struct TestCa {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A new leaf for 127.0.0.1 and localhost, signed by this CA.
    pub fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes `cert_pem` and `key_pem` as the served files, each replaced
    /// atomically (written aside, then renamed), key first.
    pub fn install(&self, cert_pem: &str, key_pem: &str) {
        replace(&self.key_path(), key_pem);
        replace(&self.cert_path(), cert_pem);
    }

    /// `--tls-cert`, `--tls-key` for these files.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_path().display().to_string(),
            "--tls-key".into(),
            self.key_path().display().to_string(),
        ]
    }

    /// A rustls client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// Opens a new TLS connection to `addr` (trusting this CA) and
    /// returns the leaf the server presented.
    pub async fn served_leaf(&self, addr: SocketAddr) -> Result<CertificateDer<'static>, String> {
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned())
                .ok_or_else(|| "no certificate".to_string())
        };
        tokio::time::timeout(Duration::from_secs(10), handshake)
            .await
            .map_err(|_| "handshake timed out".to_string())?
    }

    /// Polls new connections (bounded by `limit`) until the server
    /// presents `want`.
    pub async fn wait_for_leaf(
        &self,
        addr: SocketAddr,
        want: &CertificateDer<'static>,
        limit: Duration,
    ) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.served_leaf(addr).await;
            if got.as_ref() == Ok(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the new certificate was not served within {limit:?} (last: {:?})",
                got.map(|_| "the old certificate")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(aside, path).unwrap();
}
