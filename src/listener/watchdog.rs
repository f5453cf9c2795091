//! Closes client connections that hold a slot without making progress.
//!
//! actix-http times the request head only for the *first* request on a
//! connection (`client_request_timeout`); once a keep-alive connection has
//! been answered, a client that sends the next request head one byte at a
//! time clears the keep-alive timer with its first byte and is then never
//! timed out again (slowloris). Such connections would fill
//! `--max-connections` for good and lock every other client out.
//!
//! The watchdog closes that gap from outside the HTTP stack. For every
//! accepted connection ([`on_connect`]) it keeps a duplicate of the socket
//! and a record of request activity, updated by the [`track`] middleware.
//! When a connection has had no request in progress for
//! [`ServerLimits::idle_connection_limit`](super::ServerLimits::idle_connection_limit)
//! (keep-alive plus the time to send a head), it shuts the socket down; the
//! HTTP dispatcher then sees end-of-stream and drops the connection. A
//! request being answered (e.g. waiting on a cold upstream fetch) is never
//! cut off. The state lives in the connection's extensions, so it is freed
//! with the connection, and the duplicate socket closes with it.
//!
//! Everything runs on the worker thread that owns the connection (`Rc`,
//! `Cell`, a local task), so it costs no locks; the price is one extra file
//! descriptor per open connection (the duplicate socket).

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Per-connection state, stored in the connection's extensions.
#[derive(Debug)]
struct Connection {
    /// A duplicate of the client socket (same open file), used only to shut
    /// it down.
    socket: std::net::TcpStream,
    /// Requests on this connection whose response is not built yet.
    in_flight: Cell<u32>,
    /// When the last request finished (or the connection was accepted).
    idle_since: Cell<Instant>,
    /// Dropped with the connection: wakes the watchdog so it exits at once.
    _closed: oneshot::Sender<()>,
}

/// The extension value: a handle on the connection's state.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(Rc<Connection>);

/// The `on_connect` callback: registers the connection and starts its
/// watchdog. Connections of an unknown type are left alone (and logged).
pub fn on_connect(io: &dyn Any, ext: &mut Extensions, limit: Duration) {
    let Some(tcp) = tcp_stream(io) else {
        tracing::warn!("connection watchdog: unknown connection type; not watched");
        return;
    };
    let socket = match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            // Out of file descriptors: the connection is still served, only
            // without the idle bound.
            tracing::warn!("connection watchdog: cannot duplicate the socket: {e}");
            return;
        }
    };
    let (closed_tx, closed_rx) = oneshot::channel();
    let conn = Rc::new(Connection {
        socket,
        in_flight: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
        _closed: closed_tx,
    });
    actix_web::rt::spawn(watch(Rc::downgrade(&conn), closed_rx, limit));
    ext.insert(ConnectionHandle(conn));
}

fn tcp_stream(io: &dyn Any) -> Option<&TcpStream> {
    if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        return Some(tcp);
    }
    io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
        .map(|tls| tls.get_ref().0)
}

async fn watch(conn: Weak<Connection>, mut closed: oneshot::Receiver<()>, limit: Duration) {
    loop {
        let deadline = {
            let Some(c) = conn.upgrade() else { return };
            if c.in_flight.get() > 0 {
                Instant::now() + limit
            } else {
                let deadline = c.idle_since.get() + limit;
                if deadline <= Instant::now() {
                    tracing::debug!(peer = ?c.socket.peer_addr().ok(), "closing a connection with no request in progress for {limit:?}");
                    let _ = c.socket.shutdown(Shutdown::Both);
                    return;
                }
                deadline
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            _ = &mut closed => return,
        }
    }
}

/// Marks one request in progress on its connection until dropped.
#[derive(Debug)]
pub struct InFlight(Option<Rc<Connection>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.in_flight.set(c.in_flight.get().saturating_sub(1));
            c.idle_since.set(Instant::now());
        }
    }
}

/// Called by the middleware when a request starts; the guard ends it.
pub fn track(handle: Option<&ConnectionHandle>) -> InFlight {
    InFlight(handle.map(|h| {
        let c = h.0.clone();
        c.in_flight.set(c.in_flight.get().saturating_add(1));
        c
    }))
}
