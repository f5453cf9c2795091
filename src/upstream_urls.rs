//! The upstream URLs of one document, in the order a fetch tries them,
//! kept small because every configured document holds them for as long as
//! it is configured.
//!
//! An authorization server's discovery URLs (RFC 8414 §3.1 and §5, OpenID
//! Connect Discovery §4; see [`crate::discovery::upstream_urls`]) differ
//! only in where the well-known name goes, so they are kept as what they
//! are built from, the upstream's origin and path in one string, and built
//! when a fetch needs them (once per fetch, next to a network round trip).
//! At 10,000 configured issuers that is one 64-byte allocation per
//! document, where three `Arc<str>` and the list of them took 352 bytes.
//! URLs that are not derived (a configured `jwks_uri`, a tenant's rendered
//! template URLs) are kept as given.

use std::sync::Arc;

use crate::discovery::{self, DocumentKind, SplitUrl};

/// The URLs a document is fetched from, tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrls(Kept);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kept {
    /// [`discovery::upstream_urls`] of `kind` for the upstream
    /// `origin + path`, `upstream[..origin_len]` being the origin.
    Discovered {
        kind: DocumentKind,
        upstream: Arc<str>,
        origin_len: usize,
    },
    /// As given.
    Listed(Arc<[Arc<str>]>),
}

impl UpstreamUrls {
    /// The discovery URLs of a `kind` document whose upstream is `upstream`.
    pub fn discovered(kind: DocumentKind, upstream: &SplitUrl) -> Self {
        Self(Kept::Discovered {
            kind,
            upstream: format!("{}{}", upstream.origin, upstream.path.as_str()).into(),
            origin_len: upstream.origin.len(),
        })
    }

    /// Exactly `urls`.
    pub fn listed<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Self {
        Self(Kept::Listed(
            urls.into_iter().map(|u| Arc::from(u.as_ref())).collect(),
        ))
    }

    /// The URLs, built now for discovered ones.
    pub fn to_list(&self) -> Arc<[Arc<str>]> {
        match &self.0 {
            Kept::Listed(urls) => urls.clone(),
            Kept::Discovered { .. } => self.built().into_iter().map(Arc::from).collect(),
        }
    }

    /// The URLs as strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.built()
    }

    /// The first URL (the one tried first), if any.
    pub fn first(&self) -> Option<String> {
        self.to_strings().into_iter().next()
    }

    /// Text with the first URL's origin (`scheme://authority`) at its
    /// start, without building anything: the first URL itself, or for
    /// discovered URLs the upstream they are built from.
    pub fn origin_text(&self) -> Option<&str> {
        match &self.0 {
            Kept::Listed(urls) => urls.first().map(|u| &**u),
            Kept::Discovered { upstream, .. } => Some(upstream),
        }
    }

    /// How many URLs there are.
    pub fn len(&self) -> usize {
        match &self.0 {
            Kept::Listed(urls) => urls.len(),
            Kept::Discovered { .. } => self.built().len(),
        }
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn built(&self) -> Vec<String> {
        match &self.0 {
            Kept::Listed(urls) => urls.iter().map(|u| u.to_string()).collect(),
            Kept::Discovered {
                kind,
                upstream,
                origin_len,
            } => {
                let (origin, path) = upstream.split_at(*origin_len);
                let split = SplitUrl {
                    origin: origin.to_string(),
                    path: discovery::IdentifierPath::checked(path),
                };
                discovery::upstream_urls(*kind, &split)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_urls_are_the_discovery_rules_urls() {
        for issuer in ["https://as.example.com", "https://as.example.com/tenant/a"] {
            let split = discovery::split_url(issuer).expect("issuer");
            for kind in [
                DocumentKind::AuthorizationServer,
                DocumentKind::OpenIdConfiguration,
                DocumentKind::ProtectedResource,
            ] {
                let want = discovery::upstream_urls(kind, &split);
                let kept = UpstreamUrls::discovered(kind, &split);
                assert_eq!(kept.to_strings(), want, "{kind:?} {issuer}");
                assert_eq!(kept.len(), want.len());
                assert_eq!(kept.first(), want.first().cloned());
                let origin = |u: &str| u.split('/').take(3).collect::<Vec<_>>().join("/");
                assert_eq!(
                    kept.origin_text().map(origin),
                    want.first().map(|u| origin(u))
                );
                let list: Vec<String> = kept.to_list().iter().map(|u| u.to_string()).collect();
                assert_eq!(list, want);
            }
        }
    }

    #[test]
    fn listed_urls_are_kept_as_given() {
        let kept = UpstreamUrls::listed(["https://k.example/jwks", "https://k.example/b"]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.first().as_deref(), Some("https://k.example/jwks"));
        assert!(UpstreamUrls::listed(Vec::<String>::new()).is_empty());
        assert_eq!(kept, kept.clone());
    }
}
