//! TLS for upstream fetches: rustls with the Mozilla root store
//! (`webpki-roots`) plus any CA given with `--upstream-ca`, so https
//! authorization servers work out of the box with no OpenSSL build
//! dependency, and private PKIs work with one flag.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

use crate::error::RunError;

/// Builds the client configuration used for every https upstream.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, RunError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| RunError::Tls(format!("--upstream-ca certificate rejected: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RunError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
