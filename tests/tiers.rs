//! Gateways in tiers: an edge gateway whose upstream is a shield gateway in
//! front of the origin. The shield's `Age` and `max-age` carry the origin's
//! freshness on (L = Age + freshness left), so the edge never holds the
//! document longer than the shield had left, which is what the origin
//! allowed (RFC 9111 §4.2.3: a cache adds its resident time to `Age`).

mod support;

use std::time::Duration;

use support::*;

/// The origin answers `max-age=160` with `Age: 100`: 60 s of freshness left.
async fn origin() -> (Upstream, String) {
    let origin = Upstream::start(Behaviour::status(500)).await;
    let body = document(&origin.base_url);
    origin.set(Behaviour::json(body.clone()));
    origin.set_headers(&[("cache-control", "max-age=160"), ("age", "100")]);
    (origin, body)
}

/// An edge gateway whose upstream is `shield`, for the origin's issuer.
async fn edge(shield: &Gateway, origin: &Upstream) -> Gateway {
    Gateway::start(&["--upstream", &shield.base_url, "--issuer", &origin.base_url]).await
}

#[actix_web::test]
async fn the_edge_never_holds_the_document_longer_than_the_shield_had_left() {
    let (origin, body) = origin().await;
    let shield = Gateway::in_front_of(&origin, &[]).await;
    let edge = edge(&shield, &origin).await;

    let r = get(&edge.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.body,
        body.as_bytes(),
        "the shield relays the bytes unchanged"
    );
    assert!(
        (100..=101).contains(&r.age()),
        "Age {} carries the origin's 100 s",
        r.age()
    );
    assert!(
        (159..=161).contains(&r.max_age()),
        "{:?}",
        r.header("cache-control")
    );
    assert!(
        (58..=60).contains(&r.ttl()),
        "at most the 60 s the origin left: {}",
        r.cache_status()
    );
    assert_eq!(origin.requests(), 1, "the edge was served by the shield");

    // Cached at the edge, the same account holds.
    let again = get(&edge.url(AS_PATH)).await;
    assert!(
        again.cache_status().contains("; hit"),
        "{}",
        again.cache_status()
    );
    assert!(again.ttl() <= 60 && again.age() >= 100, "{again:?}");
    assert!(
        (159..=161).contains(&again.max_age()),
        "{:?}",
        again.header("cache-control")
    );
}

#[actix_web::test]
async fn time_held_by_the_shield_counts_against_the_edge() {
    let (origin, body) = origin().await;
    let shield = Gateway::in_front_of(&origin, &[]).await;
    assert_eq!(get(&shield.url(AS_PATH)).await.status, 200);
    // The shield holds the document for a while before the edge asks.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let edge = edge(&shield, &origin).await;
    let r = get(&edge.url(AS_PATH)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body.as_bytes());
    assert!(
        (102..=103).contains(&r.age()),
        "Age {}: the origin's 100 s plus the shield's 2 s",
        r.age()
    );
    assert!(
        (159..=161).contains(&r.max_age()),
        "{:?}",
        r.header("cache-control")
    );
    let at_shield = get(&shield.url(AS_PATH)).await;
    assert!(
        r.ttl() <= at_shield.ttl() + 1 && r.ttl() <= 58,
        "edge {} vs shield {}",
        r.cache_status(),
        at_shield.cache_status()
    );
    assert!(r.ttl() >= 56, "{}", r.cache_status());
    assert_eq!(origin.requests(), 1);
}
