use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

fn policy() -> Policy {
    Policy {
        min_ttl: S(10),
        ttl: S(300),
        honour_upstream: true,
    }
}

fn cc(value: &str) -> UpstreamHeaders {
    UpstreamHeaders {
        cache_control: Some(value.into()),
        ..UpstreamHeaders::default()
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + S(1_700_000_000 + secs)
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn fresh_for(h: &UpstreamHeaders) -> (u64, Source) {
    let t = evaluate(h, at(0), policy());
    (t.fresh_for.as_secs(), t.source)
}

#[test]
fn lifetime_sources_in_rfc_order() {
    assert_eq!(fresh_for(&cc("max-age=60")), (60, Source::MaxAge));
    assert_eq!(
        fresh_for(&cc("public, max-age=60, s-maxage=20")),
        (20, Source::SMaxAge)
    );
    let mut h = UpstreamHeaders {
        expires: Some(http_date(at(40)).into()),
        date: Some(http_date(at(0)).into()),
        ..UpstreamHeaders::default()
    };
    assert_eq!(fresh_for(&h), (40, Source::Expires));
    // max-age wins over Expires (§5.3).
    h.cache_control = Some("max-age=90".into());
    assert_eq!(fresh_for(&h), (90, Source::MaxAge));
    // No Date: the receipt time stands in.
    let h = UpstreamHeaders {
        expires: Some(http_date(at(50)).into()),
        ..UpstreamHeaders::default()
    };
    assert_eq!(fresh_for(&h), (50, Source::Expires));
}

#[test]
fn clamped_to_min_ttl_and_ttl() {
    assert_eq!(fresh_for(&cc("max-age=100000")), (300, Source::MaxAge));
    assert_eq!(fresh_for(&cc("max-age=1")), (10, Source::MaxAge));
    assert_eq!(fresh_for(&cc("max-age=0")), (10, Source::MaxAge));
    // A min-ttl above the document's ttl is lowered to it.
    let p = Policy {
        ttl: S(5),
        ..policy()
    };
    assert_eq!(evaluate(&cc("max-age=1"), at(0), p).fresh_for, S(5));
}

#[test]
fn forbidding_directives_hold_for_min_ttl() {
    for v in [
        "no-store",
        "no-cache",
        "private",
        "Private, max-age=600",
        "max-age=600, NO-STORE",
        "max-age=abc",
        "max-age",
    ] {
        assert_eq!(fresh_for(&cc(v)), (10, Source::Uncacheable), "{v}");
    }
    // Qualified forms only concern header fields: still cacheable.
    assert_eq!(
        fresh_for(&cc("no-cache=\"set-cookie, x\", max-age=60")),
        (60, Source::MaxAge)
    );
    assert_eq!(
        fresh_for(&cc("private=\"x\", max-age=60")),
        (60, Source::MaxAge)
    );
    // An invalid Expires means already expired (§5.3).
    let h = UpstreamHeaders {
        expires: Some("0".into()),
        ..UpstreamHeaders::default()
    };
    assert_eq!(fresh_for(&h), (10, Source::Uncacheable));
}

#[test]
fn no_information_means_the_configured_ttl() {
    assert_eq!(
        fresh_for(&UpstreamHeaders::default()),
        (300, Source::Configured)
    );
    assert_eq!(fresh_for(&cc("public")), (300, Source::Configured));
    assert_eq!(fresh_for(&cc("must-revalidate")), (300, Source::Configured));
}

#[test]
fn upstream_age_is_subtracted_and_carried() {
    let mut h = cc("max-age=160");
    h.age = Some("100".into());
    let t = evaluate(&h, at(0), policy());
    assert_eq!(t.upstream_age, S(100));
    assert_eq!(t.fresh_for, S(60));
    // Older than its lifetime upstream: min-ttl.
    h.age = Some("200".into());
    assert_eq!(evaluate(&h, at(0), policy()).fresh_for, S(10));
    // An invalid Age is ignored.
    h.age = Some("-3".into());
    let t = evaluate(&h, at(0), policy());
    assert_eq!((t.upstream_age, t.fresh_for), (Duration::ZERO, S(160)));
}

#[test]
fn ignoring_upstream_freshness_is_the_fixed_ttl() {
    let mut h = cc("no-store, max-age=5");
    h.age = Some("100".into());
    let p = Policy {
        honour_upstream: false,
        ..policy()
    };
    let t = evaluate(&h, at(0), p);
    assert_eq!(
        (t.upstream_age, t.fresh_for, t.source),
        (Duration::ZERO, S(300), Source::Configured)
    );
}

#[test]
fn a_304_updates_what_it_carries() {
    let stored = UpstreamHeaders {
        cache_control: Some("max-age=60".into()),
        date: Some("old".into()),
        age: Some("5".into()),
        etag: Some("\"v1\"".into()),
        last_modified: Some("lm".into()),
        expires: None,
    };
    let nm = UpstreamHeaders {
        date: Some("new".into()),
        etag: Some("\"v1\"".into()),
        ..UpstreamHeaders::default()
    };
    let merged = stored.updated_by(&nm);
    assert_eq!(merged.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(merged.date.as_deref(), Some("new"));
    assert_eq!(merged.age, None);
    assert_eq!(merged.last_modified.as_deref(), Some("lm"));
    assert!(merged.has_validators());
    assert!(!UpstreamHeaders::default().has_validators());
}

#[test]
fn downstream_caches_are_told_only_what_the_upstream_allowed() {
    let told = |h: &UpstreamHeaders| {
        let t = evaluate(h, at(0), policy());
        (t.fresh_for.as_secs(), t.advertised_secs)
    };
    // Within the bounds: held and told alike.
    assert_eq!(told(&cc("max-age=60")), (60, 60));
    // Over --ttl: held and told --ttl.
    assert_eq!(told(&cc("max-age=100000")), (300, 300));
    // Under --min-ttl: held for the floor, told the upstream's 3 s.
    assert_eq!(told(&cc("max-age=3")), (10, 3));
    // Forbidding, spent or unusable: held for the floor, told nothing.
    for v in [
        "no-store",
        "private, max-age=60",
        "max-age=0",
        "max-age=abc",
    ] {
        assert_eq!(told(&cc(v)), (10, 0), "{v}");
    }
    let spent = UpstreamHeaders {
        age: Some("50".into()),
        ..cc("max-age=30")
    };
    assert_eq!(told(&spent), (10, 0));
    // No freshness information, or ignored: --ttl both.
    assert_eq!(told(&UpstreamHeaders::default()), (300, 300));
    let fixed = Policy {
        honour_upstream: false,
        ..policy()
    };
    let t = evaluate(&cc("max-age=3"), at(0), fixed);
    assert_eq!((t.fresh_for.as_secs(), t.advertised_secs), (300, 300));
}

#[test]
fn the_upstreams_stale_if_error_ends_after_its_freshness_left() {
    let until = |h: &UpstreamHeaders| evaluate(h, at(0), policy()).stale_if_error_until_secs;
    assert_eq!(until(&cc("max-age=60")), None);
    assert_eq!(until(&cc("max-age=60, stale-if-error=600")), Some(660));
    // A stale shield: max-age=0 and what is left of its window.
    assert_eq!(until(&cc("max-age=0, stale-if-error=3587")), Some(3587));
    let aged = UpstreamHeaders {
        age: Some("40".into()),
        ..cc("max-age=60, Stale-If-Error=100")
    };
    assert_eq!(until(&aged), Some(120));
    // Not a delta-seconds: ignored.
    assert_eq!(until(&cc("max-age=60, stale-if-error=soon")), None);
}
