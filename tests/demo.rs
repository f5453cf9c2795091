//! `--demo`: one command shows the whole thing working, with the built-in
//! authorization server as the upstream.

mod support;

use std::time::Duration;

use support::*;

#[actix_web::test]
async fn demo_serves_a_valid_document_through_the_gateway() {
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let upstream = format!("http://127.0.0.1:{port}");
    let gw = Generation::start(&["--demo", "--demo-listen", &demo, "--upstream", &upstream]).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    let doc = r.json();
    assert_eq!(doc["issuer"], upstream);
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "scopes_supported",
        "grant_types_supported",
    ] {
        assert!(doc.get(field).is_some(), "{field}");
    }
    // The demo server itself answers the same bytes.
    let direct = get(&format!("{upstream}{AS_PATH}")).await;
    assert_eq!(direct.body, r.body);
}

#[actix_web::test]
async fn demo_yields_to_a_server_already_on_its_address() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let addr = upstream.addr.to_string();
    let gw = Generation::in_front_of(&upstream, &["--demo", "--demo-listen", &addr]).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(
        r.body,
        body.as_bytes(),
        "the real server's document, not the demo's"
    );
}
