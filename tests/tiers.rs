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
async fn edge(shield: &TestGateway, origin: &Upstream) -> TestGateway {
    TestGateway::start(&["--upstream", &shield.base_url, "--issuer", &origin.base_url]).await
}

#[actix_web::test]
async fn the_edge_never_holds_the_document_longer_than_the_shield_had_left() {
    let (origin, body) = origin().await;
    let shield = TestGateway::in_front_of(&origin, &[]).await;
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
    let shield = TestGateway::in_front_of(&origin, &[]).await;
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

/// The window a reply lets a downstream cache use its copy stale, in
/// seconds from now (RFC 5861 §4: staleness is `Age` − `max-age`).
fn stale_window_left(r: &Reply) -> i64 {
    let cc = r.header("cache-control").unwrap_or("");
    let sie = directive(cc, "stale-if-error").unwrap_or_else(|| panic!("no stale-if-error: {cc}"));
    sie as i64 - (r.age() as i64 - r.max_age() as i64)
}

#[actix_web::test]
async fn an_edge_holding_for_min_ttl_never_promises_more_than_the_shield() {
    // The origin allows 2 s. The shield holds for at least 1 s, the edge
    // for 4 s (--min-ttl): the edge holds its copy longer than the origin
    // allowed but never tells a client it is fresh longer; and once the
    // origin is down and the shield serves stale, the edge's copy is
    // stale to clients too, and its stale-if-error ends with the shield's.
    let origin = Upstream::start(Behaviour::status(500)).await;
    let body = document(&origin.base_url);
    origin.set(Behaviour::json(body.clone()));
    origin.set_headers(&[("cache-control", "max-age=2")]);
    let shield = TestGateway::in_front_of(
        &origin,
        &[
            "--min-ttl",
            "1s",
            "--max-stale",
            "1h",
            "--retry-backoff-min",
            "200ms",
            "--retry-backoff-max",
            "400ms",
        ],
    )
    .await;
    let edge = TestGateway::start(&[
        "--upstream",
        &shield.base_url,
        "--issuer",
        &origin.base_url,
        "--min-ttl",
        "4s",
    ])
    .await;

    let first = get(&edge.url(AS_PATH)).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.body, body.as_bytes());
    assert!(
        first.ttl() >= 3,
        "held for --min-ttl: {}",
        first.cache_status()
    );
    assert!(
        first.max_age() <= first.age() + 2,
        "told at most the origin's 2 s: {:?}, Age {}",
        first.header("cache-control"),
        first.age()
    );

    origin.set(Behaviour::status(503));
    // Bounded: the edge refetches from the (by then stale) shield within
    // its 4 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refetched = loop {
        let r = get(&edge.url(AS_PATH)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, body.as_bytes(), "the last good bytes");
        assert!(
            r.max_age() <= r.age() + 2,
            "never fresh downstream past the origin's lifetime: {:?}, Age {}",
            r.header("cache-control"),
            r.age()
        );
        // A copy taken from the stale shield: max-age is the shield's Age
        // alone (past the origin's 2 s), which the edge's own Age has
        // already reached, while the edge still holds it as a hit.
        if r.max_age() >= 3 && r.max_age() <= r.age() && r.cache_status().contains("; hit") {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never served a copy from the stale shield: {} {:?}",
            r.cache_status(),
            r.header("cache-control")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at_shield = get(&shield.url(AS_PATH)).await;
    assert!(
        at_shield.cache_status().contains("fwd=stale"),
        "{}",
        at_shield.cache_status()
    );
    let (edge_left, shield_left) = (stale_window_left(&refetched), stale_window_left(&at_shield));
    assert!(
        edge_left <= shield_left + 1,
        "the edge's stale-if-error ({edge_left} s left, {:?}) outlasts the shield's ({shield_left} s, {:?})",
        refetched.header("cache-control"),
        at_shield.header("cache-control")
    );
    assert!(
        edge_left > 3_500,
        "still rides out the outage: {edge_left} s"
    );
}
