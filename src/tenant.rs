//! Issuer templates: `{tenant}` as one whole path segment of an issuer,
//! its upstream and its routes, and the check every tenant segment from a
//! request passes before anything else sees it.
//!
//! A template is the one place where part of a request path becomes part of
//! an upstream URL, so the segment is held to a conservative grammar (far
//! narrower than RFC 3986 `segment`): ASCII letters, digits, `-`, `_` and
//! `.`, not `.` or `..` alone, at most [`MAX_TENANT_LEN`] bytes. No `/`
//! (one segment only), no `%` (no percent-encoded bytes: the router also
//! refuses a template match on a raw path holding `%`), no NUL. Anything
//! else is a 404 with no upstream request. These names cover the
//! multi-tenant servers in the wild: Keycloak realms (`/realms/{realm}`),
//! Microsoft Entra ID tenants (GUIDs and `contoso.onmicrosoft.com`, in the
//! middle of the path: `/{tenant}/v2.0`), Okta authorization server ids
//! (`/oauth2/{id}`).

/// The placeholder, as written in the configuration.
pub const PLACEHOLDER: &str = "{tenant}";

/// Longest tenant segment accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// True when `segment` is an acceptable tenant name (see the module docs).
pub fn valid_tenant(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_TENANT_LEN
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A string with one `{tenant}` in it, kept as the text before and after.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    prefix: Box<str>,
    suffix: Box<str>,
}

impl Pattern {
    /// Splits `text` at its only `{tenant}`; `None` when it has none or
    /// more than one.
    pub fn parse(text: &str) -> Option<Self> {
        let (prefix, suffix) = text.split_once(PLACEHOLDER)?;
        if suffix.contains(PLACEHOLDER) {
            return None;
        }
        Some(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The text before `{tenant}` (it ends with `/`: the placeholder is a
    /// whole segment).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The text with `tenant` in place of `{tenant}`.
    pub fn render(&self, tenant: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + tenant.len() + self.suffix.len());
        s.push_str(&self.prefix);
        s.push_str(tenant);
        s.push_str(&self.suffix);
        s
    }

    /// The part of `text` standing where `{tenant}` stands, when the rest
    /// matches exactly. The part is not checked here (see [`valid_tenant`]).
    pub fn capture<'t>(&self, text: &'t str) -> Option<&'t str> {
        let rest = text.strip_prefix(&*self.prefix)?;
        rest.strip_suffix(&*self.suffix)
    }

    /// Whether some path matches both patterns, taking the tenant grammar
    /// into account: same number of segments, and at every position equal
    /// literals or a placeholder facing a literal a tenant could be.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let a = self.segments();
        let b = other.segments();
        a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| match (x, y) {
                (None, None) => true,
                (None, Some(lit)) | (Some(lit), None) => valid_tenant(lit),
                (Some(l), Some(r)) => l == r,
            })
    }

    /// Path segments, `None` for the placeholder.
    fn segments(&self) -> Vec<Option<&str>> {
        let mut out: Vec<Option<&str>> = self.prefix.split('/').map(Some).collect();
        // The prefix ends with `/` (whole segment), so its last piece is
        // the empty text before the placeholder.
        if let Some(last) = out.last_mut() {
            *last = None;
        }
        let mut rest = self.suffix.split('/');
        if let Some(first) = rest.next() {
            debug_assert!(first.is_empty(), "the placeholder is a whole segment");
        }
        out.extend(rest.map(Some));
        out
    }

    /// The pattern as configured, with `{tenant}`.
    pub fn as_template(&self) -> String {
        self.render(PLACEHOLDER)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{PLACEHOLDER}{}", self.prefix, self.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_grammar() {
        for ok in ["acme", "a", "A-b_c.d", "contoso.onmicrosoft.com", "..."] {
            assert!(valid_tenant(ok), "{ok}");
        }
        assert!(valid_tenant(&"x".repeat(MAX_TENANT_LEN)));
        for bad in [
            "", ".", "..", "a/b", "a%2Fb", "a\0", "a b", "é", "a~", "a:b", "a?",
        ] {
            assert!(!valid_tenant(bad), "{bad:?}");
        }
        assert!(!valid_tenant(&"x".repeat(MAX_TENANT_LEN + 1)));
    }

    #[test]
    fn patterns_render_and_capture() {
        let p = Pattern::parse("/.well-known/oauth-authorization-server/{tenant}/v2.0").unwrap();
        assert_eq!(
            p.render("acme"),
            "/.well-known/oauth-authorization-server/acme/v2.0"
        );
        assert_eq!(
            p.capture("/.well-known/oauth-authorization-server/acme/v2.0"),
            Some("acme")
        );
        assert_eq!(
            p.capture("/.well-known/oauth-authorization-server/a/b/v2.0"),
            Some("a/b"),
            "capture does not judge; valid_tenant does"
        );
        assert_eq!(
            p.capture("/.well-known/oauth-authorization-server/acme"),
            None
        );
        assert_eq!(
            p.as_template(),
            "/.well-known/oauth-authorization-server/{tenant}/v2.0"
        );
        assert!(Pattern::parse("/no/placeholder").is_none());
        assert!(Pattern::parse("/{tenant}/{tenant}").is_none());
    }

    #[test]
    fn overlap_follows_segments_and_grammar() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("/a/{tenant}").overlaps(&p("/a/{tenant}")));
        assert!(p("/a/{tenant}/x").overlaps(&p("/a/b/{tenant}")));
        assert!(!p("/a/{tenant}").overlaps(&p("/a/{tenant}/x")));
        assert!(!p("/a/{tenant}").overlaps(&p("/b/{tenant}")));
        // `~` is no tenant character, so `/a/~` is no tenant of the first.
        assert!(!p("/a/{tenant}").overlaps(&p("/{tenant}/~")));
        assert!(p("/a/{tenant}").overlaps(&p("/{tenant}/b")));
    }
}
