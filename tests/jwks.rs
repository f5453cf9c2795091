//! Key sets (RFC 7517 JWK Sets) served from the cache: byte identity, 304,
//! coalescing, rotation on demand with its cooldown (RFC 9111 §5.2.1.4),
//! refused sets never replacing the last good one, stale-if-error, the
//! state directory, templates, the real providers' sets, and the route
//! rules.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

const JWKS_PATH: &str = "/jwks";
const ROUTE: &str = "/.well-known/jwks.json";

fn rsa_key(kid: &str) -> String {
    format!(
        r#"{{"kty":"RSA","kid":"{kid}","use":"sig","alg":"RS256","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}}"#
    )
}

fn key_set(kids: &[&str]) -> String {
    let keys: Vec<String> = kids.iter().map(|k| rsa_key(k)).collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// The reference metadata document with a `jwks_uri`.
fn metadata_with_jwks(issuer: &str, jwks_uri: &str) -> String {
    let doc = document(issuer);
    format!(
        "{},\"jwks_uri\":\"{jwks_uri}\"}}",
        doc.strip_suffix('}').unwrap()
    )
}

/// An upstream with metadata pointing at its own `/jwks`, serving `jwks`
/// there with `etag`.
async fn upstream_with(jwks: &str) -> Upstream {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let jwks_uri = format!("{}{JWKS_PATH}", upstream.base_url);
    upstream.set_path(
        AS_PATH,
        Behaviour::json(metadata_with_jwks(&upstream.base_url, &jwks_uri)),
    );
    upstream.set_path(JWKS_PATH, Behaviour::json(jwks.to_string()));
    upstream
}

async fn gateway(upstream: &Upstream, extra: &[&str]) -> TestGateway {
    let mut args = vec!["--jwks-route", ROUTE];
    args.extend_from_slice(extra);
    TestGateway::in_front_of(upstream, &args).await
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    send_with_headers(url, headers).await
}

async fn send_with_headers(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers).await
}

#[actix_web::test]
async fn the_key_set_is_served_byte_for_byte_with_304() {
    let set = key_set(&["k1", "k2"]);
    let upstream = upstream_with(&set).await;
    upstream.set_etag(Some("\"u1\""));
    let gw = gateway(&upstream, &[]).await;
    let r = get(&gw.url(ROUTE)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, set.as_bytes());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("age").is_some());
    let etag = r.header("etag").expect("an ETag").to_string();
    let again = get(&gw.url(ROUTE)).await;
    assert!(
        again.cache_status().contains("; hit"),
        "{}",
        again.cache_status()
    );
    let nm = get_with(&gw.url(ROUTE), &[("if-none-match", &etag)]).await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    // The metadata is served as before.
    assert_eq!(get(&gw.url(AS_PATH)).await.status, 200);
}

#[actix_web::test]
async fn concurrent_cold_requests_make_one_key_set_fetch() {
    let upstream = upstream_with(&key_set(&["k1"])).await;
    upstream.set_path(
        JWKS_PATH,
        Behaviour::json(key_set(&["k1"])).delayed(Duration::from_millis(200)),
    );
    let gw = gateway(&upstream, &[]).await;
    let url = gw.url(ROUTE);
    let replies = join_all((0..200).map(|_| get(&url))).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(upstream.requests_for(JWKS_PATH), 1);
    assert!(upstream.requests_for(AS_PATH) <= 1);
}

#[actix_web::test]
async fn a_rotated_key_is_fetched_once_for_many_requests_then_the_cooldown_holds() {
    let upstream = upstream_with(&key_set(&["old"])).await;
    upstream.set_etag(Some("\"v1\""));
    let gw = gateway(&upstream, &["--jwks-refetch-cooldown", "1h"]).await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.status, 200);
    // Known kid: no revalidation.
    let r = get(&format!("{url}?kid=old")).await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    assert_eq!(upstream.requests_for(JWKS_PATH), 1);

    // The upstream adds a key; 100 verifiers meet a token signed with it.
    let rotated = key_set(&["old", "new"]);
    upstream.set_path(
        JWKS_PATH,
        Behaviour::json(rotated.clone()).delayed(Duration::from_millis(100)),
    );
    upstream.set_etag(Some("\"v2\""));
    let kid_url = format!("{url}?kid=new");
    let replies = join_all((0..100).map(|_| get(&kid_url))).await;
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, rotated.as_bytes(), "every request gets the new key");
        assert!(
            r.cache_status().contains("fwd=request; fwd-status=200"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(upstream.requests_for(JWKS_PATH), 2, "one revalidation");
    let heads = upstream.request_heads();
    let last = heads
        .iter()
        .rev()
        .find(|h| h.contains(JWKS_PATH))
        .unwrap()
        .to_ascii_lowercase();
    assert!(last.contains("if-none-match: \"v1\""), "{last}");

    // Within the cooldown: unknown kids and no-cache are hits, no fetch.
    for headers in [
        vec![],
        vec![("cache-control", "no-cache")],
        vec![("cache-control", "max-age=0")],
    ] {
        let r = get_with(&format!("{url}?kid=unknown"), &headers).await;
        assert_eq!(r.status, 200, "an absent kid still gets the set");
        assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
        let r = get_with(&url, &headers).await;
        assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    }
    assert_eq!(upstream.requests_for(JWKS_PATH), 2);
}

#[actix_web::test]
async fn no_cache_revalidates_with_if_none_match_and_a_304() {
    let set = key_set(&["k1"]);
    let upstream = upstream_with(&set).await;
    upstream.set_etag(Some("\"v1\""));
    let gw = gateway(&upstream, &["--jwks-refetch-cooldown", "0s"]).await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.status, 200);
    let r = get_with(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, set.as_bytes());
    assert!(
        r.cache_status().contains("fwd=request; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(upstream.not_modified_sent(), 1);
    assert_eq!(upstream.requests_for(JWKS_PATH), 2);
}

#[actix_web::test]
async fn refused_sets_never_replace_the_last_good_one() {
    let good = key_set(&["k1"]);
    let upstream = upstream_with(&good).await;
    let gw = gateway(
        &upstream,
        &[
            "--jwks-refetch-cooldown",
            "0s",
            "--max-body-size",
            "4096",
            "--retry-backoff-min",
            "10ms",
            "--retry-backoff-max",
            "20ms",
        ],
    )
    .await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.body, good.as_bytes());
    let big = key_set(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
    assert!(big.len() > 4096);
    let bad: Vec<(&str, Behaviour)> = vec![
        (
            "private key",
            Behaviour::json(r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB","d":"secret"}]}"#),
        ),
        (
            "oct key",
            Behaviour::json(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
        ),
        ("empty set", Behaviour::json(r#"{"keys":[]}"#)),
        ("oversized", Behaviour::json(big)),
        (
            "html",
            Behaviour::with_content_type("text/html", "<html>maintenance</html>"),
        ),
        ("not an object", Behaviour::json(r#"[{"kty":"RSA"}]"#)),
    ];
    let mut fetches = upstream.requests_for(JWKS_PATH);
    for (what, behaviour) in bad {
        upstream.set_path(JWKS_PATH, behaviour);
        // Back-off after the previous refusal still applies: let it pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = get_with(&url, &[("cache-control", "no-cache")]).await;
        fetches += 1;
        assert_eq!(upstream.requests_for(JWKS_PATH), fetches, "{what}: fetched");
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.body, good.as_bytes(), "{what}: the last good set");
        assert!(
            r.cache_status().contains("fwd=request") && r.cache_status().contains("detail="),
            "{what}: {}",
            r.cache_status()
        );
        // Without no-cache: still the good one.
        assert_eq!(get(&url).await.body, good.as_bytes(), "{what}");
    }
}

#[actix_web::test]
async fn an_upstream_outage_serves_the_last_good_set_marked_stale() {
    let good = key_set(&["k1"]);
    let upstream = upstream_with(&good).await;
    let gw = gateway(
        &upstream,
        &[
            "--ttl",
            "1s",
            "--min-ttl",
            "1s",
            "--retry-backoff-min",
            "100ms",
            "--retry-backoff-max",
            "200ms",
        ],
    )
    .await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.body, good.as_bytes());
    upstream.set(Behaviour::status(503));
    upstream.set_path(JWKS_PATH, Behaviour::status(503));
    upstream.set_path(AS_PATH, Behaviour::status(503));
    let r = poll_until(&url, Duration::from_secs(8), |r| {
        r.cache_status().contains("fwd=stale")
    })
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, good.as_bytes());
    assert!(r.ttl() < 0, "{}", r.cache_status());
    // A client asking for a revalidation during the outage gets the set,
    // told that the revalidation failed and that it is stale.
    let r = get_with(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, good.as_bytes());
    assert!(r.ttl() < 0, "{}", r.cache_status());
}

#[actix_web::test]
async fn bad_queries_are_refused_and_never_reach_the_upstream() {
    let upstream = upstream_with(&key_set(&["k1"])).await;
    let gw = gateway(&upstream, &[]).await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.status, 200);
    for q in ["?kid=", "?kid=a&kid=b", "?x=1", "?kid=a&alg=RS256"] {
        let r = get(&format!("{url}{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        r.assert_json_error_body();
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    assert!(upstream.paths().iter().all(|p| !p.contains('?')));
}

#[actix_web::test]
async fn the_real_providers_sets_pass_byte_identical() {
    let Some(dir) = realdocs() else {
        // The collection lives beside the repository, not in it (a clone
        // elsewhere has none): nothing to compare.
        eprintln!("no realdocs collection beside the repository: skipped");
        return;
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with("-jwks.json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let upstream = upstream_with("{}").await;
        upstream.set_path(JWKS_PATH, Behaviour::json(bytes.clone()));
        let gw = gateway(&upstream, &[]).await;
        let r = get(&gw.url(ROUTE)).await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.body == bytes, "{name}: not byte-identical");
        seen += 1;
    }
    assert_eq!(seen, 5, "the five real key sets");
}

/// The real providers' collection as `strict_json`'s test finds it:
/// `REALDOCS_DIR`, else the shared folder beside the checkout (or beside
/// the worktrees' folder), else the team's `/work/shared/realdocs`.
fn realdocs() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("REALDOCS_DIR")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([
            root.join("../shared/realdocs"),
            root.join("../../shared/realdocs"),
            std::path::PathBuf::from("/work/shared/realdocs"),
        ])
        .find(|p| p.is_dir())
}

/// `/acme/keys` and `/globex/keys` on `gw` answer the upstream's key sets
/// of those tenants (one key each, `acme-1` and `globex-1`) byte for byte.
async fn assert_acme_and_globex_key_sets(gw: &TestGateway) {
    let acme = get(&gw.url("/acme/keys")).await;
    assert_eq!(acme.status, 200, "{}", String::from_utf8_lossy(&acme.body));
    assert_eq!(acme.body, key_set(&["acme-1"]).as_bytes());
    let globex = get(&gw.url("/globex/keys")).await;
    assert_eq!(
        globex.status,
        200,
        "{}",
        String::from_utf8_lossy(&globex.body)
    );
    assert_eq!(globex.body, key_set(&["globex-1"]).as_bytes());
}

#[actix_web::test]
async fn template_key_sets_per_tenant_and_unknown_tenants_get_404() {
    let upstream = tenants_upstream().await;
    // Key sets per tenant at /<tenant>/jwks on the upstream, via a
    // configured jwks_uri template.
    upstream.set_path("/acme/jwks", Behaviour::json(key_set(&["acme-1"])));
    upstream.set_path("/globex/jwks", Behaviour::json(key_set(&["globex-1"])));
    let config = format!(
        "[[authorization_server]]\nissuer = \"{base}/{{tenant}}\"\njwks_route = \"/{{tenant}}/keys\"\njwks_uri = \"{base}/{{tenant}}/jwks\"\n",
        base = upstream.base_url
    );
    let (_dir, path) = config_file_in_temp_dir(&config);
    let gw = TestGateway::start(&["--config", &path]).await;
    assert_acme_and_globex_key_sets(&gw).await;
    let missing = get(&gw.url("/missing-x/keys")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(get(&gw.url("/bad%20name/keys")).await.status, 404);
}

#[actix_web::test]
async fn template_key_sets_follow_each_tenants_metadata() {
    let upstream = tenants_upstream().await;
    let config = format!(
        "[[authorization_server]]\nissuer = \"{base}/{{tenant}}\"\njwks_route = \"/{{tenant}}/keys\"\n",
        base = upstream.base_url
    );
    let (_dir, path) = config_file_in_temp_dir(&config);
    let gw = TestGateway::start(&["--config", &path]).await;
    // The tenants' metadata has no jwks_uri: a clear 502, not a crash.
    let r = get(&gw.url("/acme/keys")).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("jwks_uri"));
    // An unknown tenant is a 404, as for its metadata.
    assert_eq!(get(&gw.url("/missing-x/keys")).await.status, 404);
}

#[actix_web::test]
async fn routes_that_collide_are_refused_naming_both() {
    for (route, other) in [
        ("/metrics", "/metrics"),
        (
            "/.well-known/oauth-authorization-server",
            "oauth-authorization-server",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-metadata-gateway"))
            .args(["--upstream", "http://127.0.0.1:9", "--jwks-route", route])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{route}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(other) && err.contains("#jwks"),
            "{route}: {err}"
        );
    }
}

#[actix_web::test]
async fn plain_http_key_sets_off_the_upstream_origin_are_refused() {
    let upstream = upstream_with("{}").await;
    upstream.set_path(
        AS_PATH,
        Behaviour::json(metadata_with_jwks(
            &upstream.base_url,
            "http://keys.elsewhere.example/jwks",
        )),
    );
    let gw = gateway(&upstream, &[]).await;
    let r = get(&gw.url(ROUTE)).await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("plain http"));
}

#[actix_web::test]
async fn a_key_set_survives_sigkill_and_is_served_during_the_outage() {
    use support::process::Process;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let set = key_set(&["k1", "k2"]);
    let upstream = upstream_with(&set).await;
    let args = [
        "--upstream",
        upstream.base_url.as_str(),
        "--jwks-route",
        ROUTE,
        "--state-dir",
        dir,
        "--retry-backoff-min",
        "100ms",
        "--retry-backoff-max",
        "200ms",
    ];
    let proc = Process::start(&args, &[]).await;
    let r = get(&proc.url(ROUTE)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    // Both the metadata and the key set are saved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // (Not counting a save's temporary file, `.tmp-…`: it may still be
    // renamed when the process is killed.)
    let saved = || {
        files_under(std::path::Path::new(dir))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json-doc"))
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .count()
    };
    while saved() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{}", proc.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    upstream.set(Behaviour::status(503));
    upstream.set_path(AS_PATH, Behaviour::status(503));
    upstream.set_path(JWKS_PATH, Behaviour::status(503));
    proc.kill();

    let proc = Process::start(&args, &[]).await;
    let r = get(&proc.url(ROUTE)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert_eq!(r.body, set.as_bytes(), "byte-identical after the restart");
    assert!(
        !r.cache_status().contains("fwd=miss"),
        "{}",
        r.cache_status()
    );
    // Counted in readiness like any document: servable, so ready.
    assert_eq!(get(&proc.url("/readyz")).await.status, 200);
    proc.kill();
}

#[actix_web::test]
async fn key_sets_are_listed_refreshed_and_counted() {
    let set = key_set(&["k1"]);
    let upstream = upstream_with(&set).await;
    let gw = TestGateway::start_with_admin(&[
        "--upstream",
        upstream.base_url.as_str(),
        "--jwks-route",
        ROUTE,
    ])
    .await;
    let _ = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    let r = get(&gw.url(ROUTE)).await;
    assert_eq!(r.status, 200);
    let list = get(&gw.admin("/documents")).await.json();
    let docs = list["documents"].as_array().unwrap();
    let ks = docs
        .iter()
        .find(|d| d["name"] == "oauth-authorization-server#jwks")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(ks["kind"], "jwks");
    assert_eq!(ks["routes"][0], ROUTE);
    assert_eq!(
        ks["upstream_urls"][0],
        format!("{}{JWKS_PATH}", upstream.base_url)
    );
    let one = get(&gw.admin("/documents?document=oauth-authorization-server%23jwks")).await;
    assert_eq!(one.status, 200, "{}", String::from_utf8_lossy(&one.body));

    let before = upstream.requests_for(JWKS_PATH);
    let r = send(
        "POST",
        &gw.admin("/refresh?document=oauth-authorization-server%23jwks"),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    // Counted from before the POST: the refresh may reach the upstream
    // before the 202 does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while upstream.requests_for(JWKS_PATH) == before {
        assert!(tokio::time::Instant::now() < deadline, "refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Metrics: a kind label, the key set's own series, no tenant.
    let m = get(&gw.url("/metrics")).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(
            r#"metadata_gateway_lookups_total{document="oauth-authorization-server#jwks",kind="jwks",result="hit"}"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"metadata_gateway_lookups_total{document="oauth-authorization-server",kind="metadata",result="hit"}"#
    ));
}

/// Keys made and tokens signed by jose (tests/interop/jwks.mjs): the
/// public JWKs by kid, and a token per kid.
async fn jose_keys(
    issuer: &str,
    audience: &str,
    kids: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let mut args = vec!["keys", issuer, audience];
    args.extend_from_slice(kids);
    let out = support::node::run_json("jwks.mjs", &args).await;
    (out["keys"].clone(), out["tokens"].clone())
}

fn published(keys: &serde_json::Value, kids: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = kids.iter().map(|k| keys[*k].clone()).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// jose verifying `tokens` through the gateway as docs/key-sets.md
/// configures it; one result per token.
async fn jose_verify(
    url: &str,
    issuer: &str,
    audience: &str,
    tokens: &[&str],
) -> Vec<serde_json::Value> {
    let mut args = vec!["verify", url, issuer, audience];
    args.extend_from_slice(tokens);
    let out = support::node::run_json("jwks.mjs", &args).await;
    out.as_array().cloned().unwrap_or_default()
}

#[actix_web::test]
async fn jose_verifies_a_token_signed_by_a_key_added_a_moment_ago() {
    support::node::require_node_package("jose");
    let upstream = upstream_with("{}").await;
    let issuer = upstream.base_url.clone();
    let (keys, tokens) = jose_keys(&issuer, "mcp", &["old", "new"]).await;
    upstream.set_path(JWKS_PATH, Behaviour::json(published(&keys, &["old"])));
    upstream.set_etag(Some("\"v1\""));
    // A 300 s lifetime: without a revalidation the old set would be
    // served for five minutes.
    let gw = gateway(&upstream, &["--ttl", "300s"]).await;
    let url = gw.url(ROUTE);
    let r = get(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, published(&keys, &["old"]).as_bytes());
    let old = tokens["old"].as_str().unwrap();
    let new = tokens["new"].as_str().unwrap();

    // The authorization server adds a key and signs with it at once; the
    // gateway still holds the old set, fresh for five minutes.
    upstream.set_path(
        JWKS_PATH,
        Behaviour::json(published(&keys, &["old", "new"])),
    );
    upstream.set_etag(Some("\"v2\""));
    assert!(get(&url).await.cache_status().contains("; hit"));
    let results = jose_verify(&url, &issuer, "mcp", &[new, old]).await;
    assert!(
        results.iter().all(|r| r["ok"] == true),
        "a token signed by the new key verifies with no wait: {results:?}"
    );
    // jose's no-cache was one conditional revalidation upstream.
    assert_eq!(upstream.requests_for(JWKS_PATH), 2);
}

#[actix_web::test]
async fn jose_verifies_tokens_while_the_upstream_is_down() {
    support::node::require_node_package("jose");
    let upstream = upstream_with("{}").await;
    let issuer = upstream.base_url.clone();
    let (keys, tokens) = jose_keys(&issuer, "mcp", &["k1", "k2"]).await;
    upstream.set_path(JWKS_PATH, Behaviour::json(published(&keys, &["k1", "k2"])));
    let gw = gateway(&upstream, &["--jwks-refetch-cooldown", "0s"]).await;
    let url = gw.url(ROUTE);
    assert_eq!(get(&url).await.status, 200);
    // The authorization server goes down (503 everywhere).
    upstream.set(Behaviour::status(503));
    upstream.set_path(AS_PATH, Behaviour::status(503));
    upstream.set_path(JWKS_PATH, Behaviour::status(503));
    let before = upstream.requests_for(JWKS_PATH);
    let k1 = tokens["k1"].as_str().unwrap();
    let k2 = tokens["k2"].as_str().unwrap();
    let results = jose_verify(&url, &issuer, "mcp", &[k1, k2]).await;
    assert!(
        results.iter().all(|r| r["ok"] == true),
        "verification goes on through the outage: {results:?}"
    );
    // jose's no-cache did reach the (failing) upstream: the gateway tried.
    assert!(upstream.requests_for(JWKS_PATH) > before);
}

#[actix_web::test]
async fn a_jwks_uri_under_the_issuer_goes_through_the_upstream_mapping() {
    // The public issuer is not reachable from here; the upstream is.
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let issuer = "https://login.example.com/t1";
    upstream.set_path(
        &format!("{AS_PATH}/t1"),
        Behaviour::json(metadata_with_jwks(issuer, &format!("{issuer}/keys"))),
    );
    let set = key_set(&["k1"]);
    upstream.set_path("/t1/keys", Behaviour::json(set.clone()));
    let upstream_url = format!("{}/t1", upstream.base_url);
    let gw = TestGateway::start(&[
        "--upstream",
        &upstream_url,
        "--issuer",
        issuer,
        "--jwks-route",
        "/t1/jwks.json",
    ])
    .await;
    let r = get(&gw.url("/t1/jwks.json")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, set.as_bytes());
    assert_eq!(upstream.requests_for("/t1/keys"), 1);
}

#[actix_web::test]
async fn template_tenants_follow_their_metadata_and_rotate_on_demand() {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let public = "https://login.example.com";
    for tenant in ["acme", "globex"] {
        let issuer = format!("{public}/{tenant}");
        upstream.set_path(
            &format!("{AS_PATH}/{tenant}"),
            Behaviour::json(metadata_with_jwks(
                &issuer,
                &format!("{issuer}/discovery/keys"),
            )),
        );
        upstream.set_path(
            &format!("/{tenant}/discovery/keys"),
            Behaviour::json(key_set(&[&format!("{tenant}-1")])),
        );
    }
    let config = format!(
        "[[authorization_server]]\nissuer = \"{public}/{{tenant}}\"\nupstream = \"{base}/{{tenant}}\"\njwks_route = \"/{{tenant}}/keys\"\njwks_refetch_cooldown = \"1h\"\n",
        base = upstream.base_url
    );
    let (_dir, path) = config_file_in_temp_dir(&config);
    let gw = TestGateway::start(&["--config", &path]).await;
    assert_acme_and_globex_key_sets(&gw).await;
    assert_eq!(
        get(&gw.url("/initech/keys")).await.status,
        404,
        "unknown tenant"
    );

    // acme rotates: 50 requests for the new kid, one fetch.
    let rotated = key_set(&["acme-1", "acme-2"]);
    upstream.set_path(
        "/acme/discovery/keys",
        Behaviour::json(rotated.clone()).delayed(Duration::from_millis(100)),
    );
    let before = upstream.requests_for("/acme/discovery/keys");
    let url = gw.url("/acme/keys?kid=acme-2");
    let replies = join_all((0..50).map(|_| get(&url))).await;
    for r in &replies {
        assert_eq!(r.body, rotated.as_bytes());
        assert!(
            r.cache_status().contains("fwd=request"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(upstream.requests_for("/acme/discovery/keys"), before + 1);
    // Within acme's cooldown: no fetch. globex has a cooldown of its own.
    let r = get(&gw.url("/acme/keys?kid=acme-3")).await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    assert_eq!(upstream.requests_for("/acme/discovery/keys"), before + 1);
    let r = get_with(&gw.url("/globex/keys"), &[("cache-control", "no-cache")]).await;
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
}

#[actix_web::test]
async fn the_mcp_sdk_bearer_auth_with_the_documented_verifier_accepts_gateway_keys() {
    support::node::require_node_package("jose");
    support::node::require_node_package("@modelcontextprotocol/sdk");
    let upstream = upstream_with("{}").await;
    let issuer = upstream.base_url.clone();
    // jwks.mjs signs tokens for audience = the resource, with scope mcp:tools.
    let resource = "https://mcp.example.com/mcp";
    let (keys, tokens) = jose_keys(&issuer, resource, &["k1"]).await;
    let (_, foreign) = jose_keys(&issuer, resource, &["k1"]).await;
    upstream.set_path(JWKS_PATH, Behaviour::json(published(&keys, &["k1"])));
    let gw = gateway(&upstream, &[]).await;
    let url = gw.url(ROUTE);
    let good = tokens["k1"].as_str().unwrap();
    let forged = foreign["k1"].as_str().unwrap();
    let out = support::node::run_json(
        "jwks.mjs",
        &["verify-sdk", &url, &issuer, resource, good, forged],
    )
    .await;
    assert_eq!(out[0]["status"], 200, "{out}");
    assert_eq!(
        out[1]["status"], 401,
        "a token signed by another key: {out}"
    );
}

#[actix_web::test]
async fn a_reload_adds_a_key_set_and_a_changed_metadata_keeps_it_following() {
    let set = key_set(&["k1"]);
    let upstream = upstream_with(&set).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let write = |text: String| {
        let tmp = dir.path().join("gateway.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let base = upstream.base_url.clone();
    write(format!("[[authorization_server]]\nissuer = \"{base}\"\n"));
    let gw = TestGateway::start(&["--config", path.to_str().unwrap()]).await;
    assert_eq!(get(&gw.url(AS_PATH)).await.status, 200);
    assert_eq!(get(&gw.url(ROUTE)).await.status, 404, "no key set yet");

    // SIGHUP's reload: the key set appears.
    write(format!(
        "[[authorization_server]]\nissuer = \"{base}\"\njwks_route = \"{ROUTE}\"\njwks_ttl = \"300s\"\njwks_refetch_cooldown = \"0s\"\n"
    ));
    gw.reload();
    let r = poll_until(&gw.url(ROUTE), Duration::from_secs(10), |r| r.status == 200).await;
    assert_eq!(r.body, set.as_bytes());

    // The metadata's lifetime changes (a new metadata slot) while the key
    // set's configuration does not (its slot is kept), and the metadata now
    // names another jwks_uri: the key set follows it.
    let moved = key_set(&["k2"]);
    upstream.set_path("/jwks-v2", Behaviour::json(moved.clone()));
    upstream.set_path(
        AS_PATH,
        Behaviour::json(metadata_with_jwks(&base, &format!("{base}/jwks-v2"))),
    );
    write(format!(
        "[[authorization_server]]\nissuer = \"{base}\"\nttl = \"10m\"\njwks_route = \"{ROUTE}\"\njwks_ttl = \"300s\"\njwks_refetch_cooldown = \"0s\"\n"
    ));
    gw.reload();
    // The reloaded metadata (refetched at once) names the new location.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get_with(&gw.url(ROUTE), &[("cache-control", "no-cache")]).await;
        if r.body == moved.as_bytes() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} {}",
            r.status,
            r.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(upstream.requests_for("/jwks-v2") >= 1);
}
