//! Connections: the accept loop, the per-connection processes running hyper, and the
//! connection limit.
//!
//! # Processes
//! * The **acceptor** owns the listener. For each connection it takes a [`Permit`] and
//!   spawns a connection process; at the limit it takes a refusal permit instead and spawns
//!   a refusal (hyper answering every request 503 with `Retry-After`, keep-alive off); past
//!   [`crate::GatewayConfig::max_refusing`] refusals too it closes the socket unanswered,
//!   so a flood costs O(1) memory. `Stop` in its mailbox closes the listener.
//! * A **connection** process runs hyper's HTTP/1 connection (with upgrades) to its end.
//!   `Shutdown` in its mailbox makes hyper finish the request in flight and close.
//!   WebSockets leave it: hyper hands the socket to a socket process (see [`crate::ws`]).
//!
//! # Invariants
//! * Every open connection or socket holds exactly one permit (a refusal holds a refusal
//!   permit), so `active` counts them and never exceeds the limit except by the sockets
//!   being handed over from their HTTP connection.
//! * The live-connection table holds each connection process from spawn to exit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::{ActorRef, Ctx, Message};
use futures_util::future::{select, Either};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use parking_lot::Mutex;

use crate::config::MIN_HEADER_BYTES;
use crate::rt::{CairnTimer, ConnClock};
use crate::service::{overloaded, serve, RequestIds, Shared};
use crate::tcp::{TcpConn, TcpListener};

/// After an accept error such as `EMFILE`, wait this long before accepting again, rather
/// than spin on an error that only a closing connection can clear.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Header-read and idle timeout of a refusal: it only needs the request head.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts open connections against the limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    active: AtomicUsize,
    max: usize,
    refusing: AtomicUsize,
    max_refusing: usize,
}

/// One counted connection or socket; released when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    refusal: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = if self.refusal {
            &self.limiter.refusing
        } else {
            &self.limiter.active
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    pub(crate) fn new(max: usize, max_refusing: usize) -> Self {
        Limiter {
            active: AtomicUsize::new(0),
            max,
            refusing: AtomicUsize::new(0),
            max_refusing,
        }
    }

    fn try_take(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A permit if under the limit.
    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        Self::try_take(&self.active, self.max).then(|| Permit {
            limiter: Arc::clone(self),
            refusal: false,
        })
    }

    /// A permit regardless of the limit: for a socket taking over its HTTP connection's.
    pub(crate) fn acquire_forced(self: &Arc<Self>) -> Permit {
        self.active.fetch_add(1, Ordering::AcqRel);
        Permit {
            limiter: Arc::clone(self),
            refusal: false,
        }
    }

    /// A refusal permit if under the refusal limit.
    fn try_refuse(self: &Arc<Self>) -> Option<Permit> {
        Self::try_take(&self.refusing, self.max_refusing).then(|| Permit {
            limiter: Arc::clone(self),
            refusal: true,
        })
    }

    /// Open connections and sockets.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// What the acceptor is told.
#[derive(Debug)]
pub(crate) enum AcceptCmd {
    /// Close the listener and stop.
    Stop,
}

/// What a connection process is told.
#[derive(Debug)]
pub(crate) enum ConnCmd {
    /// Finish the request in flight, then close.
    Shutdown,
}

/// The live connection processes, for shutdown.
#[derive(Default)]
pub(crate) struct LiveConnections {
    next: AtomicU64,
    table: Mutex<HashMap<u64, ActorRef<ConnCmd>>>,
}

impl LiveConnections {
    /// Tells every connection to finish and close.
    pub(crate) fn shutdown_all(&self) {
        let conns: Vec<ActorRef<ConnCmd>> = self.table.lock().values().cloned().collect();
        for conn in conns {
            let _ = conn.try_send(ConnCmd::Shutdown);
        }
    }
}

/// Removes a connection from the live table when its process ends.
struct Live<'a> {
    live: &'a LiveConnections,
    key: u64,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.live.table.lock().remove(&self.key);
    }
}

/// hyper's HTTP/1 server settings for `shared`'s limits, for the connection whose deadlines
/// `clock` keeps.
pub(crate) fn http1_builder(shared: &Shared, clock: &Arc<ConnClock>) -> http1::Builder {
    let config = &shared.config;
    let mut builder = http1::Builder::new();
    builder
        .timer(clock.timer())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(config.max_headers)
        // A client that shuts its write side after sending (`nc -N`, the fuzz target's
        // in-memory client) still gets its answer.
        .half_close(true)
        .keep_alive(true);
    builder
}

/// Runs the accept loop in the acceptor process until `Stop`.
pub(crate) async fn accept_loop(
    mut ctx: Ctx<AcceptCmd>,
    listener: TcpListener,
    shared: Arc<Shared>,
    live: Arc<LiveConnections>,
) {
    let mut refuse_builder = http1::Builder::new();
    refuse_builder
        .timer(CairnTimer::new(shared.handle.driver().clone()))
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let refuse_builder = Arc::new(refuse_builder);
    loop {
        let accepted = match select(pin!(ctx.recv()), pin!(listener.accept())).await {
            Either::Left((Some(Message::User(AcceptCmd::Stop)) | None, _)) => return,
            Either::Left((Some(Message::Signal(_)), _)) => continue,
            Either::Right((accepted, _)) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                if is_resource_exhaustion(&error) {
                    ctx.handle().sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        if let Some(permit) = shared.limiter.try_acquire() {
            spawn_connection(&shared, &live, stream, peer, permit);
        } else if let Some(permit) = shared.limiter.try_refuse() {
            tracing::debug!(%peer, "connection limit reached: answering 503");
            spawn_refusal(&shared, &refuse_builder, stream, permit);
        } else {
            tracing::debug!(%peer, "connection and refusal limits reached: closing unanswered");
        }
    }
}

fn is_resource_exhaustion(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
}

fn spawn_connection(
    shared: &Arc<Shared>,
    live: &Arc<LiveConnections>,
    stream: mio::net::TcpStream,
    peer: SocketAddr,
    permit: crate::conn::Permit,
) {
    let shared = Arc::clone(shared);
    let live = Arc::clone(live);
    let handle = shared.handle.clone();
    handle.spawn(move |mut ctx: Ctx<ConnCmd>| async move {
        let _permit = permit;
        let key = live.next.fetch_add(1, Ordering::Relaxed);
        live.table.lock().insert(key, ctx.me());
        let _live = Live { live: &live, key };
        let io = match TcpConn::new(
            shared.handle.driver(),
            stream,
            Some(shared.config.idle_timeout),
        ) {
            Ok(io) => io,
            Err(error) => {
                tracing::warn!(%error, %peer, "registering a connection failed");
                return;
            }
        };
        // The connection's deadlines (hyper's header reads, the handlers') share one timer.
        let clock = ConnClock::new(shared.handle.driver());
        let builder = http1_builder(&shared, &clock);
        let service_shared = Arc::clone(&shared);
        let ids = RefCell::new(RequestIds::default());
        let service = service_fn(move |request| {
            let id = ids.borrow_mut().next(&service_shared);
            serve(Arc::clone(&service_shared), Arc::clone(&clock), id, request)
        });
        let mut conn = pin!(builder.serve_connection(io, service).with_upgrades());
        loop {
            match select(conn.as_mut(), pin!(ctx.recv())).await {
                Either::Left((result, _)) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    return;
                }
                Either::Right((Some(Message::User(ConnCmd::Shutdown)), _)) => {
                    conn.as_mut().graceful_shutdown();
                }
                Either::Right((Some(Message::Signal(_)), _)) => {}
                Either::Right((None, _)) => return,
            }
        }
    });
}

fn spawn_refusal(
    shared: &Arc<Shared>,
    builder: &Arc<http1::Builder>,
    stream: mio::net::TcpStream,
    permit: crate::conn::Permit,
) {
    let driver = shared.handle.driver().clone();
    let builder = Arc::clone(builder);
    shared.handle.spawn(move |ctx: Ctx<()>| async move {
        let _ctx = ctx;
        let _permit = permit;
        let Ok(io) = TcpConn::new(&driver, stream, Some(REFUSAL_TIMEOUT)) else {
            return;
        };
        let service = service_fn(|_request| {
            std::future::ready(Ok::<_, std::convert::Infallible>(overloaded(
                Duration::from_secs(1),
                "too many connections\n",
            )))
        });
        let _ = builder.serve_connection(io, service).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_limit_and_come_back_when_dropped() {
        let limiter = Arc::new(Limiter::new(2, 1));
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        let refusal = limiter.try_refuse().unwrap();
        assert!(limiter.try_refuse().is_none());
        assert_eq!(limiter.active(), 2);
        drop(a);
        assert!(
            limiter.try_acquire().is_some(),
            "a freed permit is reusable"
        );
        drop((b, refusal));
        assert!(limiter.try_refuse().is_some());
        assert_eq!(limiter.active(), 0);
    }

    #[test]
    fn many_threads_never_exceed_the_limit() {
        let limiter = Arc::new(Limiter::new(8, 0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                let peak = Arc::clone(&peak);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let held: Vec<_> = (0..3).filter_map(|_| limiter.try_acquire()).collect();
                        peak.fetch_max(limiter.active(), Ordering::Relaxed);
                        drop(held);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 8);
        assert_eq!(limiter.active(), 0);
    }
}
