//! Config reloads (what SIGHUP does in the binary, driven here through the
//! reload channel of `run`): added, removed and changed documents; a bad
//! file refused while the old configuration keeps serving; unchanged
//! documents fetch nothing; every request answered 200 while reloads run
//! under load; no `--config` is a no-op.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// A config file the test rewrites between reloads (atomically, as an
/// operator's deploy tool would).
struct File {
    dir: tempfile::TempDir,
}

impl File {
    fn new(text: &str) -> Self {
        let f = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write(text);
        f
    }

    fn path(&self) -> String {
        self.dir.path().join("gateway.toml").display().to_string()
    }

    fn write(&self, text: &str) {
        let tmp = self.dir.path().join("gateway.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path()).unwrap();
    }
}

/// A gateway (with an admin listener) running from a config file holding
/// `text`, plus `extra` flags; the file is returned for the test to rewrite.
async fn gateway_on(text: &str, extra: &[&str]) -> (File, TestGateway) {
    let file = File::new(text);
    let path = file.path();
    let mut args = vec!["--config", &path];
    args.extend_from_slice(extra);
    let gw = TestGateway::start_with_admin(&args).await;
    (file, gw)
}

/// `[[authorization_server]]` tables for these tenants of `upstream`, with
/// extra keys per tenant.
fn tenants(upstream: &Upstream, list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(t, extra)| {
            format!(
                "[[authorization_server]]\nissuer = \"{}/{t}\"\n{extra}\n",
                upstream.base_url
            )
        })
        .collect()
}

fn route(tenant: &str) -> String {
    format!("{AS_PATH}/{tenant}")
}

async fn upstream() -> Upstream {
    tenants_upstream().await
}

/// Polls the admin listener until the configuration generation is `n`.
async fn wait_generation(gw: &TestGateway, n: u64) -> serde_json::Value {
    let r = poll_until(&gw.admin("/documents"), Duration::from_secs(10), |r| {
        r.status == 200 && r.json()["generation"] == n
    })
    .await;
    r.json()
}

/// The `/metrics` text once it no longer holds `gone` (a reload drops
/// series just after swapping the configuration in), bounded.
async fn metrics_without(gw: &TestGateway, gone: &str) -> String {
    let r = poll_until(&gw.url("/metrics"), Duration::from_secs(5), |r| {
        !String::from_utf8_lossy(&r.body).contains(gone)
    })
    .await;
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Polls `/metrics` until `n` reloads were refused.
async fn wait_refused(gw: &TestGateway, n: usize) {
    let line = format!("metadata_gateway_config_reloads_total{{outcome=\"refused\"}} {n}\n");
    poll_until(&gw.url("/metrics"), Duration::from_secs(10), |r| {
        String::from_utf8_lossy(&r.body).contains(&line)
    })
    .await;
}

/// Polls until every document is fetched (fresh).
async fn wait_all_fresh(gw: &TestGateway, count: usize) {
    poll_until(&gw.admin("/documents"), Duration::from_secs(10), |r| {
        let docs = r.json()["documents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        docs.len() == count && docs.iter().all(|d| d["state"] == "fresh")
    })
    .await;
}

#[actix_web::test]
async fn a_reload_adds_removes_and_changes_documents_and_keeps_the_unchanged_ones() {
    let upstream = upstream().await;
    let (file, gw) = gateway_on(
        &tenants(&upstream, &[("t1", ""), ("t2", ""), ("t3", "")]),
        &[],
    )
    .await;
    wait_all_fresh(&gw, 3).await;
    for t in ["t1", "t2", "t3"] {
        assert_eq!(get(&gw.url(&route(t))).await.status, 200);
    }
    let metrics = get(&gw.url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("document=\"oauth-authorization-server/t3\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("route=\"{}\"", route("t3"))),
        "{text}"
    );
    assert_eq!(upstream.requests_for(&route("t1")), 1);

    // t1 unchanged, t2 changed (its TTL), t3 removed, t4 added.
    file.write(&tenants(
        &upstream,
        &[("t1", ""), ("t2", "ttl = \"7m\""), ("t4", "")],
    ));
    gw.reload();
    wait_generation(&gw, 1).await;
    wait_all_fresh(&gw, 3).await;

    let t1 = get(&gw.url(&route("t1"))).await;
    assert_eq!(t1.status, 200);
    assert!(t1.cache_status().contains("; hit"), "{}", t1.cache_status());
    assert_eq!(
        upstream.requests_for(&route("t1")),
        1,
        "an unchanged document keeps its cached copy: no fetch"
    );
    // A changed document keeps serving its cached copy and is fetched
    // again at once; the new copy has the new TTL (7m).
    let t2 = poll_until(&gw.url(&route("t2")), Duration::from_secs(5), |r| {
        r.status == 200 && (400..=420).contains(&r.max_age())
    })
    .await;
    assert!(
        (400..=420).contains(&t2.max_age()),
        "the new TTL (7m) applies: {:?}",
        t2.header("cache-control")
    );
    assert_eq!(
        upstream.requests_for(&route("t2")),
        2,
        "a changed document is fetched again, once"
    );
    let t4 = get(&gw.url(&route("t4"))).await;
    assert_eq!(t4.status, 200);
    assert_eq!(t4.json()["issuer"], format!("{}/t4", upstream.base_url));

    let t3 = get(&gw.url(&route("t3"))).await;
    assert_eq!(t3.status, 404, "a removed route answers the JSON 404");
    assert_eq!(t3.json()["error"], "not_found");
    assert_eq!(t3.header("access-control-allow-origin"), Some("*"));

    // The removed document's series are gone, the others stay.
    let text = metrics_without(&gw, "document=\"oauth-authorization-server/t3\"").await;
    assert!(
        !text.contains("document=\"oauth-authorization-server/t3\""),
        "metrics of a removed document disappear:\n{text}"
    );
    assert!(
        !text.contains(&format!("route=\"{}\"", route("t3"))),
        "route series of a removed route disappear:\n{text}"
    );
    assert!(text.contains("document=\"oauth-authorization-server/t1\""));
    assert!(text.contains("document=\"oauth-authorization-server/t4\""));
}

#[actix_web::test]
async fn a_bad_file_is_refused_and_the_old_configuration_keeps_serving() {
    let upstream = upstream().await;
    let (file, gw) = gateway_on(&tenants(&upstream, &[("t1", "")]), &[]).await;
    wait_all_fresh(&gw, 1).await;

    for (refused, bad) in [
        // TOML syntax error.
        "[[authorization_server]\nissuer = 1\n".to_string(),
        // Valid TOML, invalid configuration (unknown key).
        format!(
            "[[authorization_server]]\nissuer = \"{}/t2\"\nttl_typo = \"1m\"\n",
            upstream.base_url
        ),
        // Two documents on one route.
        tenants(&upstream, &[("t2", ""), ("t2", "")]),
    ]
    .into_iter()
    .enumerate()
    {
        file.write(&bad);
        gw.reload();
        // A refused reload changes nothing; wait until it has run.
        wait_refused(&gw, refused + 1).await;
        let docs = get(&gw.admin("/documents")).await.json();
        assert_eq!(docs["generation"], 0, "refused: {bad}");
        assert_eq!(docs["documents"].as_array().unwrap().len(), 1);
        let r = get(&gw.url(&route("t1"))).await;
        assert_eq!(r.status, 200, "the old configuration keeps serving");
        assert_eq!(get(&gw.url(&route("t2"))).await.status, 404);
    }
    // The file removed altogether.
    std::fs::remove_file(file.path()).unwrap();
    gw.reload();
    wait_refused(&gw, 4).await;
    assert_eq!(get(&gw.url(&route("t1"))).await.status, 200);
    // Seen in the metrics, not only in the log.
    let text = String::from_utf8_lossy(&get(&gw.url("/metrics")).await.body).into_owned();
    assert!(
        text.contains("metadata_gateway_config_last_reload_successful 0\n"),
        "{text}"
    );
    assert!(
        text.contains("metadata_gateway_config_reloads_total{outcome=\"refused\"} 4\n"),
        "{text}"
    );

    // Fixed: the next reload applies.
    file.write(&tenants(&upstream, &[("t1", ""), ("t2", "")]));
    gw.reload();
    wait_generation(&gw, 1).await;
    let text = metrics_without(&gw, "metadata_gateway_config_last_reload_successful 0").await;
    assert!(
        text.contains("metadata_gateway_config_last_reload_successful 1\n"),
        "{text}"
    );
    assert!(
        text.contains("metadata_gateway_config_reloads_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    let r = poll_until(&gw.url(&route("t2")), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.requests_for(&route("t1")), 1);
}

#[actix_web::test]
async fn without_a_config_file_a_reload_changes_nothing() {
    let upstream = upstream().await;
    let issuer = format!("{}/t1", upstream.base_url);
    let gw = TestGateway::start_with_admin(&["--issuer", &issuer, "--upstream", &issuer]).await;
    assert_eq!(get(&gw.url(&route("t1"))).await.status, 200);
    gw.reload();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let docs = get(&gw.admin("/documents")).await.json();
    assert_eq!(docs["generation"], 0);
    let r = get(&gw.url(&route("t1"))).await;
    assert_eq!(r.status, 200);
    assert!(r.cache_status().contains("; hit"));
    assert_eq!(upstream.requests(), 1);
}

#[actix_web::test]
async fn every_request_is_answered_while_reloads_run_under_load() {
    let upstream = upstream().await;
    let a = tenants(&upstream, &[("t1", ""), ("t2", "")]);
    let b = tenants(&upstream, &[("t1", ""), ("t2", ""), ("t5", "")]);
    let (file, gw) = gateway_on(&a, &[]).await;
    wait_all_fresh(&gw, 2).await;

    const RELOADS: u64 = 20;
    const CLIENTS: usize = 4;
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let url = gw.url(&route("t1"));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (done, answered, url) = (done.clone(), answered.clone(), url.clone());
            actix_web::rt::spawn(async move {
                // Bounded by count as well as by the reloads finishing.
                let client = client();
                let mut failures = Vec::new();
                for _ in 0..20_000 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    match client.get(&url).send().await {
                        Ok(mut res) => {
                            let status = res.status().as_u16();
                            let body = res.body().await.map(|b| b.len()).unwrap_or(0);
                            if status != 200 || body == 0 {
                                failures.push(format!("status {status}, {body} bytes"));
                            }
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();

    let started = Instant::now();
    for n in 1..=RELOADS {
        // Requests on every generation, not just before and after.
        let before = answered.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while answered.load(Ordering::Relaxed) < before + 2 * CLIENTS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        file.write(if n % 2 == 1 { &b } else { &a });
        gw.reload();
        wait_generation(&gw, n).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during {RELOADS} reloads in {:?}: {:?}",
        failures.len(),
        answered.load(Ordering::Relaxed),
        started.elapsed(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered.load(Ordering::Relaxed) >= 2 * CLIENTS * RELOADS as usize);
    assert_eq!(
        upstream.requests_for(&route("t1")),
        1,
        "t1 never changed: fetched once in all those generations"
    );
}

#[actix_web::test]
async fn an_unchanged_template_keeps_its_tenants_and_a_removed_one_stops_serving() {
    let upstream = upstream().await;
    let template = format!(
        "[[authorization_server]]\nissuer = \"{}/realms/{{tenant}}\"\n",
        upstream.base_url
    );
    let (file, gw) = gateway_on(
        &(template.clone() + &tenants(&upstream, &[("t1", "")])),
        &[],
    )
    .await;
    let acme = format!("{AS_PATH}/realms/acme");
    assert_eq!(get(&gw.url(&acme)).await.status, 200);

    // Another document added: the template and its tenants stay.
    file.write(&(template.clone() + &tenants(&upstream, &[("t1", ""), ("t2", "")])));
    gw.reload();
    wait_generation(&gw, 1).await;
    let r = get(&gw.url(&acme)).await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    assert_eq!(upstream.requests_for(&acme), 1);

    // The template removed: its routes answer 404, its series are gone.
    file.write(&tenants(&upstream, &[("t1", ""), ("t2", "")]));
    gw.reload();
    wait_generation(&gw, 2).await;
    let r = get(&gw.url(&acme)).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        upstream.requests_for(&acme),
        1,
        "no upstream request for it"
    );
    let text = metrics_without(&gw, "realms/{tenant}").await;
    assert!(!text.contains("realms/{tenant}"), "{text}");
}

#[actix_web::test]
async fn a_reload_during_an_outage_keeps_serving_changed_documents_and_templates() {
    let upstream = upstream().await;
    let template = |max: u32| {
        format!(
            "[[authorization_server]]\nissuer = \"{}/realms/{{tenant}}\"\nmax_tenants = {max}\n",
            upstream.base_url
        )
    };
    let (file, gw) = gateway_on(
        &(template(50) + &tenants(&upstream, &[("t1", ""), ("t2", "")])),
        &[
            "--retry-backoff-min",
            "200ms",
            "--retry-backoff-max",
            "400ms",
        ],
    )
    .await;
    wait_all_fresh(&gw, 2).await;
    let acme = format!("{AS_PATH}/realms/acme");
    let paths = [route("t1"), route("t2"), acme.clone()];
    let mut bodies = Vec::new();
    for p in &paths {
        let r = get(&gw.url(p)).await;
        assert_eq!(r.status, 200, "{p}");
        bodies.push(r.body);
    }

    // The authorization server goes down; the operator changes t2's TTL and
    // the template's max_tenants, and reloads.
    upstream.set(Behaviour::status(503));
    file.write(&(template(60) + &tenants(&upstream, &[("t1", ""), ("t2", "ttl = \"7m\"")])));
    gw.reload();
    wait_generation(&gw, 1).await;
    // Right after the swap, and after the changed ones' refetch has failed:
    // every document still serves its last good copy.
    for round in 0..2 {
        for (p, body) in paths.iter().zip(&bodies) {
            let r = get(&gw.url(p)).await;
            assert_eq!(
                r.status,
                200,
                "round {round}, {p}: {} {}",
                r.cache_status(),
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(&r.body, body, "{p}: the same bytes");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(
        upstream.requests_for(&route("t2")) >= 2,
        "the changed document was fetched again"
    );
}

#[actix_web::test]
async fn an_added_document_that_cannot_be_fetched_leaves_a_ready_gateway_ready() {
    let upstream = upstream().await;
    let (file, gw) = gateway_on(&tenants(&upstream, &[("t1", "")]), &[]).await;
    wait_all_fresh(&gw, 1).await;
    assert_eq!(get(&gw.url("/readyz")).await.status, 200);

    // The same file reaches every replica: a new issuer nobody can reach
    // (port 1 refuses connections) must not take them all out of their
    // load balancer.
    let broken = "[[authorization_server]]\nissuer = \"http://127.0.0.1:1/broken\"\n";
    file.write(&format!("{}{broken}", tenants(&upstream, &[("t1", "")])));
    gw.reload();
    wait_generation(&gw, 1).await;
    // Its first fetch has failed.
    poll_until(
        &gw.admin("/documents?state=error"),
        Duration::from_secs(10),
        |r| {
            r.json()["documents"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
        },
    )
    .await;
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["pending_documents"], 1);
    assert_eq!(get(&gw.url(&route("t1"))).await.status, 200);
    let broken = get(&gw.url(&route("broken"))).await;
    assert!(broken.status >= 500, "{}", broken.status);
    broken.assert_json_error_body();
}

#[actix_web::test]
async fn a_fetch_running_when_its_document_is_removed_brings_back_no_file() {
    let upstream = upstream().await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let saved = || {
        files_under(state.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".json-doc"))
            .count()
    };
    let (file, gw) = gateway_on(
        &tenants(&upstream, &[("t1", ""), ("t2", "")]),
        &["--state-dir", &state_dir],
    )
    .await;
    wait_all_fresh(&gw, 2).await;
    poll_until(&gw.url("/healthz"), Duration::from_secs(5), |_| {
        saved() == 2
    })
    .await;

    // A refresh of t2 is in flight, held by the upstream, when the reload
    // removes t2.
    upstream.hold();
    let before = upstream.requests();
    let r = send(
        "POST",
        &gw.admin("/refresh?document=oauth-authorization-server/t2"),
        &[],
    )
    .await;
    assert_eq!(r.status, 202);
    upstream
        .wait_for_requests(before + 1, Duration::from_secs(5))
        .await;
    file.write(&tenants(&upstream, &[("t1", "")]));
    gw.reload();
    wait_generation(&gw, 1).await;
    poll_until(&gw.url("/healthz"), Duration::from_secs(5), |_| {
        saved() == 1
    })
    .await;

    // The held fetch completes with a valid document: it is neither
    // served nor saved again.
    upstream.release();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert_eq!(saved(), 1, "the removed document's file came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.in_flight(), 0, "the held fetch completed");
    assert_eq!(get(&gw.url(&route("t2"))).await.status, 404);
}

/// A reload reads, parses and checks the config file on a blocking thread,
/// not on a runtime thread. The file is made a FIFO, so reading it blocks
/// until the test writes it: the test's runtime (one thread, which also
/// runs the gateway's reload task) must keep running timers meanwhile. A
/// reload that read the file on the runtime thread would block it until
/// the writer gave up waiting.
#[actix_web::test]
async fn a_reload_reads_and_parses_the_file_off_the_runtime_thread() {
    let upstream = upstream().await;
    let (file, gw) = gateway_on(&tenants(&upstream, &[("t1", "")]), &[]).await;
    wait_generation(&gw, 0).await;
    let path = file.path();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success());

    let runtime_ran = Arc::new(AtomicBool::new(false));
    let text = tenants(&upstream, &[("t1", ""), ("t2", "")]);
    let writer = std::thread::spawn({
        let runtime_ran = runtime_ran.clone();
        let path = path.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !runtime_ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let saw = runtime_ran.load(Ordering::SeqCst);
            // Opening the FIFO waits for the reload to open it, then the
            // reload reads the text.
            std::fs::write(&path, text).unwrap();
            saw
        }
    });
    gw.reload();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime_ran.store(true, Ordering::SeqCst);
    let saw = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    assert!(
        saw,
        "the runtime thread was blocked while the reload read the config file"
    );
    let docs = wait_generation(&gw, 1).await;
    assert!(docs.to_string().contains("t2"), "{docs}");
}
