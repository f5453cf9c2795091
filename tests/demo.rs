//! `--demo`: one command shows the whole thing working, with the built-in
//! authorization server as the upstream. The real binary: `--demo-listen`
//! (flag, variable, port 0) is where the gateway fetches from unless
//! `--upstream` says otherwise, and a taken demo address is reported with
//! what answers there.

mod support;

use std::time::Duration;

use support::process::Process;
use support::*;

#[actix_web::test]
async fn demo_serves_a_valid_document_through_the_gateway() {
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let upstream = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&["--demo", "--demo-listen", &demo, "--upstream", &upstream]).await;
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
async fn demo_publishes_a_key_set_the_gateway_serves() {
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let gw = TestGateway::start(&["--demo", "--demo-listen", &demo, "--jwks-route", "/jwks"]).await;
    let r = poll_until(&gw.url("/jwks"), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    let set = r.json();
    let keys = set["keys"].as_array().expect("a JWK Set");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert!(keys[0].get("d").is_none(), "public members only");
    // The metadata names it, and the gateway relays the demo's bytes.
    let doc = get(&gw.url(AS_PATH)).await.json();
    let jwks_uri = doc["jwks_uri"].as_str().expect("jwks_uri").to_string();
    assert_eq!(jwks_uri, format!("http://localhost:{port}/oauth/jwks"));
    let direct = get(&format!("http://127.0.0.1:{port}/oauth/jwks")).await;
    assert_eq!(direct.body, r.body);
}

#[actix_web::test]
async fn demo_yields_to_a_server_already_on_its_address() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let addr = upstream.addr.to_string();
    let gw = TestGateway::in_front_of(&upstream, &["--demo", "--demo-listen", &addr]).await;
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

// The real binary, as a new user runs it.

#[actix_web::test]
async fn the_binary_fetches_from_the_demo_listen_address() {
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let gw = Process::start(&["--demo", "--demo-listen", &demo], &[]).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.json()["issuer"], format!("http://localhost:{port}"));
    // The same through the environment variable.
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let gw = Process::start(&["--demo"], &[("GATEWAY_DEMO_LISTEN", &demo)]).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.json()["issuer"], format!("http://localhost:{port}"));
}

#[actix_web::test]
async fn demo_on_port_zero_serves_from_the_port_it_got() {
    let gw = Process::start(&["--demo", "--demo-listen", "127.0.0.1:0"], &[]).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    let issuer = r.json()["issuer"].as_str().unwrap().to_string();
    let port: u16 = issuer
        .strip_prefix("http://localhost:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("issuer {issuer}"));
    assert_ne!(port, 0);
    let log = gw.text();
    assert!(
        log.contains(&format!("http://127.0.0.1:{port}{AS_PATH}")),
        "the log names the demo's address:\n{log}"
    );
}

#[actix_web::test]
async fn an_explicit_upstream_or_issuer_is_kept_with_demo() {
    // --upstream (flag or variable) wins over the demo's address: here the
    // demo listens elsewhere and the gateway never reaches it.
    let (_closed, refusing) = refusing_port();
    let upstream = format!("http://127.0.0.1:{refusing}");
    let demo = format!("127.0.0.1:{}", free_port());
    for (args, envs) in [
        (
            vec!["--demo", "--demo-listen", &demo, "--upstream", &upstream],
            vec![],
        ),
        (
            vec!["--demo", "--demo-listen", &demo],
            vec![("GATEWAY_UPSTREAM", upstream.as_str())],
        ),
    ] {
        let gw = Process::start(&args, &envs).await;
        let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
            r.status == 503
        })
        .await;
        assert!(r.cache_status().contains("connect_error"), "{args:?}");
    }
    // --issuer alone: the demo publishes that issuer and the gateway
    // fetches it from the demo.
    let port = free_port();
    let demo = format!("127.0.0.1:{port}");
    let gw = Process::start(
        &["--demo", "--demo-listen", &demo],
        &[("GATEWAY_ISSUER", "http://localhost:9/tenant1")],
    )
    .await;
    let path = format!("{AS_PATH}/tenant1");
    let r = poll_until(&gw.url(&path), Duration::from_secs(10), |r| r.status == 200).await;
    assert_eq!(r.json()["issuer"], "http://localhost:9/tenant1");
}

#[actix_web::test]
async fn a_taken_demo_address_is_named_in_the_log_with_what_answers() {
    // A real authorization server on the demo's address: the log names
    // its issuer, and the gateway serves its document.
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let issuer = format!("http://localhost:{}", upstream.addr.port());
    let body = document(&issuer);
    upstream.set(Behaviour::json(body.clone()));
    let addr = upstream.addr.to_string();
    let gw = Process::start(&["--demo", "--demo-listen", &addr], &[]).await;
    let log = gw
        .wait_for_log(
            "demo authorization server not started",
            Duration::from_secs(5),
        )
        .await;
    assert!(
        log.contains(&format!("{addr} is in use"))
            && log.contains(&format!("answers with issuer \"{issuer}\"")),
        "{log}"
    );
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.body, body.as_bytes());

    // Something that answers 404 there: the log gives the status.
    let other = Upstream::start(Behaviour::status(404)).await;
    let addr = other.addr.to_string();
    let gw = Process::start(&["--demo", "--demo-listen", &addr], &[]).await;
    let log = gw
        .wait_for_log(
            "demo authorization server not started",
            Duration::from_secs(5),
        )
        .await;
    assert!(log.contains("answers HTTP 404"), "{log}");
}
