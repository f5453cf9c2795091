//! Server-side TLS for the listener (`--tls-cert`, `--tls-key`): rustls with
//! the ring provider, loaded and checked at start-up so that an unreadable
//! file, a file with no PEM item, or a key that does not belong to the
//! certificate is a one-line usage error naming the flag, never a failure at
//! the first handshake.
//!
//! ALPN is left to actix-http, which offers `h2` then `http/1.1` (RFC 7301;
//! RFC 9113 §3.2 requires ALPN `h2` for HTTP/2 over TLS).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files could not be used; `Display` names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerTlsError {
    /// A problem with the `--tls-cert` file.
    #[error("invalid value for '--tls-cert': {0}")]
    Cert(String),
    /// A problem with the `--tls-key` file, or the pair.
    #[error("invalid value for '--tls-key': {0}")]
    Key(String),
}

/// Builds the rustls server configuration from a PEM certificate chain and
/// a PEM private key.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, ServerTlsError> {
    let chain = load_chain(cert_path).map_err(ServerTlsError::Cert)?;
    let key = load_key(key_path).map_err(ServerTlsError::Key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerTlsError::Cert(format!("no usable TLS protocol version: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ServerTlsError::Key(format!(
                "the private key in {} does not belong to the certificate in {} (--tls-cert)",
                key_path.display(),
                cert_path.display()
            )),
            other => ServerTlsError::Key(format!(
                "{} cannot be used with the certificate in {}: {other}",
                key_path.display(),
                cert_path.display()
            )),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every `CERTIFICATE` item of the file, leaf first.
fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// The first private key item of the file (`PRIVATE KEY`, `RSA PRIVATE KEY`
/// or `EC PRIVATE KEY`).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no PEM private key", path.display())
        }
        other => format!("{} is not a PEM private key file: {other}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: std::path::PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "omg-tls-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self { dir }
        }

        fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
            let p = self.dir.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let f = Files::new("ok");
        let (cert, key) = pair();
        let cfg = server_config(&f.write("c.pem", &cert), &f.write("k.pem", &key));
        assert!(cfg.is_ok(), "{cfg:?}");
    }

    #[test]
    fn each_problem_names_its_flag() {
        let f = Files::new("bad");
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let cert_p = f.write("c.pem", &cert);
        let key_p = f.write("k.pem", &key);
        let missing = f.dir.join("missing.pem");
        let empty = f.write("empty.pem", "");
        let cases = [
            (missing.clone(), key_p.clone(), "--tls-cert", "cannot read"),
            (
                empty.clone(),
                key_p.clone(),
                "--tls-cert",
                "no PEM certificate",
            ),
            (
                key_p.clone(),
                key_p.clone(),
                "--tls-cert",
                "no PEM certificate",
            ),
            (cert_p.clone(), missing, "--tls-key", "cannot read"),
            (cert_p.clone(), empty, "--tls-key", "no PEM private key"),
            (
                cert_p.clone(),
                cert_p.clone(),
                "--tls-key",
                "no PEM private key",
            ),
            (
                cert_p.clone(),
                f.write("other.pem", &other_key),
                "--tls-key",
                "does not belong",
            ),
        ];
        for (c, k, flag, needle) in cases {
            let err = server_config(&c, &k)
                .expect_err("must be refused")
                .to_string();
            assert!(err.contains(flag), "{c:?} {k:?}: {err}");
            assert!(err.contains(needle), "{c:?} {k:?}: {err}");
        }
    }
}
