//! `/readyz` follows time alone: its counts are kept as documents change
//! state (not computed by a scan per probe), and that includes a stored
//! copy passing its hard deadline (TTL + `--max-stale`) with nothing else
//! happening: no fetch completing, no request for the document.

mod support;

use std::time::Duration;

use support::*;

#[actix_web::test]
async fn expiry_alone_makes_the_gateway_unready_and_a_fetch_ready_again() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--ttl",
            "1s",
            "--min-ttl",
            "1s",
            "--max-stale",
            "1s",
            "--upstream-timeout",
            "30s",
        ],
    )
    .await;
    let ready = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(ready.json()["status"], "ready");

    // From now on the upstream answers nothing: the refresh that is due
    // hangs (no fetch completes, no failure is recorded), and no client
    // asks for the document. Only its deadline passes.
    upstream.hold();
    let requests = upstream.requests();
    let unready = poll_until(&gw.url("/readyz"), Duration::from_secs(6), |r| {
        r.status == 503
    })
    .await;
    assert_eq!(unready.json()["unready_documents"], 1, "{}", unready.json());
    let reason = unready.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("oauth-authorization-server"), "{reason}");
    assert!(
        upstream.requests() <= requests + 1,
        "at most the one hanging refresh reached the upstream"
    );
    assert_eq!(upstream.in_flight(), upstream.requests() - requests);

    // The hanging refresh completes: stored, ready again.
    upstream.release();
    let again = poll_until(&gw.url("/readyz"), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(again.json()["status"], "ready");
    gw.stop().await.unwrap();
}
