//! Comparator for `benches/ceiling.sh`: the machine's ceiling. One thread,
//! one epoll loop (mio), no framework: every request (a header block ending
//! in a blank line; GET and HEAD carry no body) is answered with the same
//! bytes, the gateway's whole response as saved, `Date` included. What is
//! left is the kernel's cost of loopback TCP plus a few hundred
//! instructions of parsing: no server can spend less per request here.
//!
//!   fixed_responder --response FILE --listen 127.0.0.1:PORT

#![forbid(unsafe_code)]

#[path = "response.rs"]
mod response;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Connections with more than this much unparsed input are closed.
const MAX_PENDING: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
}

impl Conn {
    /// Reads what is there, queues one response per complete request and
    /// writes what the socket takes. `false`: close it.
    fn service(&mut self, response: &[u8]) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let mut start = 0;
        while let Some(end) = self.input[start..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            self.output.extend_from_slice(response);
            start += end + 4;
        }
        self.input.drain(..start);
        if self.input.len() > MAX_PENDING {
            return false;
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        self.output.clear();
        self.written = 0;
        true
    }
}

fn run() -> Result<(), String> {
    let raw = response::read(std::path::Path::new(&response::arg("response")?))?;
    let addr = response::arg("listen")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            next += 1;
                            let token = Token(next);
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                conns.insert(
                                    next,
                                    Conn {
                                        stream,
                                        input: Vec::new(),
                                        output: Vec::new(),
                                        written: 0,
                                    },
                                );
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let id = event.token().0;
            let keep = match conns.get_mut(&id) {
                Some(c) => c.service(&raw.bytes),
                None => continue,
            };
            if !keep {
                if let Some(mut c) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fixed_responder: {e}");
            ExitCode::FAILURE
        }
    }
}
