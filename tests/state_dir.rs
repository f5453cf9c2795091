//! `--state-dir` on the real binary: the documents it fetched survive a
//! SIGKILL and are served again after a restart with the upstream down;
//! state files that are damaged or belong to another issuer are ignored
//! (logged, never served); an unusable directory is a warning, not a
//! reason to stop serving. Template tenants are saved and restored too, and
//! a tenant gone upstream loses its file.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::process::Process;
use support::*;

/// Waits (bounded) until `dir` holds at least one non-empty file whose
/// size has stopped changing, and returns the files.
async fn wait_for_state_files(dir: &Path, proc: &Process) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last: Option<Vec<(PathBuf, u64)>> = None;
    loop {
        let now: Vec<(PathBuf, u64)> = files_under(dir)
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        if now.iter().any(|(_, len)| *len > 0) && last.as_ref() == Some(&now) {
            return now.into_iter().map(|(p, _)| p).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no state file written under {}: {now:?}\n{}",
            dir.display(),
            proc.text()
        );
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upstream serving its document, and the gateway arguments in front of
/// it (quick retries so a down upstream fails fast).
async fn upstream() -> (Upstream, String) {
    let up = Upstream::start(Behaviour::status(500)).await;
    let body = document(&up.base_url);
    up.set(Behaviour::json(body.clone()));
    (up, body)
}

/// Quick retries, so that a down upstream fails fast.
const QUICK_RETRIES: [&str; 6] = [
    "--retry-backoff-min",
    "200ms",
    "--retry-backoff-max",
    "400ms",
    "--upstream-timeout",
    "2s",
];

fn gateway_args<'a>(up: &'a Upstream, state_dir: Option<&'a str>) -> Vec<&'a str> {
    let mut v = vec![
        "--upstream",
        up.base_url.as_str(),
        "--issuer",
        up.base_url.as_str(),
    ];
    v.extend_from_slice(&QUICK_RETRIES);
    if let Some(d) = state_dir {
        v.extend_from_slice(&["--state-dir", d]);
    }
    v
}

#[track_caller]
fn assert_json_error(r: &Reply, proc: &Process) {
    assert!(
        (500..600).contains(&r.status),
        "expected a 5xx, got {} {} ({}):\n{}",
        r.status,
        String::from_utf8_lossy(&r.body),
        r.cache_status(),
        proc.text()
    );
    r.assert_json_error_body();
}

/// Run 1: warm the gateway with `--state-dir`, wait for its state file,
/// take the upstream down and SIGKILL the process. Returns the state files.
async fn warm_and_kill(up: &Upstream, body: &str, dir: &str) -> Vec<PathBuf> {
    let proc = Process::start(&gateway_args(up, Some(dir)), &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert_eq!(r.body, body.as_bytes());
    let files = wait_for_state_files(Path::new(dir), &proc).await;
    up.set(Behaviour::status(503));
    proc.kill();
    files
}

#[actix_web::test]
async fn a_document_survives_sigkill_and_is_served_with_the_upstream_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (up, body) = upstream().await;
    let fetched = Instant::now();
    let files = warm_and_kill(&up, &body, dir).await;
    let before = up.requests();
    // Held for a while, so the restored document has an age to account for.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let proc = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_eq!(
        r.status,
        200,
        "{} {}\n{}",
        String::from_utf8_lossy(&r.body),
        r.cache_status(),
        proc.text()
    );
    assert_eq!(r.body, body.as_bytes(), "byte-identical after the restart");
    let cs = r.cache_status();
    assert!(
        cs.contains("; hit") || cs.contains("fwd=stale"),
        "served from the restored cache: {cs}"
    );
    assert!(!cs.contains("fwd=miss"), "{cs}");
    // Its age counts from the original fetch, not from the restart.
    let held = fetched.elapsed().as_secs();
    assert!(
        r.age() + 1 >= held && r.age() >= 1,
        "Age {} after {held} s",
        r.age()
    );
    assert!(r.ttl() <= 299, "{cs}");
    proc.wait_for_log("restored", Duration::from_secs(5)).await;
    // The upstream answered 503 to anything the restarted gateway asked:
    // the 200 can only have come from the state file.
    assert!(up.paths()[before..].iter().all(|p| p == AS_PATH));
    assert!(files.iter().all(|f| f.starts_with(dir)));
}

#[actix_web::test]
async fn the_upstreams_cache_control_survives_a_restart_for_its_304s() {
    // RFC 9111 §4.3.4: a 304 without Cache-Control keeps the stored one.
    // After a restart too: a restored document renewed by a bare 304 keeps
    // the upstream's 30 s, not --ttl (300 s).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (up, body) = upstream().await;
    up.set_etag(Some("\"v1\""));
    up.set_headers(&[("cache-control", "max-age=30")]);
    let proc = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert!(
        (29..=30).contains(&r.max_age()),
        "{:?}",
        r.header("cache-control")
    );
    wait_for_state_files(Path::new(dir), &proc).await;
    proc.kill();

    // From now on the upstream's 304s carry the ETag only.
    up.set_headers(&[]);
    // Aged, so the renewed copy (Age 0) is told apart from the restored one.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let proc = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    // The restored copy is revalidated at once.
    let r = poll_until(&proc.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200 && r.age() == 0
    })
    .await;
    assert!(
        up.not_modified_sent() >= 1,
        "renewed by a 304:\n{}",
        proc.text()
    );
    assert_eq!(r.body, body.as_bytes());
    assert!(
        r.max_age() <= 30 && r.ttl() <= 30,
        "the saved Cache-Control still counts: {:?}, {}",
        r.header("cache-control"),
        r.cache_status()
    );
    assert!(r.header("etag").is_some());
}

#[actix_web::test]
async fn a_state_file_past_ttl_and_max_stale_is_dropped_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (up, body) = upstream().await;
    let mut args = gateway_args(&up, Some(dir));
    args.extend_from_slice(&["--ttl", "1s", "--max-stale", "1s"]);
    let proc = Process::start(&args, &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert_eq!(r.body, body.as_bytes());
    wait_for_state_files(Path::new(dir), &proc).await;
    up.set(Behaviour::status(503));
    proc.kill();
    // Past its 1 s of freshness and 1 s of max-stale (with a margin).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let proc = Process::start(&args, &[]).await;
    proc.wait_for_log("past its freshness", Duration::from_secs(5))
        .await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_json_error(&r, &proc);
}

#[actix_web::test]
async fn a_second_gateway_on_the_same_state_dir_serves_from_memory_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (up, body) = upstream().await;
    let first = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    assert_eq!(
        get(&first.url(AS_PATH)).await.status,
        200,
        "{}",
        first.text()
    );
    let second = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    second
        .wait_for_log("in use by another process", Duration::from_secs(5))
        .await;
    let r = get(&second.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", second.text());
    assert_eq!(r.body, body.as_bytes(), "served, from memory");
    assert_eq!(state_saves_ok(&second).await, None, "no state dir in use");
    // The holder goes; the directory is free for the next process.
    first.kill();
    second.kill();
    let third = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    assert_eq!(get(&third.url(AS_PATH)).await.status, 200);
    wait_for_state_files(Path::new(dir), &third).await;
    assert!(
        !third.text().contains("in use by another process"),
        "{}",
        third.text()
    );
    assert!(
        state_saves_ok(&third).await >= Some(1.0),
        "{}",
        third.text()
    );
}

/// `metadata_gateway_state_writes_total{operation="save",outcome="ok"}`
/// from the gateway's `/metrics` (`None`: not exported).
async fn state_saves_ok(proc: &Process) -> Option<f64> {
    let r = get(&proc.url("/metrics")).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find(|l| {
            l.starts_with("metadata_gateway_state_writes_total{")
                && l.contains("operation=\"save\"")
                && l.contains("outcome=\"ok\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix_web::test]
async fn a_damaged_state_file_is_ignored_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir_s = dir.to_str().unwrap().to_string();
    let (up, body) = upstream().await;
    let files = warm_and_kill(&up, &body, &dir_s).await;
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();

    let damages: [(&str, Damage); 3] = [
        ("truncated", |b| b[..b.len() / 2].to_vec()),
        ("garbage", |_| b"\x00\xffnot a state file at all\n".to_vec()),
        ("one byte flipped in the document", |b| {
            // A valid-looking file whose document bytes changed: the
            // integrity check (or the issuer check) must catch it.
            let mut b = b.to_vec();
            let at = b
                .windows(b"user:read".len())
                .position(|w| w == b"user:read")
                .map(|i| i + 5)
                .unwrap_or(b.len() / 2);
            b[at] ^= 0x01;
            b
        }),
    ];
    for (what, damage) in damages {
        for (f, orig) in files.iter().zip(&originals) {
            std::fs::write(f, damage(orig)).unwrap();
        }
        // The state dir comes from the environment this time.
        let mut proc = Process::start(
            &gateway_args(&up, None),
            &[("GATEWAY_STATE_DIR", dir_s.as_str())],
        )
        .await;
        let r = get(&proc.url(AS_PATH)).await;
        assert!(
            r.body != body.as_bytes(),
            "{what}: the damaged file was served"
        );
        if r.status == 200 {
            panic!(
                "{what}: served 200 {} from a damaged file:\n{}",
                String::from_utf8_lossy(&r.body),
                proc.text()
            );
        }
        assert_json_error(&r, &proc);
        proc.wait_for_log("state file ignored", Duration::from_secs(5))
            .await;
        assert!(proc.running(), "{what}: the gateway stays up");
        assert_eq!(get(&proc.url("/healthz")).await.status, 200);
        proc.kill();
    }
}

#[actix_web::test]
async fn an_unusable_state_dir_is_a_warning_and_the_gateway_serves() {
    let tmp = tempfile::tempdir().unwrap();
    // A path under a regular file: no directory can be made there, root
    // or not.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"a regular file").unwrap();
    let dir = file.join("sub");
    let dir = dir.to_str().unwrap();
    let (up, body) = upstream().await;
    let mut proc = Process::start(&gateway_args(&up, Some(dir)), &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    assert_eq!(r.body, body.as_bytes());
    // Saving fails too; the gateway keeps serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&proc.url(AS_PATH)).await.status, 200);
    assert!(proc.running(), "{}", proc.text());
    let text = proc.text();
    let warning = text.lines().find(|l| {
        let lower = l.to_ascii_lowercase();
        lower.contains("warn")
            && (l.contains(dir)
                || lower.contains("state dir")
                || lower.contains("state-dir")
                || lower.contains("state_dir"))
    });
    assert!(warning.is_some(), "no warning about the state dir:\n{text}");
}

/// `metadata_gateway_state_writes_total{operation="save",outcome}` summed
/// over the outcomes other than `ok`.
async fn state_saves_failed(proc: &Process) -> f64 {
    let r = get(&proc.url("/metrics")).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .filter(|l| {
            l.starts_with("metadata_gateway_state_writes_total{")
                && l.contains("operation=\"save\"")
                && !l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_web::test]
async fn a_full_disk_keeps_the_saved_file_whole_and_the_gateway_serving() {
    // A disk that fills up mid-write: the file size limit (`ulimit -f`,
    // 512-byte blocks in POSIX sh; SIGXFSZ ignored so a write past it
    // fails with EFBIG instead of killing the process) lets the start-up
    // probe through and cuts every larger write short, root or not.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (up, small) = upstream().await;
    // Run 1, no limit: the small document is saved.
    let saved = warm_and_kill(&up, &small, dir).await;
    let saved_bytes: Vec<Vec<u8>> = saved.iter().map(|f| std::fs::read(f).unwrap()).collect();

    // Run 2, the upstream now serves a document far larger than the limit.
    let large = {
        let mut doc: serde_json::Value = serde_json::from_str(&small).unwrap();
        doc["service_documentation"] = format!("{}/docs/{}", up.base_url, "x".repeat(4096)).into();
        serde_json::to_string(&doc).unwrap()
    };
    up.set(Behaviour::json(large.clone()));
    let args = gateway_args(&up, Some(dir));
    let proc = Process::start_after("trap '' XFSZ\nulimit -f 1", &args, &[]).await;
    // The restored small document is served at once, then replaced by the
    // fetched large one, which cannot be saved.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&proc.url(AS_PATH)).await;
        assert_eq!(r.status, 200, "{}", proc.text());
        assert!(r.body == small.as_bytes() || r.body == large.as_bytes());
        if r.body == large.as_bytes() && state_saves_failed(&proc).await >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed save:\n{}",
            proc.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = proc.text();
    assert!(
        text.lines().any(|l| l.contains("WARN") && l.contains(dir)),
        "the failed save is a warning naming the directory:\n{text}"
    );
    // The file saved by run 1 is whole (the failed save never touched
    // it) and no partial temporary file is left.
    let now = files_under(Path::new(dir));
    assert_eq!(now, saved, "same files, no temporary left:\n{text}");
    for (f, bytes) in saved.iter().zip(&saved_bytes) {
        assert_eq!(
            &std::fs::read(f).unwrap(),
            bytes,
            "{} unchanged",
            f.display()
        );
    }
    // Serving goes on from memory.
    for _ in 0..5 {
        let r = get(&proc.url(AS_PATH)).await;
        assert_eq!((r.status, &r.body[..]), (200, large.as_bytes()));
    }
    let mut proc = proc;
    assert!(proc.running());
    proc.kill();
}

#[actix_web::test]
async fn a_state_file_of_another_issuer_is_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    // Run 1: issuer X, saved.
    let (x, x_body) = upstream().await;
    let after_x = warm_and_kill(&x, &x_body, dir).await;

    // Run 2: the same route (issuer without a path), another issuer Y,
    // whose upstream is down.
    let (y, y_body) = upstream().await;
    y.set(Behaviour::status(503));
    let proc = Process::start(&gateway_args(&y, Some(dir)), &[]).await;
    let r = get(&proc.url(AS_PATH)).await;
    assert!(
        r.body != x_body.as_bytes(),
        "issuer X's document served for Y"
    );
    assert_json_error(&r, &proc);

    // Once Y answers, Y's document is served and saved.
    y.set(Behaviour::json(y_body.clone()));
    let r = poll_until(&proc.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.body, y_body.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(5);
    let after_y = loop {
        let now = files_under(Path::new(dir));
        let changed = now != after_x
            || now
                .iter()
                .any(|f| std::fs::read(f).is_ok_and(|b| !contains(&b, x.base_url.as_bytes())));
        if changed || Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if after_y == after_x {
        // The same file name serves both issuers: run 2 found X's file at
        // start and must have said why it did not use it.
        assert!(
            proc.text().contains("state file ignored"),
            "X's file was at Y's place and nothing says it was ignored:\n{}",
            proc.text()
        );
    }
}

/// Turns a state file's bytes into damaged ones.
type Damage = fn(&[u8]) -> Vec<u8>;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A scratch directory, an upstream serving every tenant under its root,
/// and the issuer template `<upstream>/realms/{tenant}` in front of it.
async fn tenant_upstream() -> (tempfile::TempDir, Upstream, String) {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::start(Behaviour::status(500)).await;
    up.set(Behaviour::tenants(&up.base_url, Duration::ZERO));
    let template = format!("{}/realms/{{tenant}}", up.base_url);
    (tmp, up, template)
}

/// A gateway with the issuer template `<upstream>/realms/{tenant}`.
fn template_args<'a>(template: &'a str, dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--issuer",
        template,
        "--upstream",
        template,
        "--state-dir",
        dir,
    ];
    v.extend_from_slice(&QUICK_RETRIES);
    v.extend_from_slice(extra);
    v
}

/// Waits (bounded) until `dir` holds exactly `n` state files (complete
/// ones: a save in progress is a temporary file under another name).
async fn wait_for_file_count(dir: &Path, n: usize, proc: &Process) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files: Vec<PathBuf> = files_under(dir)
            .into_iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json-doc") && !name.starts_with('.')
            })
            .collect();
        if files.len() == n {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} state files under {}, found {files:?}\n{}",
            dir.display(),
            proc.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn template_tenants_survive_sigkill_and_are_served_with_the_upstream_down() {
    let (tmp, up, template) = tenant_upstream().await;
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let route = |t: &str| format!("{AS_PATH}/realms/{t}");
    let want = |t: &str| document(&format!("{}/realms/{t}", up.base_url));

    let proc = Process::start(&template_args(&template, dir, &[]), &[]).await;
    for t in ["acme", "globex"] {
        let r = get(&proc.url(&route(t))).await;
        assert_eq!(r.status, 200, "{}", proc.text());
    }
    wait_for_file_count(Path::new(dir), 2, &proc).await;
    up.set(Behaviour::status(503));
    proc.kill();

    let proc = Process::start(&template_args(&template, dir, &[]), &[]).await;
    proc.wait_for_log(
        "documents restored from the state dir",
        Duration::from_secs(5),
    )
    .await;
    for t in ["acme", "globex"] {
        let r = get(&proc.url(&route(t))).await;
        assert_eq!(r.status, 200, "{t}: {}\n{}", r.cache_status(), proc.text());
        assert_eq!(r.body, want(t).as_bytes(), "{t}: the saved bytes");
    }
    // A tenant never fetched has nothing saved: the upstream's outage shows.
    let r = get(&proc.url(&route("initech"))).await;
    assert_json_error(&r, &proc);
    assert!(
        proc.text().contains("restored=2"),
        "both tenants restored:\n{}",
        proc.text()
    );
}

#[actix_web::test]
async fn a_tenant_gone_upstream_loses_its_state_file() {
    let (tmp, up, template) = tenant_upstream().await;
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let path = format!("{AS_PATH}/realms/acme");
    let short = ["--ttl", "1s", "--min-ttl", "1s", "--max-stale", "0s"];
    let proc = Process::start(&template_args(&template, dir, &short), &[]).await;
    assert_eq!(get(&proc.url(&path)).await.status, 200, "{}", proc.text());
    wait_for_file_count(Path::new(dir), 1, &proc).await;

    // The tenant is deleted upstream; once the cached copy runs out, the
    // next request learns it and the saved copy goes too.
    up.set(Behaviour::status(404));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&proc.url(&path)).await.status, 404, "{}", proc.text());
    wait_for_file_count(Path::new(dir), 0, &proc).await;
}

#[actix_web::test]
async fn files_of_documents_removed_while_stopped_are_deleted_at_start_up() {
    let (tmp, up, template) = tenant_upstream().await;
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let proc = Process::start(&template_args(&template, dir, &[]), &[]).await;
    for t in ["acme", "globex"] {
        let r = get(&proc.url(&format!("{AS_PATH}/realms/{t}"))).await;
        assert_eq!(r.status, 200, "{}", proc.text());
    }
    wait_for_file_count(Path::new(dir), 2, &proc).await;
    proc.kill();

    // Restarted with one configured issuer instead of the template: the
    // two tenant files belong to nothing configured any more.
    let issuer = format!("{}/realms/acme", up.base_url);
    let mut args = vec!["--issuer", issuer.as_str(), "--upstream", issuer.as_str()];
    args.extend_from_slice(&["--state-dir", dir]);
    args.extend_from_slice(&QUICK_RETRIES);
    let proc = Process::start(&args, &[]).await;
    proc.wait_for_log(
        "removed the state files of documents no longer configured",
        Duration::from_secs(5),
    )
    .await;
    assert!(proc.text().contains("removed=2"), "{}", proc.text());
    let r = get(&proc.url(&format!("{AS_PATH}/realms/acme"))).await;
    assert_eq!(r.status, 200, "{}", proc.text());
    // Only the configured document's own file is left.
    wait_for_file_count(Path::new(dir), 1, &proc).await;
}
