//! Interop with the official MCP TypeScript SDK: its
//! `discoverOAuthProtectedResourceMetadata` followed by
//! `discoverAuthorizationServerMetadata` on the advertised issuer must
//! succeed against the gateway (tests/interop/discover.mjs, run with node).
//!
//! The SDK is installed by `.ci/install-deps.sh` (`npm ci` in
//! tests/interop, from the committed package-lock.json). A missing node or
//! SDK fails this test with instructions: it never skips.
//!
//! The deployment imitated: the gateway answers the well-known paths of the
//! public origin (here its own address) for both the MCP server
//! (`<gateway>/mcp`) and the authorization server (issuer
//! `<gateway>/tenant1`), and fetches the latter's metadata from an internal
//! upstream whose documents declare that public issuer.

mod support;

use support::*;

/// Runs discover.mjs (the MCP SDK's discovery; bounded to 60 s) and
/// returns its parsed JSON output.
async fn discover(server_url: &str, issuer: &str) -> serde_json::Value {
    support::node::run_json("discover.mjs", &[server_url, issuer]).await
}

/// The paths of the URLs the SDK fetched, with their statuses.
fn fetched(result: &serde_json::Value, origin: &str) -> Vec<(String, u64)> {
    result["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            let url = r["url"].as_str().unwrap();
            let path = url.strip_prefix(origin).unwrap_or(url).to_string();
            (path, r["status"].as_u64().unwrap())
        })
        .collect()
}

/// A gateway on its own (pre-bound) address whose issuer and resource are
/// on that address, in front of `upstream`.
async fn gateway_for(upstream: &Upstream, extra: &[&str]) -> (TestGateway, String, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{origin}/tenant1");
    let resource = format!("{origin}/mcp");
    let upstream_url = format!("{}/tenant1", upstream.base_url);
    let mut args = vec![
        "--upstream",
        upstream_url.as_str(),
        "--issuer",
        issuer.as_str(),
        "--resource",
        resource.as_str(),
        "--resource-scopes",
        "mcp:tools",
        "--resource-bearer-methods",
        "header",
    ];
    args.extend_from_slice(extra);
    let gw = TestGateway::start_on(listener, &args).await;
    (gw, issuer, resource)
}

#[actix_web::test]
async fn mcp_sdk_discovers_through_the_gateway() {
    support::node::require_node_package("@modelcontextprotocol/sdk");
    let upstream = Upstream::start(Behaviour::status(404)).await;
    // The document is set once the issuer (the gateway's address) is known.
    let (gw, issuer, resource) = gateway_for(&upstream, &[]).await;
    upstream.set_path(
        "/.well-known/oauth-authorization-server/tenant1",
        Behaviour::json(document(&issuer)),
    );
    let result = discover(&resource, &issuer).await;
    assert_eq!(result["resource"], resource.as_str());
    assert_eq!(result["issuer"], issuer.as_str());
    assert_eq!(
        result["token_endpoint"],
        format!("{issuer}/oauth/token").as_str()
    );
    let requests = fetched(&result, &gw.base_url);
    // The SDK found each document at its first try: the path-aware
    // locations of RFC 9728 §3.1 and RFC 8414 §3.1.
    assert_eq!(
        requests[..2],
        [
            ("/.well-known/oauth-protected-resource/mcp".to_string(), 200),
            (
                "/.well-known/oauth-authorization-server/tenant1".to_string(),
                200
            ),
        ],
        "{requests:?}"
    );
    assert!(requests.iter().all(|(_, s)| *s == 200), "{requests:?}");
}

#[actix_web::test]
async fn mcp_sdk_gets_an_openid_only_upstream_at_the_rfc8414_path() {
    support::node::require_node_package("@modelcontextprotocol/sdk");
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let (gw, issuer, resource) = gateway_for(&upstream, &["--openid-configuration"]).await;
    // The upstream publishes OpenID Provider metadata only (OpenID Connect
    // Discovery §4 location).
    upstream.set_path(
        "/tenant1/.well-known/openid-configuration",
        Behaviour::json(document(&issuer)),
    );
    let result = discover(&resource, &issuer).await;
    assert_eq!(result["issuer"], issuer.as_str());
    let requests = fetched(&result, &gw.base_url);
    assert!(
        requests.contains(&(
            "/.well-known/oauth-authorization-server/tenant1".to_string(),
            200
        )),
        "{requests:?}"
    );
    // What the SDK would try next is served too.
    for path in [
        "/.well-known/openid-configuration/tenant1",
        "/tenant1/.well-known/openid-configuration",
    ] {
        let r = get(&gw.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["issuer"], issuer.as_str(), "{path}");
    }
}
