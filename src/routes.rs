//! The route table: every path the gateway serves a document at, built once
//! from the typed configuration, answering "what is served here?" with one
//! hash lookup whatever the number of documents.
//!
//! - Exact routes (configured documents, protected resources): a
//!   `HashMap` from the exact path to its target. The path compared is the
//!   one actix-web routes on (percent-encoded bytes decoded except `%2F`,
//!   `%25` and `%2B`, which stay encoded), so `..`, a doubled or encoded
//!   slash, or any unknown suffix finds nothing.
//! - Template routes (issuer templates): tried only when no exact route
//!   matched. They are indexed by the text before `{tenant}`, so a path is
//!   looked up once per `/` it contains (a handful of hash lookups),
//!   whatever the number of templates; templates never overlap (checked at
//!   start-up), so at most one matches. The text standing for `{tenant}` must pass
//!   [`crate::tenant::valid_tenant`] and the raw request path must hold no
//!   `%` at all, so a tenant reaching an upstream URL is exactly what the
//!   client sent, in the conservative grammar.
//!
//! Both maps hash with foldhash's randomly seeded `RandomState` rather than
//! SipHash: the path is hashed on every request, and foldhash costs a
//! fraction of SipHash on a short string. Hash flooding needs an attacker
//! to *insert* colliding keys; these maps hold only configured paths and
//! are never written after they are built, so a client's path can only be
//! looked up, and the per-process random seed still keeps collisions from
//! being computed ahead of time.
//!
//! Each target carries its `route` metrics label (the configured path, a
//! document-kind pattern when per-document labels are off, or the template
//! route): bounded by the configuration, never a raw path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::config::Documents;
use crate::discovery::DocumentKind;
use crate::tenant::{valid_tenant, Pattern};

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Configured upstream document `i` (`Config::documents.documents[i]`).
    Document(usize),
    /// Protected resource document `i`.
    Local(usize),
}

/// The answer for one request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved<'p> {
    /// An exact route.
    Exact(Target),
    /// Template `template`'s route, for this (checked) tenant.
    Tenant {
        /// Index into `Config::documents.templates`.
        template: usize,
        /// The tenant segment.
        tenant: &'p str,
    },
    /// Nothing is served here.
    NotFound,
}

/// A `route` metrics label handed out by one route table. When a reload
/// drops the label, it is marked retired, so a request still running on
/// the old table does not bring the label's series back after they were
/// removed (see [`crate::http::recorder`]).
///
/// Each label of a table has a dense [`id`](Self::id) (0, 1, 2, ... in
/// the order the table made them), so the HTTP metrics of a request are
/// found by indexing, not by comparing strings.
#[derive(Debug)]
pub struct RouteLabel {
    /// The label value.
    pub name: Box<str>,
    id: usize,
    retired: AtomicBool,
}

impl RouteLabel {
    /// A live label with id 0 (a label outside a route table).
    pub fn new(name: &str) -> Self {
        Self::with_id(name, 0)
    }

    /// A live label with a table's dense id.
    pub fn with_id(name: &str, id: usize) -> Self {
        Self {
            name: name.into(),
            id,
            retired: AtomicBool::new(false),
        }
    }

    /// Its index among its table's labels (dense: below the number of
    /// labels the table made).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Marks the label as gone from the configuration.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// True once a reload dropped the label.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct TemplateRoute {
    pattern: Pattern,
    template: usize,
    label: Arc<RouteLabel>,
}

/// Paths to targets, with their metrics labels.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Arc<str>, (Target, Arc<RouteLabel>), RandomState>,
    templates: Vec<TemplateRoute>,
    /// Indices into `templates` by the pattern's text before `{tenant}`.
    template_prefixes: HashMap<Box<str>, Vec<usize>, RandomState>,
}

/// The `route` label of a configured route when labels are per kind.
fn kind_label(kind: DocumentKind) -> String {
    format!("/.well-known/{}/*", kind.well_known())
}

impl RouteTable {
    /// Builds the table; `per_document_labels` chooses the route labels of
    /// exact routes (their own path, or one pattern per document kind).
    pub fn build(docs: &Documents, per_document_labels: bool) -> Self {
        let mut labels: HashMap<String, Arc<RouteLabel>> = HashMap::new();
        let mut label = |text: String| -> Arc<RouteLabel> {
            let id = labels.len();
            labels
                .entry(text)
                .or_insert_with_key(|k| Arc::new(RouteLabel::with_id(k, id)))
                .clone()
        };
        let mut exact = HashMap::default();
        for (i, d) in docs.documents.iter().enumerate() {
            for r in &d.routes {
                let l = if per_document_labels {
                    label(r.to_string())
                } else {
                    label(kind_label(d.kind))
                };
                exact.entry(r.clone()).or_insert((Target::Document(i), l));
            }
        }
        for (i, d) in docs.protected_resources.iter().enumerate() {
            for r in &d.routes {
                let l = if per_document_labels {
                    label(r.clone())
                } else {
                    label(kind_label(DocumentKind::ProtectedResource))
                };
                exact
                    .entry(r.as_str().into())
                    .or_insert((Target::Local(i), l));
            }
        }
        let templates = docs
            .templates
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.routes.iter().map(move |p| (i, p)))
            .map(|(template, pattern)| TemplateRoute {
                label: label(pattern.as_template()),
                pattern: pattern.clone(),
                template,
            })
            .collect::<Vec<TemplateRoute>>();
        let mut template_prefixes: HashMap<Box<str>, Vec<usize>, RandomState> = HashMap::default();
        for (i, t) in templates.iter().enumerate() {
            template_prefixes
                .entry(t.pattern.prefix().into())
                .or_default()
                .push(i);
        }
        Self {
            exact,
            templates,
            template_prefixes,
        }
    }

    /// What `path` (as actix-web routes on it) serves; `raw_path` is the
    /// request path as sent (checked for `%` before a template matches).
    pub fn resolve<'p>(
        &self,
        path: &'p str,
        raw_path: &str,
    ) -> (Resolved<'p>, Option<&Arc<RouteLabel>>) {
        if let Some((target, label)) = self.exact.get(path) {
            return (Resolved::Exact(*target), Some(label));
        }
        if !self.templates.is_empty() && !raw_path.contains('%') {
            // Each `/` ends a candidate prefix; the tenant segment follows it.
            for (end, _) in path.match_indices('/') {
                let Some(candidates) = self.template_prefixes.get(&path[..=end]) else {
                    continue;
                };
                for t in candidates.iter().filter_map(|&i| self.templates.get(i)) {
                    if let Some(tenant) = t.pattern.capture(path) {
                        if valid_tenant(tenant) {
                            return (
                                Resolved::Tenant {
                                    template: t.template,
                                    tenant,
                                },
                                Some(&t.label),
                            );
                        }
                    }
                }
            }
        }
        (Resolved::NotFound, None)
    }

    /// Every exact route with its target, in no particular order.
    pub fn exact_routes(&self) -> impl Iterator<Item = (&str, Target)> {
        self.exact.iter().map(|(r, (t, _))| (&**r, *t))
    }

    /// Every `route` label the table hands out (a shared label once per
    /// route).
    pub fn labels(&self) -> impl Iterator<Item = &Arc<RouteLabel>> {
        self.exact
            .values()
            .map(|(_, l)| l)
            .chain(self.templates.iter().map(|t| &t.label))
    }

    /// Number of exact routes.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// True when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.templates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::documents::{
        authorization_server, AuthorizationServerSpec, IssuerDocuments,
    };
    use std::time::Duration;

    fn docs(issuers: &[&str]) -> Documents {
        let mut d = Documents::default();
        for issuer in issuers {
            match authorization_server(&AuthorizationServerSpec {
                issuer,
                upstream: None,
                openid_configuration: false,
                ttl: Duration::from_secs(60),
                max_stale: Duration::ZERO,
                template: None,
                key_set: None,
            })
            .unwrap()
            {
                IssuerDocuments::Fixed(f) => d.documents.extend(f),
                IssuerDocuments::Templates(t) => d.templates.extend(t),
            }
        }
        d
    }

    #[test]
    fn exact_routes_win_and_templates_check_the_tenant() {
        let t = RouteTable::build(
            &docs(&[
                "https://a/realms/{tenant}",
                "https://a/realms/special",
                "https://a",
            ]),
            true,
        );
        fn r<'p>(t: &RouteTable, p: &'p str) -> Resolved<'p> {
            t.resolve(p, p).0
        }
        let r = |p: &'static str| r(&t, p);
        assert_eq!(
            r("/.well-known/oauth-authorization-server"),
            Resolved::Exact(Target::Document(1))
        );
        assert_eq!(
            r("/.well-known/oauth-authorization-server/realms/special"),
            Resolved::Exact(Target::Document(0))
        );
        assert_eq!(
            r("/.well-known/oauth-authorization-server/realms/acme"),
            Resolved::Tenant {
                template: 0,
                tenant: "acme"
            }
        );
        for bad in [
            "/.well-known/oauth-authorization-server/realms/",
            "/.well-known/oauth-authorization-server/realms/..",
            "/.well-known/oauth-authorization-server/realms/a/b",
            "/.well-known/oauth-authorization-server/realms/a b",
            "/.well-known/oauth-authorization-server/realms/a\0",
            "/.well-known/oauth-authorization-server/realms",
            "/.well-known/oauth-authorization-server/",
        ] {
            assert_eq!(r(bad), Resolved::NotFound, "{bad:?}");
        }
        // A percent-encoded byte anywhere in the raw path: no template match.
        assert_eq!(
            t.resolve(
                "/.well-known/oauth-authorization-server/realms/acme",
                "/.well-known/oauth-authorization-server/realms/%61cme"
            )
            .0,
            Resolved::NotFound
        );
        let (_, label) = t.resolve(
            "/.well-known/oauth-authorization-server/realms/x",
            "/.well-known/oauth-authorization-server/realms/x",
        );
        assert_eq!(
            label.map(|l| &*l.name),
            Some("/.well-known/oauth-authorization-server/realms/{tenant}")
        );
    }

    #[test]
    fn many_templates_are_found_by_their_prefix() {
        let mut issuers: Vec<String> = (0..300)
            .map(|i| format!("https://a/p{i}/{{tenant}}"))
            .collect();
        // One prefix shared by two templates of different lengths, and a
        // tenant in the middle of the path (Entra ID's shape).
        issuers.push("https://a/shared/{tenant}".into());
        issuers.push("https://a/shared/{tenant}/v2.0".into());
        issuers.push("https://b/{tenant}/v2.0".into());
        let refs: Vec<&str> = issuers.iter().map(String::as_str).collect();
        let t = RouteTable::build(&docs(&refs), true);
        let r = |p: &str| match t.resolve(p, p).0 {
            Resolved::Tenant { template, tenant } => Some((template, tenant.to_string())),
            _ => None,
        };
        let base = "/.well-known/oauth-authorization-server";
        for i in [0, 150, 299] {
            assert_eq!(r(&format!("{base}/p{i}/acme")), Some((i, "acme".into())));
        }
        assert_eq!(r(&format!("{base}/shared/x")), Some((300, "x".into())));
        assert_eq!(r(&format!("{base}/shared/x/v2.0")), Some((301, "x".into())));
        assert_eq!(
            r(&format!("{base}/contoso/v2.0")),
            Some((302, "contoso".into()))
        );
        for bad in [
            "/p300/acme",
            "/p1/a/b",
            "/shared/x/v3",
            "/contoso/v2.1",
            "/p1/",
        ] {
            assert_eq!(r(&format!("{base}{bad}")), None, "{bad}");
        }
    }

    #[test]
    fn labels_fold_per_kind_when_asked() {
        let t = RouteTable::build(&docs(&["https://a/t1", "https://a/t2"]), false);
        let (_, l1) = t.resolve("/.well-known/oauth-authorization-server/t1", "");
        let (_, l2) = t.resolve("/.well-known/oauth-authorization-server/t2", "");
        assert_eq!(
            l1.map(|l| &*l.name),
            Some("/.well-known/oauth-authorization-server/*")
        );
        assert!(Arc::ptr_eq(l1.unwrap(), l2.unwrap()), "one label shared");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn label_ids_are_dense_and_distinct() {
        let t = RouteTable::build(
            &docs(&["https://a/t1", "https://a/t2", "https://a/realms/{tenant}"]),
            true,
        );
        let mut ids: Vec<(usize, &str)> = t.labels().map(|l| (l.id(), &*l.name)).collect();
        ids.sort_unstable();
        ids.dedup();
        let n = ids.len();
        assert!(n >= 3, "{ids:?}");
        assert_eq!(
            ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "{ids:?}"
        );
    }
}
