//! Revalidation (RFC 9111 §4.3): a document that came with an `ETag` or
//! `Last-Modified` is refreshed with a conditional request; a `304 Not
//! Modified` renews its freshness without a body (the bytes served stay
//! the same, counted as `outcome="not_modified"`), and a 304 the gateway
//! never asked for (no validators to offer) is an upstream error.

mod support;

use std::time::{Duration, SystemTime};

use support::*;

/// Short lifetimes: --ttl 2s (the upstream sends no Cache-Control), so the
/// refresh-ahead comes within two seconds.
const SHORT: [&str; 8] = [
    "--ttl",
    "2s",
    "--min-ttl",
    "1s",
    "--retry-backoff-min",
    "200ms",
    "--retry-backoff-max",
    "400ms",
];

/// An upstream serving its document (returned), with `etag` as its `ETag`.
async fn upstream_with(etag: Option<&str>) -> (Upstream, String) {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let v1 = document(&upstream.base_url);
    upstream.set(Behaviour::json(v1.clone()));
    upstream.set_etag(etag);
    (upstream, v1)
}

/// Waits (bounded) until the upstream has sent `n` 304s.
async fn wait_for_not_modified(upstream: &Upstream, n: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while upstream.not_modified_sent() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream sent {} 304s, expected {n} within {limit:?}; requests:\n{:#?}",
            upstream.not_modified_sent(),
            upstream.request_heads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until `url` serves `v1` stale: the 304 renewed nothing.
async fn goes_stale_on(url: &str, v1: &str) {
    let r = poll_until(url, Duration::from_secs(8), |r| {
        r.cache_status().contains("fwd=stale")
    })
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v1.as_bytes());
}

/// Sum of `metadata_gateway_upstream_fetches_total` with this outcome
/// over all documents, from the gateway's `/metrics`.
async fn fetches_with_outcome(gw: &TestGateway, outcome: &str) -> f64 {
    let r = get(&gw.url("/metrics")).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("metadata_gateway_upstream_fetches_total{") && l.contains(&label))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unparsable sample {l:?}"))
        })
        .sum()
}

#[track_caller]
fn assert_renewed_hit(r: &Reply, body: &[u8]) {
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body, "the same bytes after a 304");
    let cs = r.cache_status();
    assert!(
        cs.contains("; hit") && !cs.contains("fwd=stale"),
        "freshness renewed by the 304: {cs}"
    );
    assert!(
        (0..=2).contains(&r.ttl()),
        "ttl back within the renewed 2 s: {cs}"
    );
    assert!(
        r.age() <= 2,
        "Age counts from the revalidation: {}",
        r.age()
    );
}

#[actix_web::test]
async fn an_etag_is_revalidated_with_if_none_match_and_a_304_renews_freshness() {
    let (upstream, v1) = upstream_with(Some("\"v1\"")).await;
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    let r = get(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v1.as_bytes());

    // Two revalidations: by the second the document is older than --ttl
    // counted from the first fetch, so only a renewal keeps it fresh.
    wait_for_not_modified(&upstream, 2, Duration::from_secs(10)).await;
    let r = get(&url).await;
    assert_renewed_hit(&r, v1.as_bytes());
    assert!(
        (1..=3).contains(&r.max_age()),
        "{:?}",
        r.header("cache-control")
    );

    let heads = upstream.request_heads();
    assert_eq!(
        header_of(&heads[0], "if-none-match"),
        None,
        "the cold fetch is unconditional: {}",
        heads[0]
    );
    for head in &heads[1..] {
        assert_eq!(
            header_of(head, "if-none-match").as_deref(),
            Some("\"v1\""),
            "every refresh is conditional: {head}"
        );
    }
    // Nothing but the cold fetch and the revalidations went upstream.
    assert_eq!(heads.len(), 1 + upstream.not_modified_sent());
    assert!(
        fetches_with_outcome(&gw, "not_modified").await >= 2.0,
        "{}",
        String::from_utf8_lossy(&get(&gw.url("/metrics")).await.body)
    );
}

#[actix_web::test]
async fn last_modified_is_revalidated_with_if_modified_since() {
    let (upstream, v1) = upstream_with(None).await;
    let modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    upstream.set_last_modified(Some(&modified));
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    assert_eq!(get(&url).await.body, v1.as_bytes());

    wait_for_not_modified(&upstream, 2, Duration::from_secs(10)).await;
    assert_renewed_hit(&get(&url).await, v1.as_bytes());
    let heads = upstream.request_heads();
    assert_eq!(header_of(&heads[0], "if-modified-since"), None);
    let sent = header_of(&heads[1], "if-modified-since")
        .unwrap_or_else(|| panic!("no If-Modified-Since: {}", heads[1]));
    assert_eq!(
        httpdate::parse_http_date(&sent).ok(),
        httpdate::parse_http_date(&modified).ok(),
        "If-Modified-Since {sent:?} is the Last-Modified {modified:?}"
    );
    assert!(fetches_with_outcome(&gw, "not_modified").await >= 2.0);
}

#[actix_web::test]
async fn a_changed_etag_brings_the_new_document_and_its_tag() {
    let (upstream, v1) = upstream_with(Some("\"v1\"")).await;
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    assert_eq!(get(&url).await.body, v1.as_bytes());

    let v2 = v1.replace("user:read", "user:write");
    upstream.set(Behaviour::json(v2.clone()));
    upstream.set_etag(Some("W/\"v2\""));
    let r = poll_until(&url, Duration::from_secs(8), |r| r.body == v2.as_bytes()).await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    // The next refresh offers the new tag, and its 304 keeps v2.
    wait_for_not_modified(&upstream, 1, Duration::from_secs(8)).await;
    let heads = upstream.request_heads();
    let last = heads.last().unwrap();
    assert_eq!(
        header_of(last, "if-none-match").as_deref(),
        Some("W/\"v2\""),
        "{last}"
    );
    assert_eq!(get(&url).await.body, v2.as_bytes());
}

#[actix_web::test]
async fn an_unasked_for_304_on_a_cold_fetch_is_an_upstream_error() {
    let upstream = Upstream::start(Behaviour::not_modified()).await;
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    let r = get(&url).await;
    assert!(
        r.status == 502 || r.status == 503,
        "status {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.assert_json_error_body();
    assert!(upstream.not_modified_sent() >= 1);
    assert_eq!(
        fetches_with_outcome(&gw, "not_modified").await,
        0.0,
        "a 304 to an unconditional request is not a revalidation"
    );
    // The gateway stays up and serves the document once the upstream does.
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let r = poll_until(&url, Duration::from_secs(5), |r| r.status == 200).await;
    assert_eq!(r.json()["issuer"], upstream.base_url.as_str());
}

#[actix_web::test]
async fn an_unasked_for_304_on_a_refresh_keeps_the_document_and_lets_it_go_stale() {
    let (upstream, v1) = upstream_with(None).await;
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    assert_eq!(get(&url).await.body, v1.as_bytes());

    // No validators were ever given: a 304 renews nothing.
    upstream.set(Behaviour::not_modified());
    goes_stale_on(&url, &v1).await;
    assert!(upstream.not_modified_sent() >= 1);
    let heads = upstream.request_heads();
    for head in &heads {
        assert_eq!(header_of(head, "if-none-match"), None, "{head}");
        assert_eq!(header_of(head, "if-modified-since"), None, "{head}");
    }
    assert_eq!(fetches_with_outcome(&gw, "not_modified").await, 0.0);
}

#[actix_web::test]
async fn a_304_for_another_etag_renews_nothing_and_the_document_is_fetched_whole() {
    let (upstream, v1) = upstream_with(Some("\"v1\"")).await;
    let gw = TestGateway::in_front_of(&upstream, &SHORT).await;
    let url = gw.url(AS_PATH);
    assert_eq!(get(&url).await.body, v1.as_bytes());
    let before = upstream.request_heads().len();

    // A confused upstream: 304 with another tag, whatever is asked.
    upstream.set_etag(None);
    upstream.set_headers(&[("etag", "\"v2\"")]);
    upstream.set(Behaviour::not_modified());
    // RFC 9111 §4.3.4: that 304 updates nothing, so the gateway asks for
    // the whole document (no validators); the 304 to that is an error, and
    // the stored v1 goes stale instead of being renewed under "v2".
    goes_stale_on(&url, &v1).await;
    let heads = upstream.request_heads()[before..].to_vec();
    assert!(heads.len() >= 2, "{heads:#?}");
    assert_eq!(
        header_of(&heads[0], "if-none-match").as_deref(),
        Some("\"v1\""),
        "the refresh was conditional: {heads:#?}"
    );
    assert_eq!(
        header_of(&heads[1], "if-none-match"),
        None,
        "then unconditional: {heads:#?}"
    );
    assert_eq!(fetches_with_outcome(&gw, "not_modified").await, 0.0);
}

/// The test upstream itself (no gateway): 200 with the validators and the
/// extra headers, 304 without a body to a matching conditional request,
/// 200 to a non-matching one, and a bare 304 whatever was asked.
#[actix_web::test]
async fn the_test_upstream_answers_conditional_requests() {
    let (upstream, body) = upstream_with(Some("\"v1\"")).await;
    let modified = http_date(SystemTime::now() - Duration::from_secs(60));
    upstream.set_last_modified(Some(&modified));
    upstream.set_headers(&[("cache-control", "max-age=30"), ("age", "5")]);
    let url = format!("{}{AS_PATH}", upstream.base_url);

    let r = get(&url).await;
    assert_eq!((r.status, r.body.as_slice()), (200, body.as_bytes()));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("last-modified"), Some(modified.as_str()));
    assert_eq!(r.max_age(), 30);
    assert_eq!(r.age(), 5);

    let r = send("GET", &url, &[("if-none-match", "\"v0\", W/\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.max_age(), 30);
    let r = send("GET", &url, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(r.status, 200);
    let r = send("GET", &url, &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, 304);
    let earlier = http_date(SystemTime::now() - Duration::from_secs(3600));
    let r = send("GET", &url, &[("if-modified-since", &earlier)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.not_modified_sent(), 2);

    let heads = upstream.request_heads();
    assert_eq!(heads.len(), 5);
    assert_eq!(
        header_of(&heads[1], "If-None-Match").as_deref(),
        Some("\"v0\", W/\"v1\"")
    );
    assert_eq!(header_of(&heads[0], "if-none-match"), None);
    assert!(heads[0].starts_with(&format!("GET {AS_PATH} HTTP/1.1")));

    upstream.set(Behaviour::not_modified());
    upstream.set_etag(None);
    upstream.set_last_modified(None);
    let r = get(&url).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), None);
    assert_eq!(upstream.not_modified_sent(), 3);

    upstream.set_path_headers(AS_PATH, &[("cache-control", "no-store")]);
    upstream.set(Behaviour::json(body));
    assert_eq!(get(&url).await.header("cache-control"), Some("no-store"));
}
