//! The state directory as a template's second tier (`--state-dir`,
//! `max_tenants_on_disk`): a tenant pushed out of memory keeps its file
//! and is served from it (fresh: a hit without an upstream request; stale:
//! revalidated with its validators, served stale if that fails), a damaged
//! or foreign file is never served and is refetched, the disk bound evicts
//! the least recently used, a reload that removes the template removes its
//! files (one that changes it keeps them), and a `410 Gone` removes the
//! file.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oauth_metadata_gateway::cache::tenants::TemplateCache;
use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::{Cli, Generation as Assembled};
use support::process::Process;
use support::*;

fn route(tenant: &str) -> String {
    format!("{AS_PATH}/realms/{tenant}")
}

/// The issuer template `<upstream>/realms/{tenant}`.
fn template_of(upstream: &Upstream) -> String {
    format!("{}/realms/{{tenant}}", upstream.base_url)
}

/// The document the upstream serves for `tenant`.
fn want(upstream: &Upstream, tenant: &str) -> String {
    document(&format!("{}/realms/{tenant}", upstream.base_url))
}

/// One tenant in memory, copies stale after a second and servable stale
/// for an hour: the flags of the tests that push a tenant to disk and let
/// its copy turn stale there.
const ONE_IN_MEMORY_STALE_AFTER_1S: &[&str] = &[
    "--max-tenants",
    "1",
    "--ttl",
    "1s",
    "--min-ttl",
    "1s",
    "--max-stale",
    "1h",
];

/// A gateway assembled in-process (no listener) for the template in front
/// of `upstream`, with a state directory `dir` and these extra flags.
fn assembled(upstream: &Upstream, dir: &Path, extra: &[&str]) -> Arc<Assembled> {
    let template = template_of(upstream);
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "oauth-metadata-gateway",
        "--issuer",
        &template,
        "--upstream",
        &template,
        "--state-dir",
        dir,
        "--retry-backoff-min",
        "1s",
        "--retry-backoff-max",
        "1s",
    ];
    args.extend_from_slice(extra);
    let config = Cli::config_from_args(args).unwrap();
    Assembled::new(&config).unwrap()
}

/// The tenant files under `dir` (member files: `m-<template tag>-<tenant>`).
fn tenant_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("m-") && name.ends_with(".json-doc")
        })
        .collect()
}

/// `tenant`'s file under `dir`, if there is one.
fn file_of(dir: &Path, tenant: &str) -> Option<PathBuf> {
    let suffix = format!("-{tenant}.json-doc");
    tenant_files(dir)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&suffix))
}

/// Waits (bounded) until the tenant files under `dir` are exactly
/// `tenants`.
async fn wait_for_tenant_files(dir: &Path, tenants: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have: Vec<bool> = tenants.iter().map(|t| file_of(dir, t).is_some()).collect();
        if have.iter().all(|h| *h) && tenant_files(dir).len() == tenants.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected the files of {tenants:?} under {}, found {:?}",
            dir.display(),
            tenant_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `tenant`'s file holds a valid copy of `body`
/// (a save is atomic: the file is whole or absent).
async fn wait_for_body(dir: &Path, tenant: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = file_of(dir, tenant)
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_default();
        if bytes.ends_with(body.as_bytes()) && bytes.contains(&b'\n') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tenant}'s file never got its document back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches each of `all` once (each a miss), waits until each has its
/// file in `dir`, and returns those then held only on disk (not in memory).
async fn fetched_then_only_on_disk<'a>(
    cache: &Arc<TemplateCache>,
    dir: &Path,
    all: &[&'a str],
) -> Vec<&'a str> {
    for t in all {
        assert_eq!(cache.lookup(t).await.outcome, CacheOutcome::Miss, "{t}");
    }
    wait_for_tenant_files(dir, all).await;
    cache.entry_count().await;
    all.iter().copied().filter(|t| !cache.holds(t)).collect()
}

/// `metadata_gateway_tenant_disk_loads_total` of the test template for
/// `outcome`, from the metrics text `text`.
fn disk_loads(text: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!(
            "metadata_gateway_tenant_disk_loads_total{{{TEMPLATE_LABEL},outcome=\"{outcome}\"}}"
        ),
    )
}

/// The metric label of the test template's documents.
const TEMPLATE_LABEL: &str = "document=\"oauth-authorization-server/realms/{tenant}\"";

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[actix_web::test]
async fn evicted_tenants_are_served_from_disk_during_an_outage() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = assembled(&up, tmp.path(), &["--max-tenants", "4"]);
    let cache = gw.templates[0].clone();
    let tenants: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    for t in &names {
        assert_eq!(cache.lookup(t).await.outcome, CacheOutcome::Miss, "{t}");
    }
    wait_for_tenant_files(tmp.path(), &names).await;
    assert!(cache.entry_count().await <= 4, "memory stays bounded");

    up.set(Behaviour::status(503));
    let before = up.requests();
    let mut from_disk = 0;
    for t in &names {
        let l = cache.lookup(t).await;
        assert!(
            matches!(l.outcome, CacheOutcome::Hit | CacheOutcome::DiskHit),
            "{t}: {:?}",
            l.outcome
        );
        let stored = l.stored.expect("a document");
        assert_eq!(
            stored.document.body,
            want(&up, t).as_bytes(),
            "{t}: the saved bytes"
        );
        from_disk += usize::from(l.outcome == CacheOutcome::DiskHit);
    }
    assert!(
        from_disk >= 8,
        "the 8+ tenants out of memory came from disk: {from_disk}"
    );
    assert_eq!(up.requests(), before, "fresh copies: no upstream request");
    assert!(
        cache.entry_count().await <= 4,
        "still bounded by max_tenants"
    );
    assert_eq!(cache.disk().map(|d| d.len()), Some(12));
}

#[actix_web::test]
async fn a_fresh_tenant_from_disk_is_a_hit_without_an_upstream_fetch() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let template = template_of(&up);
    let dir = tmp.path().to_str().unwrap();
    let gw = TestGateway::start_with_admin(&[
        "--issuer",
        &template,
        "--upstream",
        &template,
        "--state-dir",
        dir,
        "--max-tenants",
        "1",
    ])
    .await;
    let all = ["acme", "globex", "initech"];
    for t in all {
        let r = get(&gw.url(&route(t))).await;
        assert_eq!(r.status, 200);
        assert!(
            r.cache_status().contains("fwd=miss"),
            "{}",
            r.cache_status()
        );
    }
    wait_for_tenant_files(tmp.path(), &all).await;

    // At least two of the three are only on disk, and say so.
    let listing = get(&gw.admin("/documents?tier=disk")).await.json();
    let on_disk: Vec<&str> = listing["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["tier"], "disk");
            assert_eq!(d["state"], "on_disk");
            d["tenant"].as_str().unwrap()
        })
        .collect();
    assert!(on_disk.len() >= 2, "{listing}");
    assert_eq!(listing["templates"][0]["tenants_on_disk"], 3, "{listing}");
    let in_memory = get(&gw.admin("/documents?tier=memory")).await.json();
    for d in in_memory["documents"].as_array().unwrap() {
        assert_eq!(d["tier"], "memory");
        assert!(!on_disk.contains(&d["tenant"].as_str().unwrap()));
    }

    let before = up.requests();
    let mut disk_hits = 0;
    for t in on_disk.iter().copied() {
        let r = get(&gw.url(&route(t))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, want(&up, t).as_bytes());
        assert!(
            r.cache_status()
                .starts_with("oauth-metadata-gateway; hit; ttl=")
                && r.cache_status().ends_with("; detail=disk"),
            "{t}: {}",
            r.cache_status()
        );
        assert!(r.age() < 60 && r.max_age() > 0, "its remaining lifetime");
        disk_hits += 1;
    }
    assert_eq!(
        up.requests(),
        before,
        "a disk load is not an upstream fetch"
    );
    let text = String::from_utf8(get(&gw.url("/metrics")).await.body).unwrap();
    assert_eq!(disk_loads(&text, "fresh"), f64::from(disk_hits));
    assert_eq!(
        metric(
            &text,
            &format!("metadata_gateway_tenants_on_disk{{{TEMPLATE_LABEL}}}")
        ),
        3.0
    );
}

#[actix_web::test]
async fn a_stale_tenant_from_disk_is_revalidated_or_served_stale() {
    let up = tenants_upstream().await;
    up.set_etag(Some("\"v1\""));
    let tmp = tempfile::tempdir().unwrap();
    let gw = assembled(&up, tmp.path(), ONE_IN_MEMORY_STALE_AFTER_1S);
    let cache = gw.templates[0].clone();
    let all = ["a", "b", "c"];
    let disk_only = fetched_then_only_on_disk(&cache, tmp.path(), &all).await;
    assert!(disk_only.len() >= 2, "{disk_only:?}");
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // Stale on disk: one conditional fetch with its validators, a 304.
    let (x, y) = (disk_only[0], disk_only[1]);
    let (requests, not_modified) = (up.requests(), up.not_modified_sent());
    let l = cache.lookup(x).await;
    assert_eq!(l.outcome, CacheOutcome::Miss, "renewed by the upstream");
    assert_eq!(up.requests(), requests + 1, "one fetch");
    assert_eq!(up.not_modified_sent(), not_modified + 1, "a 304");
    let head = up.request_heads().pop().unwrap();
    assert_eq!(header_of(&head, "if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(l.stored.unwrap().document.body, want(&up, x).as_bytes());

    // The upstream down: served stale, like a stale copy in memory.
    up.set(Behaviour::status(503));
    let l = cache.lookup(y).await;
    assert_eq!(l.outcome, CacheOutcome::Stale);
    assert_eq!(l.stored.unwrap().document.body, want(&up, y).as_bytes());
    assert!(l.error.is_some(), "with the upstream's failure");
    let text = String::from_utf8(gw.metrics.render().unwrap()).unwrap();
    assert_eq!(disk_loads(&text, "stale"), 2.0);
}

#[actix_web::test]
async fn a_damaged_or_foreign_file_on_disk_is_never_served_and_is_refetched() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = assembled(&up, tmp.path(), &["--max-tenants", "1"]);
    let cache = gw.templates[0].clone();
    let all = ["a", "b", "c"];
    let disk_only = fetched_then_only_on_disk(&cache, tmp.path(), &all).await;
    let (x, y) = (disk_only[0], disk_only[1]);
    let other = all.iter().find(|t| **t != y).unwrap();

    // x: one byte of its body changed (the checksum no longer matches);
    // y: another tenant's intact file copied over it (its key differs).
    let x_path = file_of(tmp.path(), x).unwrap();
    let mut bytes = std::fs::read(&x_path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&x_path, bytes).unwrap();
    let other_bytes = std::fs::read(file_of(tmp.path(), other).unwrap()).unwrap();
    std::fs::write(file_of(tmp.path(), y).unwrap(), other_bytes).unwrap();

    let before = up.requests();
    for t in [x, y] {
        let l = cache.lookup(t).await;
        assert_eq!(l.outcome, CacheOutcome::Miss, "{t}: refetched, not served");
        assert_eq!(l.stored.unwrap().document.body, want(&up, t).as_bytes());
    }
    assert_eq!(up.requests(), before + 2);
    // Removed, then saved again by the refetch.
    wait_for_body(tmp.path(), x, &want(&up, x)).await;
    wait_for_body(tmp.path(), y, &want(&up, y)).await;
    let text = String::from_utf8(gw.metrics.render().unwrap()).unwrap();
    assert_eq!(disk_loads(&text, "corrupt"), 2.0);
}

#[actix_web::test]
async fn the_disk_bound_evicts_the_least_recently_used() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir_s = dir.to_str().unwrap();
    let template = template_of(&up);
    let base = [
        "--issuer",
        &template,
        "--upstream",
        &template,
        "--state-dir",
        dir_s,
    ];

    // Saved in this order: t1 is the least recently used.
    let proc = Process::start(&base, &[]).await;
    let mut saved = Vec::new();
    for t in ["t1", "t2", "t3", "t4"] {
        assert_eq!(
            get(&proc.url(&route(t))).await.status,
            200,
            "{}",
            proc.text()
        );
        saved.push(t);
        wait_for_tenant_files(&dir, &saved).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc.kill();

    // A bound of 3: the oldest save goes at start-up (the directory is
    // listed, not read: the order is the files' modification times).
    let mut args = base.to_vec();
    args.extend(["--max-tenants", "1", "--max-tenants-on-disk", "3"]);
    let proc = Process::start(&args, &[]).await;
    wait_for_tenant_files(&dir, &["t2", "t3", "t4"]).await;

    // t2 is read back (used), then a new tenant is saved: the least
    // recently used is now t3, and it goes.
    let r = get(&proc.url(&route("t2"))).await;
    assert!(
        r.cache_status().ends_with("detail=disk"),
        "{}",
        r.cache_status()
    );
    let r = get(&proc.url(&route("t5"))).await;
    assert!(
        r.cache_status().contains("fwd=miss"),
        "{}",
        r.cache_status()
    );
    wait_for_tenant_files(&dir, &["t2", "t4", "t5"]).await;
    let r = get(&proc.url(&route("t3"))).await;
    assert!(
        r.cache_status().contains("fwd=miss"),
        "t3 was evicted: {}",
        r.cache_status()
    );
    proc.kill();
}

#[actix_web::test]
async fn a_reload_that_removes_the_template_removes_its_files() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    let config = |template: bool, ttl: &str| {
        let mut text = format!(
            "[[authorization_server]]\nissuer = \"{}/fixed\"\n",
            up.base_url
        );
        if template {
            text.push_str(&format!(
                "\n[[authorization_server]]\nissuer = \"{}\"\nttl = \"{ttl}\"\nmax_tenants = 1\n",
                template_of(&up)
            ));
        }
        text
    };
    let (_file_dir, path) = config_file_in_temp_dir(&config(true, "5m"));
    let gw = TestGateway::start_with_admin(&["--config", &path, "--state-dir", state_s]).await;
    let all = ["a", "b", "c"];
    for t in all {
        assert_eq!(get(&gw.url(&route(t))).await.status, 200);
    }
    wait_for_tenant_files(&state, &all).await;

    // Changed (another TTL): the successor keeps the files, and serves
    // the tenants only on disk from them.
    std::fs::write(&path, config(true, "10m")).unwrap();
    gw.reload();
    let listing = poll_until(&gw.admin("/documents"), Duration::from_secs(10), |r| {
        r.status == 200 && r.json()["generation"] == 1
    })
    .await
    .json();
    assert_eq!(listing["templates"][0]["tenants_on_disk"], 3, "{listing}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_tenant_files(&state, &all).await;
    let before = up.requests();
    let mut from_disk = 0;
    for t in all {
        let r = get(&gw.url(&route(t))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, want(&up, t).as_bytes());
        from_disk += usize::from(r.cache_status().ends_with("detail=disk"));
    }
    assert!(
        from_disk >= 2,
        "the tenants only on disk are read from there"
    );
    // The one carried over in memory is refreshed at once, as every copy
    // a changed template carries over is; the others need no fetch.
    assert!(
        up.requests() <= before + 1,
        "{} fetches",
        up.requests() - before
    );

    // Removed: every file of the template goes, in memory or not.
    std::fs::write(&path, config(false, "")).unwrap();
    gw.reload();
    poll_until(&gw.admin("/documents"), Duration::from_secs(10), |r| {
        r.status == 200 && r.json()["generation"] == 2
    })
    .await;
    wait_for_tenant_files(&state, &[]).await;
    assert_eq!(get(&gw.url(&route("a"))).await.status, 404);
}

#[actix_web::test]
async fn gone_410_removes_the_file() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = assembled(&up, tmp.path(), ONE_IN_MEMORY_STALE_AFTER_1S);
    let cache = gw.templates[0].clone();
    let all = ["a", "b"];
    let disk_only = fetched_then_only_on_disk(&cache, tmp.path(), &all).await;
    up.set(Behaviour::status(410));
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // Only on disk and stale: its revalidation learns 410, the file goes.
    let x = disk_only[0];
    assert_eq!(cache.lookup(x).await.outcome, CacheOutcome::NotFound);
    // In memory (if one still is) and stale: served stale, and its
    // background refresh learns 410.
    for t in all.iter().filter(|t| **t != x) {
        let outcome = cache.lookup(t).await.outcome;
        assert!(
            matches!(outcome, CacheOutcome::Stale | CacheOutcome::NotFound),
            "{t}: {outcome:?}"
        );
    }
    wait_for_tenant_files(tmp.path(), &[]).await;
    assert_eq!(cache.disk().map(|d| d.len()), Some(0));
}

#[actix_web::test]
async fn tenant_files_of_an_earlier_version_are_renamed_and_served() {
    let up = tenants_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir_s = dir.to_str().unwrap();
    let template = template_of(&up);
    let args = [
        "--issuer",
        template.as_str(),
        "--upstream",
        template.as_str(),
        "--state-dir",
        dir_s,
    ];
    let proc = Process::start(&args, &[]).await;
    assert_eq!(get(&proc.url(&route("acme"))).await.status, 200);
    wait_for_tenant_files(&dir, &["acme"]).await;
    proc.kill();

    // Earlier versions named a tenant's file by the hash of its key.
    let key = "oauth-authorization-server/realms/{tenant}@acme";
    let legacy = dir.join(oauth_metadata_gateway::cache::persist::store::hashed_file_name(key));
    std::fs::rename(file_of(&dir, "acme").unwrap(), &legacy).unwrap();
    wait_for_tenant_files(&dir, &[]).await;

    up.set(Behaviour::status(503));
    let proc = Process::start(&args, &[]).await;
    wait_for_tenant_files(&dir, &["acme"]).await;
    assert!(!legacy.exists(), "renamed, not copied");
    let r = get(&proc.url(&route("acme"))).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert_eq!(r.body, want(&up, "acme").as_bytes());
    proc.kill();
}
