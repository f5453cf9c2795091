//! A client that hangs up never cancels the upstream fetch it started:
//! the fetch runs to completion and is stored, so the upstream is asked
//! once and the next request is a hit. For template tenants (over HTTP: a
//! client that sends its request and closes the connection) and for
//! configured documents (through the library, without the refresher that
//! would otherwise warm the document itself: the request's future is
//! dropped, as actix drops it when the client goes away).

mod support;

use std::time::Duration;

use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::Cli;
use support::*;
use tokio::io::AsyncWriteExt;

/// How long the upstream takes to answer.
const SLOW: Duration = Duration::from_millis(800);

#[actix_web::test]
async fn a_tenant_fetch_survives_the_client_that_hung_up() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, SLOW));
    let template = format!("{}/realms/{{tenant}}", upstream.base_url);
    let gw = TestGateway::start(&["--issuer", &template, "--upstream", &template]).await;
    let path = format!("{AS_PATH}/realms/acme");

    // Connect, send the request, hang up before the answer.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    // Reset, not a polite FIN: the gateway's next read fails and actix
    // drops the request's future (as for a client that crashed or timed
    // out at a load balancer).
    stream.set_zero_linger().unwrap();
    drop(stream);

    // The fetch completes after the hang-up and is stored.
    tokio::time::sleep(SLOW + Duration::from_millis(700)).await;
    let next = get(&gw.url(&path)).await;
    assert_eq!(next.status, 200);
    assert!(
        next.cache_status().contains("; hit"),
        "the next request is a hit: {}",
        next.cache_status()
    );
    assert_eq!(upstream.requests(), 1, "the upstream was asked once");
    gw.stop().await.unwrap();
}

#[actix_web::test]
async fn a_configured_document_fetch_survives_the_request_that_was_dropped() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)).delayed(SLOW));
    let config =
        Cli::config_from_args(["oauth-metadata-gateway", "--upstream", &upstream.base_url])
            .unwrap();
    let gw = oauth_metadata_gateway::Generation::new(&config).unwrap();
    let slot = &gw.slots[0];

    // The request goes away while its fetch is in flight.
    let dropped = tokio::time::timeout(Duration::from_millis(200), gw.cache.lookup(slot)).await;
    assert!(dropped.is_err(), "the upstream is slower than the client");
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;

    tokio::time::sleep(SLOW + Duration::from_millis(700)).await;
    assert_eq!(gw.cache.lookup(slot).await.outcome, CacheOutcome::Hit);
    assert_eq!(upstream.requests(), 1, "the upstream was asked once");
}
