//! Server-side TLS for the listener (`--tls-cert`, `--tls-key`): rustls with
//! the ring provider. The pair is loaded and checked at start-up so that an
//! unreadable file, a file with no PEM item, or a key that does not belong
//! to the certificate is a one-line usage error naming the flag, never a
//! failure at the first handshake.
//!
//! The pair is also re-read while the gateway runs — on SIGHUP, and when
//! the files' contents change (checked every `--tls-reload-interval`:
//! cert-manager and the kubelet replace a mounted Secret without sending
//! any signal). The listener's rustls configuration resolves its
//! certificate through [`CertificateFiles`], which holds the current
//! `CertifiedKey` behind an `ArcSwap`: a new pair is used by the next
//! handshake, connections already open keep theirs, and the listener is
//! never restarted. A new pair is checked exactly like the first one; a
//! bad or mismatched pair is refused and logged with the reason, and the
//! previous pair keeps serving.
//!
//! ALPN is left to actix-http, which offers `h2` then `http/1.1` (RFC 7301;
//! RFC 9113 §3.2 requires ALPN `h2` for HTTP/2 over TLS).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Largest `--tls-cert` or `--tls-key` file read (a chain is a few KiB; a
/// path pointing at something else must not be read without end).
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Why the TLS files could not be used; `Display` names the flag.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServerTlsError {
    /// A problem with the `--tls-cert` file.
    #[error("invalid value for '--tls-cert': {0}")]
    Cert(String),
    /// A problem with the `--tls-key` file, or the pair.
    #[error("invalid value for '--tls-key': {0}")]
    Key(String),
}

/// The listener's TLS: the rustls configuration actix serves with, and the
/// certificate files it resolves through.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The configuration handed to the listener (its certificate comes
    /// from `certificate` at each handshake).
    pub server_config: Arc<ServerConfig>,
    /// The files and the pair currently served.
    pub certificate: Arc<CertificateFiles>,
    /// `--tls-reload-interval`: how often the files are checked for a
    /// change; `None` (0s) checks only on SIGHUP.
    pub check_every: Option<Duration>,
}

impl ListenerTls {
    /// Loads and checks the pair and builds the listener configuration.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        check_every: Option<Duration>,
    ) -> Result<Self, ServerTlsError> {
        let certificate = Arc::new(CertificateFiles::load(cert_path, key_path)?);
        let server_config = ServerConfig::builder_with_provider(certificate.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerTlsError::Cert(format!("no usable TLS protocol version: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        Ok(Self {
            server_config: Arc::new(server_config),
            certificate,
            check_every: check_every.filter(|d| !d.is_zero()),
        })
    }
}

/// Builds a rustls server configuration serving the pair in these files
/// (loaded once; the listener itself uses [`ListenerTls`]).
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, ServerTlsError> {
    ListenerTls::load(cert_path, key_path, None).map(|t| (*t.server_config).clone())
}

/// `--tls-cert` and `--tls-key`, and the pair currently served from them.
#[derive(Debug)]
pub struct CertificateFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// Digest of the files' contents last looked at (served or refused),
    /// so an unchanged file is neither parsed nor logged again.
    seen: Mutex<[u8; 32]>,
}

/// What re-reading the files did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateReload {
    /// The files have not changed since they were last looked at.
    Unchanged,
    /// A new pair is served from the next handshake on; the leaf's
    /// SHA-256 fingerprint (hex).
    Reloaded(String),
    /// The files are unusable; the previous pair keeps serving.
    Refused(ServerTlsError),
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertificateFiles {
    /// Reads and checks the pair (start-up: a problem is an error naming
    /// the flag).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, ServerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = read_pair(cert_path, key_path)?;
        let certified = certified_key(&cert, &key, cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(certified),
            seen: Mutex::new(digest(&cert, &key)),
        })
    }

    /// The leaf certificate currently served (DER).
    pub fn current_leaf(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }

    /// Reads the files again and serves the pair they hold if it is good.
    /// Without `force`, files whose contents have not changed since they
    /// were last looked at are left alone (the periodic check); with it
    /// (SIGHUP) they are loaded anyway. Logs what happened; blocking
    /// (file reads), so call it from a blocking thread.
    pub fn reload(&self, force: bool) -> CertificateReload {
        let files = (self.cert_path.display(), self.key_path.display());
        let outcome = self.try_reload(force);
        match &outcome {
            CertificateReload::Unchanged => {}
            CertificateReload::Reloaded(fingerprint) => {
                tracing::info!(cert = %files.0, key = %files.1, fingerprint, "listener certificate reloaded: new connections get it");
            }
            CertificateReload::Refused(reason) => {
                tracing::warn!(cert = %files.0, key = %files.1, "listener certificate reload refused, the previous certificate keeps serving: {reason}");
            }
        }
        outcome
    }

    fn try_reload(&self, force: bool) -> CertificateReload {
        // Held throughout: a SIGHUP and a periodic check never interleave
        // (an older read can never replace a newer pair).
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (cert, key) = match read_pair(&self.cert_path, &self.key_path) {
            Ok(pair) => pair,
            Err(e) => {
                // A file that cannot be read is reported once, until it
                // can be read again (all zeros: no digest of real files).
                if !force && *seen == [0; 32] {
                    return CertificateReload::Unchanged;
                }
                *seen = [0; 32];
                return CertificateReload::Refused(e);
            }
        };
        let now = digest(&cert, &key);
        if !force && *seen == now {
            return CertificateReload::Unchanged;
        }
        *seen = now;
        match certified_key(&cert, &key, &self.cert_path, &self.key_path, &self.provider) {
            Ok(certified) => {
                let fingerprint = hex(&Sha256::digest(&certified.cert[0]));
                self.current.store(Arc::new(certified));
                CertificateReload::Reloaded(fingerprint)
            }
            Err(e) => CertificateReload::Refused(e),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One digest over both files (the key's bytes are not kept).
fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_le_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), ServerTlsError> {
    let cert = read(cert_path).map_err(ServerTlsError::Cert)?;
    let key = read(key_path).map_err(ServerTlsError::Key)?;
    Ok((cert, key))
}

/// Parses and checks the pair: the chain, the key, and that the key
/// belongs to the leaf.
fn certified_key(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ServerTlsError> {
    let chain = parse_chain(cert, cert_path).map_err(ServerTlsError::Cert)?;
    let key = parse_key(key, key_path).map_err(ServerTlsError::Key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
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
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{} is larger than {MAX_PEM_FILE} bytes: not a PEM file",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` item of the file, leaf first.
fn parse_chain(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// The first private key item of the file (`PRIVATE KEY`, `RSA PRIVATE KEY`
/// or `EC PRIVATE KEY`).
fn parse_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
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
    fn a_new_pair_is_served_a_bad_one_refused_and_the_old_one_kept() {
        let f = Files::new("reload");
        let (cert, key) = pair();
        let cert_p = f.write("c.pem", &cert);
        let key_p = f.write("k.pem", &key);
        let files = CertificateFiles::load(&cert_p, &key_p).unwrap();
        let first = files.current_leaf();
        assert_eq!(files.reload(false), CertificateReload::Unchanged);
        assert!(matches!(files.reload(true), CertificateReload::Reloaded(_)));
        assert_eq!(files.current_leaf(), first);

        // A mismatched pair: refused once, the first pair still served.
        let (cert2, key2) = pair();
        f.write("c.pem", &cert2);
        match files.reload(false) {
            CertificateReload::Refused(e) => {
                assert!(e.to_string().contains("does not belong"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(files.current_leaf(), first);
        assert_eq!(
            files.reload(false),
            CertificateReload::Unchanged,
            "logged once"
        );

        // The matching key arrives: the new pair is served.
        f.write("k.pem", &key2);
        assert!(matches!(
            files.reload(false),
            CertificateReload::Reloaded(_)
        ));
        let second = files.current_leaf();
        assert_ne!(second, first);

        // Files gone: refused once, the pair in memory keeps serving.
        std::fs::remove_file(&key_p).unwrap();
        assert!(matches!(
            files.reload(false),
            CertificateReload::Refused(ServerTlsError::Key(_))
        ));
        assert_eq!(files.reload(false), CertificateReload::Unchanged);
        assert_eq!(files.current_leaf(), second);
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
