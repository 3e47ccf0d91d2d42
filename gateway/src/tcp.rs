//! TCP on Cairn's driver: a listener that accepts without blocking a worker, and a stream
//! implementing hyper's [`hyper::rt::Read`] / [`hyper::rt::Write`] with an idle deadline.
//!
//! The driver's API ([`DriverHandle::register`], [`ScheduledIo`]) is enough, so this lives
//! here rather than in `cairn-scheduler`. The readiness protocol is the one `cairn-net`'s
//! UDP socket follows: mio is edge-triggered, so readiness is cleared only after an
//! operation returned `WouldBlock`, and only with the [`ReadyEvent`] observed before it
//! ([`ScheduledIo::clear_readiness`] keeps readiness that arrived in between).
//!
//! # Idle deadline (slowloris on bodies and responses)
//!
//! hyper's header-read timeout covers request heads. A client that sends a body one byte a
//! minute, or never reads its response, is caught here instead: whenever a read or write
//! would block, the stream checks that some byte moved in the last `idle_timeout`, else it
//! fails with `TimedOut` and hyper drops the connection. Time spent waiting on the handler
//! is not counted (hyper does not poll the socket then). The deadline timer is armed lazily
//! and re-armed only when it fires early, so a busy connection pays one clock read per
//! operation and no timer churn.
//!
//! # Invariants
//! * Each stream is registered once and deregistered when dropped.
//! * A stream whose idle deadline passed stays failed: later polls keep returning the error.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use cairn_scheduler::driver::{Direction, DriverHandle, ReadyEvent, ScheduledIo, Sleep};
use mio::Interest;

/// A listening socket registered with the driver.
pub struct TcpListener {
    io: mio::net::TcpListener,
    sched: Arc<ScheduledIo>,
    driver: DriverHandle,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port) and registers it with `driver`.
    pub fn bind(driver: &DriverHandle, addr: SocketAddr) -> io::Result<Self> {
        let mut io = mio::net::TcpListener::bind(addr)?;
        let sched = driver.register(&mut io, Interest::READABLE)?;
        Ok(TcpListener {
            io,
            sched,
            driver: driver.clone(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Waits for the next connection.
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(mio::net::TcpStream, SocketAddr)>> {
        loop {
            let event = ready!(self.sched.poll_readiness(cx, Direction::Read))?;
            match self.io.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sched.clear_readiness(event);
                }
                other => return Poll::Ready(other),
            }
        }
    }

    /// Waits for the next connection.
    pub fn accept(
        &self,
    ) -> impl Future<Output = io::Result<(mio::net::TcpStream, SocketAddr)>> + '_ {
        std::future::poll_fn(move |cx| self.poll_accept(cx))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        if let Err(error) = self.driver.deregister(&mut self.io, &self.sched) {
            tracing::debug!(%error, "deregistering a TCP listener failed");
        }
    }
}

/// A connected TCP stream registered with the driver, with an optional idle deadline (see
/// the module docs).
pub struct TcpConn {
    io: mio::net::TcpStream,
    sched: Arc<ScheduledIo>,
    driver: DriverHandle,
    idle: Option<Idle>,
}

/// The idle deadline's state.
struct Idle {
    timeout: Duration,
    /// When a byte last moved (or the stream was made).
    last_progress: Instant,
    /// Armed for `last_progress + timeout` as it was when armed; re-armed if it fires early.
    sleep: Option<Sleep>,
    expired: bool,
}

impl std::fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConn")
            .field("peer", &self.io.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl TcpConn {
    /// Registers `io` with `driver` for reading and writing, and turns Nagle off (requests
    /// and responses are small and latency matters). `idle_timeout` is described in the
    /// module docs; `None` disables it.
    pub fn new(
        driver: &DriverHandle,
        mut io: mio::net::TcpStream,
        idle_timeout: Option<Duration>,
    ) -> io::Result<Self> {
        io.set_nodelay(true)?;
        let sched = driver.register(&mut io, Interest::READABLE.add(Interest::WRITABLE))?;
        Ok(TcpConn {
            io,
            sched,
            driver: driver.clone(),
            idle: idle_timeout.map(|timeout| Idle {
                timeout,
                last_progress: Instant::now(),
                sleep: None,
                expired: false,
            }),
        })
    }

    /// Replaces the idle timeout (an upgraded WebSocket may sit idle for hours).
    pub fn set_idle_timeout(&mut self, idle_timeout: Option<Duration>) {
        self.idle = idle_timeout.map(|timeout| Idle {
            timeout,
            last_progress: Instant::now(),
            sleep: None,
            expired: false,
        });
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    fn progressed(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last_progress = Instant::now();
        }
    }

    /// Called when an operation would block: `Ready(Err(TimedOut))` once the connection has
    /// been idle too long, else `Pending` with the deadline armed for `cx`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        loop {
            if idle.expired {
                return Poll::Ready(idle_error());
            }
            let deadline = idle.last_progress + idle.timeout;
            if Instant::now() >= deadline {
                idle.expired = true;
                continue;
            }
            let sleep = match &mut idle.sleep {
                Some(sleep) if sleep.deadline() <= deadline => sleep,
                slot => slot.insert(self.driver.sleep_until(deadline)),
            };
            match Pin::new(sleep).poll(cx) {
                // Fired for an older deadline: arm again for the current one.
                Poll::Ready(()) => idle.sleep = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Waits for readiness in `direction`, or fails once idle too long.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<io::Result<ReadyEvent>> {
        if self.idle.as_ref().is_some_and(|idle| idle.expired) {
            return Poll::Ready(Err(idle_error()));
        }
        match self.sched.poll_readiness(cx, direction) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    /// Runs `op` once the socket is ready in `direction`, retrying after `WouldBlock`.
    fn poll_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&mut mio::net::TcpStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let event = ready!(self.poll_ready(cx, direction))?;
            match op(&mut self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sched.clear_readiness(event);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(r) => {
                    self.progressed();
                    return Poll::Ready(Ok(r));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

/// Views uninitialised memory as a byte slice to read into.
///
/// # Safety
/// The caller must only hand the slice to an operation that writes bytes and never reads
/// them (a `recv` syscall), and must count as initialised only the prefix it reports
/// written.
unsafe fn as_write_only_bytes(buf: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    // SAFETY: `MaybeUninit<u8>` and `u8` have the same layout; by the caller's contract no
    // byte is read before it is written.
    unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) }
}

impl hyper::rt::Read for TcpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: `as_mut` hands out the cursor's unfilled (possibly uninitialised) part; we
        // never de-initialise it, and only `recv` writes into it (see `as_write_only_bytes`).
        let unfilled = unsafe { buf.as_mut() };
        // SAFETY: the slice goes only to `TcpStream::read` (`recv(2)`), which writes and never
        // reads; `n` below is the count it wrote.
        let bytes = unsafe { as_write_only_bytes(unfilled) };
        let n = ready!(this.poll_io(cx, Direction::Read, |io| io.read(bytes)))?;
        // SAFETY: `read` initialised the first `n` bytes of the unfilled part.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TcpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, Direction::Write, |io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, Direction::Write, |io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the kernel: nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.shutdown(std::net::Shutdown::Write) {
            // Already reset by the peer: the write side is shut either way.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        if let Err(error) = self.driver.deregister(&mut self.io, &self.sched) {
            tracing::debug!(%error, "deregistering a TCP stream failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::{Read as _, Write as _};

    fn runtime() -> cairn_scheduler::Runtime {
        cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap()
    }

    /// A connected pair: the driver-registered side and a blocking std client.
    fn pair(
        rt: &cairn_scheduler::Runtime,
        idle: Option<Duration>,
    ) -> (TcpConn, std::net::TcpStream) {
        let driver = rt.handle().driver().clone();
        let listener = TcpListener::bind(&driver, "127.0.0.1:0".parse().unwrap()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = rt.block_on(listener.accept()).unwrap();
        (TcpConn::new(&driver, stream, idle).unwrap(), client)
    }

    async fn read_some(conn: &mut TcpConn, into: &mut Vec<u8>) -> io::Result<usize> {
        let mut raw = [MaybeUninit::<u8>::uninit(); 64];
        let mut buf = hyper::rt::ReadBuf::uninit(&mut raw);
        std::future::poll_fn(|cx| Pin::new(&mut *conn).poll_read(cx, buf.unfilled())).await?;
        into.extend_from_slice(buf.filled());
        Ok(buf.filled().len())
    }

    /// Exercises the uninitialised-buffer read (`as_write_only_bytes`): the bytes hyper sees
    /// are exactly the bytes sent, across reads that wait for readiness.
    #[test]
    fn reads_into_uninitialised_memory_exactly_what_was_sent() {
        let rt = runtime();
        let (mut conn, mut client) = pair(&rt, None);
        let sender = std::thread::spawn(move || {
            for chunk in [b"hello ".as_slice(), b"world", b"!"] {
                client.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            client
        });
        let mut got = Vec::new();
        while got.len() < 12 {
            rt.block_on(read_some(&mut conn, &mut got)).unwrap();
        }
        assert_eq!(got, b"hello world!");
        let client = sender.join().unwrap();
        drop(client);
        assert_eq!(
            rt.block_on(read_some(&mut conn, &mut got)).unwrap(),
            0,
            "EOF"
        );
        rt.shutdown();
    }

    #[test]
    fn writes_reach_the_peer_and_shutdown_ends_its_read() {
        let rt = runtime();
        let (mut conn, mut client) = pair(&rt, None);
        let bufs = [IoSlice::new(b"abc"), IoSlice::new(b"def")];
        let n = rt
            .block_on(std::future::poll_fn(|cx| {
                Pin::new(&mut conn).poll_write_vectored(cx, &bufs)
            }))
            .unwrap();
        assert_eq!(n, 6);
        rt.block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut conn).poll_shutdown(cx)
        }))
        .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abcdef");
        rt.shutdown();
    }

    #[test]
    fn a_silent_peer_times_out_after_the_idle_timeout_and_stays_failed() {
        let rt = runtime();
        let idle = Duration::from_millis(100);
        let (mut conn, _client) = pair(&rt, Some(idle));
        let start = Instant::now();
        let err = rt
            .block_on(read_some(&mut conn, &mut Vec::new()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= idle, "{:?}", start.elapsed());
        let err = rt
            .block_on(read_some(&mut conn, &mut Vec::new()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        rt.shutdown();
    }

    #[test]
    fn progress_pushes_the_idle_deadline_out() {
        let rt = runtime();
        let idle = Duration::from_millis(150);
        let (mut conn, mut client) = pair(&rt, Some(idle));
        let start = Instant::now();
        let trickle = std::thread::spawn(move || {
            // One byte every 50 ms for 400 ms: never idle for 150 ms.
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(50));
                client.write_all(b"x").unwrap();
            }
            client
        });
        let mut got = Vec::new();
        while got.len() < 8 {
            rt.block_on(read_some(&mut conn, &mut got)).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(400));
        let _client = trickle.join().unwrap();
        let err = rt.block_on(read_some(&mut conn, &mut got)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        rt.shutdown();
    }
}
