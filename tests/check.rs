//! The `check` subcommand, run as the real binary against test upstreams:
//! exit status 0 for a usable issuer, 1 with the reasons otherwise.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Runs `oauth-metadata-gateway check <args>` (bounded to 30 s) without
/// blocking the test's runtime, which serves the upstreams meanwhile.
async fn check(args: &[&str]) -> (i32, String) {
    let mut child = without_proxy_env(&mut Command::new(env!(
        "CARGO_BIN_EXE_oauth-metadata-gateway"
    )))
    .arg("check")
    .args(args)
    .args(["--upstream-timeout", "2s"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the binary");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check {args:?} did not finish within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut out = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code().expect("exit code"), out)
}

#[actix_web::test]
async fn a_good_issuer_passes() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    upstream.set_path(AS_PATH, Behaviour::json(document(&upstream.base_url)));
    let (code, out) = check(&[&upstream.base_url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("GET {}{AS_PATH}: HTTP 200", upstream.base_url)),
        "{out}"
    );
    assert!(out.contains("the gateway accepts this document"), "{out}");
    assert!(out.trim_end().ends_with("0 errors, 0 warnings"), "{out}");
    // One request, with GET, at the RFC 8414 location.
    assert_eq!(upstream.paths(), vec![AS_PATH.to_string()]);
}

#[actix_web::test]
async fn every_problem_is_listed_and_fails_the_check() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let issuer = upstream.base_url.clone();
    let doc = serde_json::json!({
        "issuer": format!("{issuer}/other"),
        "authorization_endpoint": "http://auth.example.com/authorize",
        "response_types_supported": ["token"],
        "code_challenge_methods_supported": ["plain"],
    });
    upstream.set_path(
        AS_PATH,
        Behaviour::with_content_type("text/plain", serde_json::to_vec(&doc).unwrap()),
    );
    let (code, out) = check(&[&issuer]).await;
    assert_eq!(code, 1, "{out}");
    for needle in [
        "not application/json",
        "RFC 8414 §3.3",
        "lacks \"S256\"",
        "no `registration_endpoint`",
        "`token_endpoint` is missing",
        "lacks \"code\"",
        "`authorization_endpoint` is \"http://auth.example.com/authorize\": https is required",
        "the gateway would refuse this document",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// `check` parses like the gateway: a second (escaped) `issuer` fails the
/// check with the member named, instead of being read last-wins.
#[actix_web::test]
async fn a_duplicate_member_fails_the_check() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let good = document(&upstream.base_url);
    let forged = good.replacen('{', r#"{"\u0069ssuer":"https://evil.example","#, 1);
    upstream.set_path(AS_PATH, Behaviour::json(forged));
    let (code, out) = check(&[&upstream.base_url]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("duplicate member name \"issuer\""), "{out}");
    assert!(out.contains("the gateway refuses it"), "{out}");
}

#[actix_web::test]
async fn an_openid_only_issuer_with_a_path_is_found_in_client_order() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let issuer = format!("{}/tenant1", upstream.base_url);
    upstream.set_path(
        "/tenant1/.well-known/openid-configuration",
        Behaviour::json(document(&issuer)),
    );
    let (code, out) = check(&[&issuer]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("published only as OpenID Provider metadata"),
        "{out}"
    );
    assert_eq!(
        upstream.paths(),
        [
            "/.well-known/oauth-authorization-server/tenant1",
            "/.well-known/openid-configuration/tenant1",
            "/tenant1/.well-known/openid-configuration"
        ]
    );
}

#[actix_web::test]
async fn a_5xx_or_no_server_fails() {
    let upstream = Upstream::start(Behaviour::status(503)).await;
    let (code, out) = check(&[&upstream.base_url]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("answered HTTP 503"), "{out}");
    assert_eq!(upstream.requests(), 1, "a 5xx ends discovery");

    let (_reserved, port) = refusing_port();
    let closed = format!("http://127.0.0.1:{port}");
    let (code, out) = check(&[&closed]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach the upstream"), "{out}");

    let (code, out) = check(&["ftp://example.com"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("http or https"), "{out}");
}

#[actix_web::test]
async fn the_protected_resource_behind_the_gateway_is_checked_too() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    upstream.set_path(AS_PATH, Behaviour::json(document(&upstream.base_url)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let resource = format!("http://{}/mcp", listener.local_addr().unwrap());
    let gw = TestGateway::start_on(
        listener,
        &["--upstream", &upstream.base_url, "--resource", &resource],
    )
    .await;
    let (code, out) = check(&[&upstream.base_url, "--resource", &resource]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("`resource` is identical"), "{out}");
    assert!(
        out.contains("`authorization_servers` names the issuer"),
        "{out}"
    );

    // Another issuer is not named by the resource: an error.
    let other = Upstream::start(Behaviour::status(404)).await;
    other.set_path(AS_PATH, Behaviour::json(document(&other.base_url)));
    let (code, out) = check(&[&other.base_url, "--resource", &resource]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not name"), "{out}");
    drop(gw);
}

#[actix_web::test]
async fn usage_errors_exit_2() {
    let (code, out) = check(&[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("<ISSUER>"), "{out}");
}

#[actix_web::test]
async fn the_key_set_is_checked_with_its_kids() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let issuer = upstream.base_url.clone();
    let doc = document(&issuer);
    let doc = format!(
        "{},\"jwks_uri\":\"{issuer}/jwks\"}}",
        doc.strip_suffix('}').unwrap()
    );
    upstream.set_path(AS_PATH, Behaviour::json(doc));
    upstream.set_path(
        "/jwks",
        Behaviour::json(r#"{"keys":[{"kty":"RSA","kid":"r1","n":"x","e":"AQAB"},{"kty":"EC","kid":"e1","crv":"P-256","x":"a","y":"b"}]}"#),
    );
    let (code, out) = check(&[&issuer]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 public key(s)") && out.contains("kids: r1, e1"),
        "{out}"
    );

    upstream.set_path(
        "/jwks",
        Behaviour::json(r#"{"keys":[{"kty":"RSA","kid":"r1","n":"x","e":"AQAB","d":"secret"}]}"#),
    );
    let (code, out) = check(&[&issuer]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("private member `d`"), "{out}");

    upstream.set_path("/jwks", Behaviour::status(503));
    let (code, out) = check(&[&issuer]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HTTP 503"), "{out}");
}
