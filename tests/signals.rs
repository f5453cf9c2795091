//! The real binary under SIGTERM and SIGINT: it stops accepting, lets the
//! request in flight finish, stops its refresher and exits 0, within the
//! bound set by --shutdown-timeout. SIGHUP reloads the config file and the
//! listener certificate (`--tls-cert`/`--tls-key`). The
//! admin listener (`--admin-listen`, here through its environment variable)
//! serves operations on its own port, and the public port does not.
//!
//! The signals are sent with `/bin/kill` (procps), so the test needs no
//! `unsafe` and no extra crate.

mod support;

use std::time::{Duration, Instant};

use support::process::Process;
use support::*;

/// The binary with `--demo` on free ports, plus `extra` flags and `envs`:
/// the process, its listen address and the demo issuer.
fn spawn_demo(extra: &[&str], envs: &[(&str, &str)]) -> (Process, String, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let demo = format!("127.0.0.1:{}", free_port());
    let issuer = format!("http://{demo}");
    let mut args = vec![
        "--demo",
        "--demo-listen",
        &demo,
        "--upstream",
        &issuer,
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    (Process::spawn(&args, envs), listen, issuer)
}

async fn demo_stops_cleanly_on(signal: &str) {
    let (mut proc, listen, issuer) =
        spawn_demo(&["--workers", "2", "--shutdown-timeout", "5s"], &[]);
    let base = format!("http://{listen}");
    proc.wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(20))
        .await;
    let r = get(&format!("{base}{AS_PATH}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["issuer"], issuer.as_str());

    proc.signal(signal);
    let (status, output) = proc.wait(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{output}"
    );
    assert!(output.contains("shutting down"), "{output}");
    // Logged by `run` after the HTTP server, the refresher and the demo
    // server have all stopped.
    assert!(output.contains("gateway stopped"), "{output}");
    // The listener is closed.
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "{listen} still accepts connections"
    );
}

#[actix_web::test]
async fn sigterm_stops_the_demo_gateway_with_exit_code_0() {
    demo_stops_cleanly_on("TERM").await;
}

#[actix_web::test]
async fn sigint_stops_the_demo_gateway_with_exit_code_0() {
    demo_stops_cleanly_on("INT").await;
}

/// What a client got: status and body, or the transport error.
type Answer = Result<(u16, Vec<u8>), String>;

async fn fetch(url: String) -> Answer {
    let mut res = client().get(&url).send().await.map_err(|e| e.to_string())?;
    let body = res.body().await.map_err(|e| e.to_string())?;
    Ok((res.status().as_u16(), body.to_vec()))
}

/// Starts the binary in front of a held upstream and a client request
/// waiting on the cold fetch; returns both.
async fn gateway_with_request_in_flight(
    signal_timeout: &str,
) -> (Process, Upstream, String, tokio::task::JoinHandle<Answer>) {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    upstream.hold();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proc = Process::spawn(
        &[
            "--upstream",
            &upstream.base_url,
            "--listen",
            &listen,
            "--workers",
            "1",
            "--upstream-timeout",
            "60s",
            "--shutdown-timeout",
            signal_timeout,
        ],
        &[],
    );
    let base = format!("http://{listen}");
    // The refresher's start-up fetch is now held by the upstream.
    upstream.wait_for_requests(1, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(proc.running(), "exited early:\n{}", proc.text());
        assert!(
            Instant::now() < deadline,
            "never listened:\n{}",
            proc.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client asks for the document: it waits on the held fetch.
    let url = format!("{base}{AS_PATH}");
    let request = actix_web::rt::spawn(fetch(url));
    (proc, upstream, base, request)
}

#[actix_web::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let (mut proc, upstream, _base, request) = gateway_with_request_in_flight("20s").await;
    // Give the request time to reach the gateway and join the fetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request.is_finished(),
        "the request did not wait on the fetch"
    );

    proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still draining: the request has not been answered yet.
    assert!(
        proc.running(),
        "exited with a request in flight:\n{}",
        proc.text()
    );
    assert!(!request.is_finished());

    upstream.release();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the in-flight request was answered in time")
        .expect("request task")
        .expect("the in-flight request got a response");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, document(&upstream.base_url).as_bytes());
    let (status, output) = proc.wait(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{output}"
    );
    assert!(output.contains("gateway stopped"), "{output}");
}

#[actix_web::test]
async fn a_request_that_outlives_the_shutdown_timeout_does_not_block_exit() {
    let (proc, upstream, _base, request) = gateway_with_request_in_flight("1s").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    proc.signal("TERM");
    // The upstream never answers; the gateway gives up after 1s.
    let (status, output) = proc.wait(Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{output}"
    );
    assert!(output.contains("gateway stopped"), "{output}");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the 1s drain bound"
    );
    // The abandoned client sees its connection closed, not an answer.
    let answer = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the client saw the connection end")
        .expect("request task");
    assert!(
        answer.is_err(),
        "got an answer after the forced stop: {answer:?}"
    );
    upstream.release();
}

#[actix_web::test]
async fn sighup_without_a_config_file_is_a_logged_no_op() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proc = Process::spawn(
        &[
            "--upstream",
            &upstream.base_url,
            "--listen",
            &listen,
            "--workers",
            "1",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    proc.wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(20))
        .await;
    proc.signal("HUP");
    proc.wait_for_log("nothing to reload", Duration::from_secs(10))
        .await;
    assert!(proc.running(), "SIGHUP must not stop the gateway");
    let r = get(&format!("{base}{AS_PATH}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.requests(), 1, "nothing fetched again");
}

#[actix_web::test]
async fn sighup_reloads_the_config_file_and_refuses_a_bad_one() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let table = |t: &str| {
        format!(
            "[[authorization_server]]\nissuer = \"{}/{t}\"\n",
            upstream.base_url
        )
    };
    std::fs::write(&path, table("t1")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proc = Process::spawn(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            &listen,
            "--workers",
            "1",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    proc.wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(20))
        .await;

    let resource = format!(
        "[[protected_resource]]\nresource = \"https://mcp.example.com/mcp\"\n\
         authorization_servers = [\"{}/t1\"]\n",
        upstream.base_url
    );
    std::fs::write(&path, table("t1") + &table("t2") + &resource).unwrap();
    proc.signal("HUP");
    let text = proc
        .wait_for_log("config reloaded", Duration::from_secs(10))
        .await;
    assert!(
        text.contains(
            "2 added (oauth-authorization-server/t2, oauth-protected-resource/mcp), \
             0 removed, 0 changed, 1 unchanged, 1 protected resources"
        ),
        "{text}"
    );
    proc.wait_status(&format!("{base}{AS_PATH}/t2"), 200, Duration::from_secs(10))
        .await;

    // A bad file: logged with file, line and column; the old config serves.
    std::fs::write(&path, table("t1") + "ttl = \"soon\"\n").unwrap();
    proc.signal("HUP");
    let text = proc
        .wait_for_log("config reload refused", Duration::from_secs(10))
        .await;
    let line = text
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap_or_default();
    assert!(
        line.contains(path.to_str().unwrap()),
        "names the file: {line}"
    );
    assert!(line.contains("ttl"), "names the key: {line}");
    assert!(line.contains("line 3"), "names the line: {line}");
    assert!(proc.running());
    let r = get(&format!("{base}{AS_PATH}/t2")).await;
    assert_eq!(r.status, 200, "the previous configuration keeps serving");
    assert_eq!(upstream.requests_for(&format!("{AS_PATH}/t1")), 1);
}

/// SIGHUP re-reads --tls-cert/--tls-key: a new connection gets the new
/// certificate (no file watch here: `--tls-reload-interval 0s`); a
/// mismatched pair is refused with the reason and the previous one keeps
/// serving. Without a config file, SIGHUP is a certificate reload only.
#[actix_web::test]
async fn sighup_reloads_the_listener_certificate_and_refuses_a_mismatched_pair() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let ca = support::pki::TestCa::new();
    let first = ca.leaf();
    ca.install(&first.cert_pem, &first.key_pem);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--upstream".to_string(),
        upstream.base_url.clone(),
        "--listen".into(),
        listen.clone(),
        "--workers".into(),
        "1".into(),
        "--tls-reload-interval".into(),
        "0s".into(),
    ];
    args.extend(ca.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Process::spawn(&args, &[]);
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        assert!(proc.running(), "exited:\n{}", proc.text());
        if let Ok(leaf) = ca.served_leaf(addr).await {
            break leaf;
        }
        assert!(
            Instant::now() < deadline,
            "never listened:\n{}",
            proc.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(served, first.der);

    let second = ca.leaf();
    ca.install(&second.cert_pem, &second.key_pem);
    proc.signal("HUP");
    proc.wait_for_log("listener certificate reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(ca.served_leaf(addr).await.unwrap(), second.der);

    let third = ca.leaf();
    ca.install(&third.cert_pem, &second.key_pem);
    proc.signal("HUP");
    let text = proc
        .wait_for_log("certificate reload refused", Duration::from_secs(10))
        .await;
    let line = text
        .lines()
        .find(|l| l.contains("certificate reload refused"))
        .unwrap_or_default();
    assert!(line.contains("does not belong"), "gives the reason: {line}");
    assert!(proc.running());
    assert_eq!(
        ca.served_leaf(addr).await.unwrap(),
        second.der,
        "the previous pair keeps serving"
    );
    assert!(!text.contains("nothing to reload"), "{text}");
}

#[actix_web::test]
async fn admin_listen_serves_operations_on_its_own_port_only() {
    let admin = format!("127.0.0.1:{}", free_port());
    // The environment form of the flag, as the systemd unit and the
    // Kubernetes ConfigMap set it.
    let (mut proc, listen, _) = spawn_demo(
        &["--workers", "1"],
        &[("GATEWAY_ADMIN_LISTEN", admin.as_str())],
    );
    let admin_base = format!("http://{admin}");
    proc.wait_status(
        &format!("{admin_base}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    let docs = get(&format!("{admin_base}/documents")).await;
    assert_eq!(docs.status, 200);
    assert_eq!(docs.json()["documents"][0]["state"], "fresh");
    assert_eq!(get(&format!("{admin_base}/metrics")).await.status, 200);
    // The public listener serves the metadata, never the admin paths.
    let public = format!("http://{listen}");
    assert_eq!(get(&format!("{public}{AS_PATH}")).await.status, 200);
    assert_eq!(get(&format!("{public}/documents")).await.status, 404);
    assert_eq!(
        send("POST", &format!("{public}/refresh"), &[]).await.status,
        404
    );
    proc.signal("TERM");
    let (status, output) = proc.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{output}");
}
