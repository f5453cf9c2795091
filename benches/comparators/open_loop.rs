//! Open-loop load generator for `benches/ceiling.sh` (wrk2 is not packaged
//! in Debian): requests are *scheduled* at a fixed rate, request k at
//! start + k / rate, spread round-robin over keep-alive connections, one
//! request in flight per connection (HTTP/1.1, no pipelining). A request
//! whose connection is still busy waits in that connection's queue, and its
//! latency is counted from its scheduled time, not from when it was sent:
//! a server that stalls is charged for every request that should have been
//! sent meanwhile (no coordinated omission, as in wrk2).
//!
//!   open_loop --addr 127.0.0.1:PORT --path /x --rate 50000 --seconds 10 \
//!             --connections 64
//!
//! A path ending in `{1..N}` (e.g. `/t{1..1000}`) stands for N paths
//! (`/t1` ... `/t1000`), requested round-robin.
//!
//! Prints one line: `requests N errors E late L reconnects K rate R p50_us
//! A p90_us B p99_us C p999_us D max_us M` (errors: answers other than
//! 2xx/3xx; late: requests still unanswered 2 s after the last was due;
//! reconnects: connections the server closed, opened again).

#![forbid(unsafe_code)]

#[path = "response.rs"]
mod response;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Conn {
    stream: TcpStream,
    connected: bool,
    /// Scheduled times and which path each request asks for.
    queue: VecDeque<(Instant, usize)>,
    in_flight: Option<(Instant, usize)>,
    input: Vec<u8>,
    out: Vec<u8>,
    written: usize,
}

/// Length of the first complete response in `buf` and whether its status
/// is 2xx/3xx; `None` while incomplete; `Err` when unparseable.
fn complete(buf: &[u8]) -> Result<Option<(usize, bool)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let mut length = 0usize;
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| "bad Content-Length")?;
            }
        }
    }
    let total = end + 4 + length;
    Ok((buf.len() >= total).then_some((total, (200..400).contains(&status))))
}

/// The paths `path` stands for: itself, or N paths for a `{1..N}` suffix.
fn expand(path: &str) -> Result<Vec<String>, String> {
    let Some((stem, range)) = path.strip_suffix('}').and_then(|p| p.rsplit_once("{1..")) else {
        return Ok(vec![path.to_string()]);
    };
    let n: usize = range
        .parse()
        .map_err(|_| format!("--path: {path:?}: not a {{1..N}} suffix"))?;
    if n == 0 {
        return Err(format!("--path: {path:?}: N must be positive"));
    }
    Ok((1..=n).map(|i| format!("{stem}{i}")).collect())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn run() -> Result<(), String> {
    let addr: SocketAddr = response::arg("addr")?
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    let path = response::arg("path")?;
    let rate: f64 = response::arg("rate")?
        .parse()
        .map_err(|e| format!("--rate: {e}"))?;
    let seconds: f64 = response::arg("seconds")?
        .parse()
        .map_err(|e| format!("--seconds: {e}"))?;
    let connections: usize = response::arg("connections")?
        .parse()
        .map_err(|e| format!("--connections: {e}"))?;
    if !(rate > 0.0 && seconds > 0.0 && connections > 0) {
        return Err("--rate, --seconds and --connections must be positive".into());
    }
    let requests: Vec<Vec<u8>> = expand(&path)?
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
        .collect();
    let total = (rate * seconds) as u64;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        conns.push(Conn {
            stream,
            connected: false,
            queue: VecDeque::new(),
            in_flight: None,
            input: Vec::new(),
            out: Vec::new(),
            written: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    // Wait (bounded) until every connection is established.
    let deadline = Instant::now() + Duration::from_secs(5);
    while conns.iter().any(|c| !c.connected) {
        if Instant::now() > deadline {
            return Err("connections not established within 5 s".into());
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .map_err(|e| e.to_string())?;
        for e in &events {
            if e.is_writable() {
                let c = &mut conns[e.token().0];
                if c.stream.peer_addr().is_ok() {
                    let _ = c.stream.set_nodelay(true);
                    c.connected = true;
                }
            }
        }
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end_by = start + Duration::from_secs_f64(seconds) + Duration::from_secs(2);
    let mut scheduled = 0u64;
    let mut latencies: Vec<u64> = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    let mut reconnects = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        // Release every request due by now to its connection.
        while scheduled < total {
            let due = start + interval.mul_f64(scheduled as f64);
            if due > now {
                break;
            }
            conns[(scheduled % connections as u64) as usize]
                .queue
                .push_back((due, (scheduled % requests.len() as u64) as usize));
            scheduled += 1;
        }
        // Idle connections send their next request.
        for c in conns.iter_mut() {
            if c.in_flight.is_none() {
                if let Some((due, path)) = c.queue.pop_front() {
                    c.in_flight = Some((due, path));
                    c.out.extend_from_slice(&requests[path]);
                }
            }
            while c.written < c.out.len() {
                match c.stream.write(&c.out[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if c.written == c.out.len() {
                c.out.clear();
                c.written = 0;
            }
        }
        let answered = latencies.len() as u64 + errors;
        if answered == total || now > end_by {
            break;
        }
        // Spin while a request is due within a millisecond (epoll's timeout
        // resolution), sleep otherwise.
        let next_due = (scheduled < total).then(|| start + interval.mul_f64(scheduled as f64));
        let timeout = match next_due {
            Some(d) if d <= now + Duration::from_millis(1) => Duration::ZERO,
            Some(d) => (d - now).min(Duration::from_millis(100)),
            None => Duration::from_millis(10),
        };
        poll.poll(&mut events, Some(timeout))
            .map_err(|e| e.to_string())?;
        for e in &events {
            if !e.is_readable() {
                continue;
            }
            let token = e.token();
            let c = &mut conns[token.0];
            let mut closed = false;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            while let Some((len, ok)) = complete(&c.input)? {
                let done = Instant::now();
                c.input.drain(..len);
                match c.in_flight.take() {
                    Some((due, _)) if ok => {
                        latencies.push(done.duration_since(due).as_micros() as u64)
                    }
                    Some(_) => errors += 1,
                    None => return Err("a response nobody asked for".into()),
                }
            }
            if closed {
                // The server ended the keep-alive connection (nginx does
                // after `keepalive_requests`, 1,000 by default): connect
                // again, and send an unanswered request again, still timed
                // from its scheduled time (as wrk reconnects).
                let _ = poll.registry().deregister(&mut c.stream);
                let fresh =
                    std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
                fresh.set_nonblocking(true).map_err(|e| e.to_string())?;
                let _ = fresh.set_nodelay(true);
                c.stream = TcpStream::from_std(fresh);
                poll.registry()
                    .register(
                        &mut c.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| e.to_string())?;
                c.input.clear();
                c.out.clear();
                c.written = 0;
                if let Some(unanswered) = c.in_flight.take() {
                    c.queue.push_front(unanswered);
                }
                reconnects += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let late = total - latencies.len() as u64 - errors;
    latencies.sort_unstable();
    println!(
        "requests {} errors {errors} late {late} reconnects {reconnects} rate {:.0} p50_us {} p90_us {} p99_us {} p999_us {} max_us {}",
        latencies.len(),
        latencies.len() as f64 / elapsed.min(seconds + 2.0),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("open_loop: {e}");
            ExitCode::FAILURE
        }
    }
}
