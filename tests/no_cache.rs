//! `--no-cache`: the naive design the benchmarks compare against. Every
//! request is its own upstream fetch, validated as usual, answered with
//! `Cache-Status: ...; fwd=bypass` and counted as a `miss`; nothing is
//! stored and nothing is fetched in the background.

mod support;

use std::time::Duration;

use support::*;

#[actix_web::test]
async fn every_request_fetches_and_nothing_is_stored() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let gw = TestGateway::in_front_of(&upstream, &["--no-cache", "--ttl", "300s"]).await;

    // No refresher: nothing reaches the upstream until a client asks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.requests(), 0);

    for n in 1..=3 {
        let r = get(&gw.url(AS_PATH)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(
            r.cache_status(),
            "oauth-metadata-gateway; fwd=bypass; fwd-status=200"
        );
        assert_eq!(r.header("age"), Some("0"));
        // A fresh fetch: the whole TTL is left, less the fetch's own time.
        let cc = r.header("cache-control").unwrap();
        assert!(
            cc == "public, max-age=300" || cc == "public, max-age=299",
            "{cc}"
        );
        assert!(r.header("etag").is_some());
        assert_eq!(upstream.requests(), n, "one fetch per request");
    }

    let metrics = String::from_utf8(get(&gw.url("/metrics")).await.body).unwrap();
    for line in [
        "metadata_gateway_lookups_total{document=\"oauth-authorization-server\",kind=\"metadata\",result=\"miss\"} 3",
        "metadata_gateway_lookups_total{document=\"oauth-authorization-server\",kind=\"metadata\",result=\"hit\"} 0",
        "metadata_gateway_upstream_fetches_total{document=\"oauth-authorization-server\",kind=\"metadata\",outcome=\"ok\"} 3",
        "metadata_gateway_document_cached{document=\"oauth-authorization-server\",kind=\"metadata\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    assert_eq!(get(&gw.url("/readyz")).await.status, 200);
}

#[actix_web::test]
async fn a_failing_upstream_fails_each_request_and_readiness() {
    let upstream = Upstream::start(Behaviour::status(503)).await;
    let gw = TestGateway::in_front_of(&upstream, &["--no-cache"]).await;
    for n in 1..=2 {
        let r = get(&gw.url(AS_PATH)).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.json()["error"], "temporarily_unavailable");
        assert!(r.header("retry-after").is_some());
        assert!(
            r.cache_status().contains("fwd-status=503"),
            "{}",
            r.cache_status()
        );
        assert_eq!(upstream.requests(), n, "no back-off: one fetch per request");
    }
    assert_eq!(get(&gw.url("/readyz")).await.status, 503);

    // Recovery is immediate: the next request fetches again.
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    assert_eq!(get(&gw.url(AS_PATH)).await.status, 200);
    assert_eq!(get(&gw.url("/readyz")).await.status, 200);
}

#[actix_web::test]
async fn an_admin_refresh_without_a_cache_says_it_fetches_nothing() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::start_with_admin(&["--upstream", &upstream.base_url, "--no-cache"]).await;
    let r = send("POST", &gw.admin("/refresh"), &[]).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["started"], serde_json::json!([]));
    assert!(
        body["skipped"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("--no-cache"),
        "{body}"
    );
    assert_eq!(upstream.requests(), 0, "nothing fetched");
}
