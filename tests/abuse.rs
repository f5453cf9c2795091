//! Abusive clients on loopback: hundreds of idle and byte-trickling
//! connections, a slow second request on a keep-alive connection, oversized
//! heads, a full connection table and request bodies. The gateway must keep
//! answering a normal client, close what misbehaves within its timeouts,
//! and survive. Every loop here is bounded in count and time.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// How a raw connection ended while the test watched it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed it; `head` is what it sent first (maybe nothing).
    Closed { head: String },
    /// Still open when the test stopped watching.
    Open,
}

/// Reads until the server closes the connection or `limit` passes.
async fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> End {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return End::Open,
            Ok(Ok(0)) | Ok(Err(_)) => {
                let text = String::from_utf8_lossy(&got);
                let head = text.lines().next().unwrap_or("").to_string();
                return End::Closed { head };
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` and reads one whole response (the gateway always sends
/// Content-Length); returns its head and body.
async fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(bytes).await.expect("write request");
    read_response(stream, !bytes.starts_with(b"HEAD ")).await
}

/// Reads one response; a response to HEAD has no body whatever its
/// Content-Length says (RFC 9110 §9.3.2), so `with_body` is false for it.
async fn read_response(stream: &mut TcpStream, with_body: bool) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let len = if with_body { len } else { 0 };
            if got.len() >= end + 4 + len {
                return (head, got[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("response within 10s")
            .expect("read response");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn warm(upstream: &Upstream, args: &[&str]) -> TestGateway {
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(upstream, args).await;
    poll_until(&gw.url(AS_PATH), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    gw
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n")
}

#[actix_web::test]
async fn hundreds_of_idle_and_trickling_connections_do_not_starve_a_normal_client() {
    const IDLE: usize = 150;
    const TRICKLING: usize = 150;
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = warm(
        &upstream,
        &[
            "--client-request-timeout",
            "2s",
            "--keep-alive",
            "2s",
            "--max-connections",
            "512",
        ],
    )
    .await;

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect idle"));
    }
    // Trickling clients send a request head one byte at a time, never
    // finishing it (a slowloris).
    let mut trickling = Vec::with_capacity(TRICKLING);
    for _ in 0..TRICKLING {
        let addr = gw.addr;
        trickling.push(actix_web::rt::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect trickling");
            let head =
                b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
            let started = Instant::now();
            for (i, byte) in head.iter().chain(std::iter::repeat(&b'a')).enumerate() {
                if s.write_all(&[*byte]).await.is_err() {
                    return (i, started.elapsed(), true);
                }
                // Bounded: give up after 12s whatever happens.
                if started.elapsed() > Duration::from_secs(12) {
                    return (i, started.elapsed(), false);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unreachable!("the byte source is endless")
        }));
    }

    // Meanwhile a normal client keeps being served, on fresh connections
    // and on a kept-alive one.
    let mut keep = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..20 {
        let r = get(&gw.url(AS_PATH)).await;
        assert_eq!(r.status, 200, "request {i} on a fresh connection");
        let (head, body) = exchange(&mut keep, get_request(AS_PATH).as_bytes()).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "request {i} kept alive: {head}"
        );
        assert_eq!(body, document(&upstream.base_url).as_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every idle connection is closed once the request timeout (2s) has
    // passed, with a 408 or silently.
    for (i, mut s) in idle.into_iter().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        match wait_for_close(&mut s, left).await {
            End::Closed { head } => assert!(
                head.is_empty() || head.starts_with("HTTP/1.1 408"),
                "idle connection {i} got {head:?}"
            ),
            End::Open => panic!(
                "idle connection {i} still open after {:?}",
                opened.elapsed()
            ),
        }
    }
    // Every trickling connection is cut off by the server.
    for t in trickling {
        let (bytes, after, cut) = t.await.unwrap();
        assert!(
            cut,
            "a trickling connection was still accepted after {bytes} bytes and {after:?}"
        );
    }
    // And the gateway is still fine.
    assert_eq!(get(&gw.url(AS_PATH)).await.status, 200);
    assert_eq!(get(&gw.url("/healthz")).await.status, 200);
}

/// actix-http times only the first request head on a connection; the
/// watchdog must close a keep-alive connection whose *next* head trickles.
#[actix_web::test]
async fn a_slow_second_request_on_a_kept_alive_connection_is_cut_off() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = warm(
        &upstream,
        &["--client-request-timeout", "1s", "--keep-alive", "1s"],
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (head, _) = exchange(&mut s, get_request(AS_PATH).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let started = Instant::now();
    let next = b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
    let mut cut_after = None;
    for byte in next.iter().chain(std::iter::repeat(&b'a')) {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        if s.write_all(&[*byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        // A closed socket shows on read before a write fails.
        let mut probe = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(200), s.read(&mut probe)).await {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let after = cut_after.expect("the trickled second request held the connection for 10s");
    // keep-alive (1s) + request timeout (1s) is the allowance.
    assert!(
        after >= Duration::from_millis(1500),
        "cut off early, after {after:?}"
    );
    assert_eq!(get(&gw.url(AS_PATH)).await.status, 200);
}

#[actix_web::test]
async fn a_connection_waiting_on_its_answer_is_not_cut_off() {
    // The watchdog only closes connections with no request in progress: a
    // request that waits on a slow cold fetch longer than the idle
    // allowance still gets its answer.
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream
        .set(Behaviour::json(document(&upstream.base_url)).delayed(Duration::from_millis(3500)));
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--client-request-timeout",
            "1s",
            "--keep-alive",
            "1s",
            "--upstream-timeout",
            "20s",
        ],
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (head, body) = exchange(&mut s, get_request(AS_PATH).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, document(&upstream.base_url).as_bytes());
}

#[actix_web::test]
async fn oversized_or_overlong_heads_get_431_and_the_server_lives_on() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = warm(&upstream, &[]).await;

    // One header value larger than actix-http's 128 KiB head buffer.
    let big = format!(
        "GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(130 * 1024)
    );
    // More header fields than actix-http's 96.
    let mut many = format!("GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");

    for (name, request) in [("130 KiB header", big), ("100 header fields", many)] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        // The server may stop reading once it has decided; ignore a write
        // error and look at what it answered.
        let _ = s.write_all(request.as_bytes()).await;
        match wait_for_close(&mut s, Duration::from_secs(10)).await {
            End::Closed { head } => {
                assert!(head.starts_with("HTTP/1.1 431"), "{name}: {head:?}")
            }
            End::Open => panic!("{name}: connection left open"),
        }
        assert_eq!(get(&gw.url(AS_PATH)).await.status, 200, "after {name}");
    }

    // A head just inside the limits is served.
    let mut fine = format!(
        "GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nX-Ok: {}\r\n",
        "a".repeat(8 * 1024)
    );
    for i in 0..60 {
        fine.push_str(&format!("X-H{i}: v\r\n"));
    }
    fine.push_str("\r\n");
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (head, _) = exchange(&mut s, fine.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[actix_web::test]
async fn a_full_connection_table_queues_clients_until_idle_ones_time_out() {
    // 20 in all: 10 for each of the test gateway's 2 workers.
    const CAP: usize = 20;
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = warm(
        &upstream,
        &["--max-connections", "20", "--client-request-timeout", "1s"],
    )
    .await;
    // Let the warm-up connection's keep-alive lapse so the table is empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The table is full: the next client is accepted by the kernel but not
    // served until the idle ones are timed out (1s), then it is.
    let started = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (head, _) = exchange(&mut s, get_request(AS_PATH).as_bytes()).await;
    let waited = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        waited >= Duration::from_millis(500),
        "served after {waited:?}: --max-connections was not enforced"
    );
    drop(idle);
}

#[actix_web::test]
async fn request_bodies_on_metadata_routes_are_refused_and_the_connection_closed() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = warm(&upstream, &[]).await;
    let cases = [
        format!("GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"),
        format!("HEAD {AS_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"),
        format!("GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        format!("OPTIONS {AS_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}"),
        // A body that would smuggle a second request if it were read as one.
        format!("GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Length: 40\r\n\r\nGET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n\r\n"),
    ];
    for request in &cases {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let (head, body) = exchange(&mut s, request.as_bytes()).await;
        let first = request.lines().next().unwrap();
        assert!(head.starts_with("HTTP/1.1 413"), "{first}: {head}");
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some("*"),
            "{first}"
        );
        assert_eq!(header(&head, "connection"), Some("close"), "{first}");
        if !first.starts_with("HEAD") {
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
            assert_eq!(json["error"], "invalid_request");
        }
        // Nothing else comes on this connection.
        assert_eq!(
            wait_for_close(&mut s, Duration::from_secs(5)).await,
            End::Closed {
                head: String::new()
            },
            "{first}"
        );
    }
    // An explicit empty body is fine.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (head, _) = exchange(
        &mut s,
        format!("GET {AS_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
