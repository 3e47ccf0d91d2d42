//! quinn's [`Runtime`] on Cairn's scheduler: timers from the driver's timing wheel, tasks as
//! Cairn processes, UDP sockets registered with the driver's mio poller.
//!
//! quinn needs three things from a runtime (`quinn/src/runtime.rs`):
//!
//! * **Timers** ([`AsyncTimer`]): one per connection, reset on nearly every poll of the
//!   connection driver. [`CairnTimer`] arms a driver timer lazily on a `Pending` poll. A
//!   reset to a *later* deadline keeps the armed timer: it fires early, the poll sees the
//!   deadline not yet reached and re-arms. Only a reset to an *earlier* deadline cancels.
//!   This keeps the common case (the idle timeout pushed out by every packet) free of
//!   wheel insertions and removals.
//! * **Tasks** ([`Runtime::spawn`]): each is a Cairn process with message type `()`; it
//!   never reads its mailbox. Runtime shutdown stops them like any other process.
//! * **UDP sockets** ([`AsyncUdpSocket`]): a `mio::net::UdpSocket` registered with the
//!   driver for both directions, with `quinn::udp::UdpSocketState` doing the sends and
//!   receives (GSO/GRO and ECN where the OS has them).
//!
//! # Readiness protocol
//!
//! mio is edge-triggered, so readiness is only cleared after an operation returned
//! `WouldBlock`, and only with the [`ReadyEvent`] observed *before* that operation
//! ([`ScheduledIo::clear_readiness`] keeps readiness that arrived in between). Receives
//! poll for read readiness with the caller's waker. Sends (`try_send` has no waker) peek at
//! write readiness with a no-op waker: if the socket is not known to be writable they
//! report `WouldBlock` at once, and quinn then waits on a [`UdpPoller`], whose
//! `poll_writable` registers the real waker. Each poller registers its own waker, so the
//! endpoint driver and connection drivers can all wait for writability at once.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use cairn_scheduler::driver::{Direction, DriverHandle, ReadyEvent, ScheduledIo, WakeTimer};
use cairn_scheduler::{Ctx, Handle};
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};

/// Consecutive non-`WouldBlock` receive errors tolerated before `poll_recv` reports one.
/// Errors such as an ICMP port-unreachable (`ECONNREFUSED`) are consumed by the failing
/// receive, so retrying is right; a persistent error (a broken socket) must surface.
const MAX_RECV_ERRORS_IN_A_ROW: usize = 32;

/// quinn's runtime on a Cairn [`Handle`].
#[derive(Clone)]
pub struct CairnRuntime {
    /// The scheduler that runs quinn's tasks and owns the timer/I-O driver.
    pub handle: Handle,
}

impl CairnRuntime {
    /// A runtime spawning on `handle`.
    pub fn new(handle: Handle) -> Self {
        CairnRuntime { handle }
    }
}

impl fmt::Debug for CairnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CairnRuntime").finish_non_exhaustive()
    }
}

impl Runtime for CairnRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(CairnTimer::new(self.handle.driver().clone(), deadline))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.handle.spawn(move |ctx: Ctx<()>| async move {
            // Keep the context (and so the process's mailbox) alive for the task's life.
            let _ctx = ctx;
            future.await;
        });
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(CairnUdpSocket::new(self.handle.driver(), socket)?))
    }
}

/// A resettable sleep on the driver's timing wheel (about 1 ms resolution, never early).
pub struct CairnTimer {
    driver: DriverHandle,
    deadline: Instant,
    /// The driver timer, armed for a deadline ≤ `deadline` (earlier after a later reset).
    armed: Option<WakeTimer>,
}

impl CairnTimer {
    /// A timer expiring at `deadline`. Nothing is armed until it is polled.
    pub fn new(driver: DriverHandle, deadline: Instant) -> Self {
        CairnTimer {
            driver,
            deadline,
            armed: None,
        }
    }

    /// Arms a driver timer for `deadline` that wakes `waker`.
    fn arm(&mut self, waker: Waker) {
        self.armed = Some(self.driver.wake_at(self.deadline, waker));
    }

    /// Cancels the armed timer (dropping a [`WakeTimer`] cancels it).
    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl fmt::Debug for CairnTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CairnTimer")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.as_ref().map(WakeTimer::deadline))
            .finish()
    }
}

impl Drop for CairnTimer {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl AsyncTimer for CairnTimer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.get_mut();
        this.deadline = deadline;
        // An armed timer firing at or before the new deadline is kept (see module docs). One
        // firing later is replaced at once, for the same waker, so a task that does not
        // poll again after `reset` is still woken (as tokio's `Sleep::reset` does).
        if this
            .armed
            .as_ref()
            .is_some_and(|armed| armed.deadline() > deadline)
        {
            let waker = this.armed.as_ref().and_then(WakeTimer::take_waker);
            this.disarm();
            if let Some(waker) = waker {
                this.arm(waker);
            }
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.disarm();
            return Poll::Ready(());
        }
        if let Some(armed) = &this.armed {
            if !armed.poll_fired(cx.waker()) {
                return Poll::Pending;
            }
            // Fired early (the deadline moved later since arming): arm again below.
        }
        this.arm(cx.waker().clone());
        Poll::Pending
    }
}

/// A UDP socket registered with the Cairn driver.
struct CairnUdpSocket {
    io: mio::net::UdpSocket,
    sched: Arc<ScheduledIo>,
    state: UdpSocketState,
    driver: DriverHandle,
    /// The bound port, for fault injection (`crate::faults`, `testing` feature).
    #[cfg(feature = "testing")]
    port: u16,
}

impl fmt::Debug for CairnUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CairnUdpSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl CairnUdpSocket {
    fn new(driver: &DriverHandle, socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // Configures the socket (GRO, ECN, don't-fragment, packet info) before handing it over.
        let state = UdpSocketState::new((&socket).into())?;
        #[cfg(feature = "testing")]
        let port = socket.local_addr()?.port();
        let mut io = mio::net::UdpSocket::from_std(socket);
        let sched = driver.register(
            &mut io,
            mio::Interest::READABLE.add(mio::Interest::WRITABLE),
        )?;
        Ok(CairnUdpSocket {
            io,
            sched,
            state,
            driver: driver.clone(),
            #[cfg(feature = "testing")]
            port,
        })
    }

    /// Write readiness if known now, without registering a waker that matters.
    fn peek_writable(&self) -> io::Result<Option<ReadyEvent>> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.sched.poll_readiness(&mut cx, Direction::Write) {
            Poll::Ready(Ok(event)) => Ok(Some(event)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(None),
        }
    }
}

impl Drop for CairnUdpSocket {
    fn drop(&mut self) {
        if let Err(error) = self.driver.deregister(&mut self.io, &self.sched) {
            tracing::debug!(%error, "deregistering a QUIC UDP socket failed");
        }
    }
}

impl AsyncUdpSocket for CairnUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(CairnUdpPoller { socket: self })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        #[cfg(feature = "testing")]
        if crate::faults::cut(self.port, transmit.destination.port()) {
            // Lost on the way, as over a cut network.
            return Ok(());
        }
        let Some(event) = self.peek_writable()? else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        match self.state.send((&self.io).into(), transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.sched.clear_readiness(event);
                Err(e)
            }
            other => other,
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut errors = 0;
        loop {
            let event = match self.sched.poll_readiness(cx, Direction::Read) {
                Poll::Ready(Ok(event)) => event,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match self.state.recv((&self.io).into(), bufs, meta) {
                Ok(n) => {
                    // Datagrams from across a partition are dropped: quinn skips a
                    // buffer whose length is zero.
                    #[cfg(feature = "testing")]
                    for m in meta.iter_mut().take(n) {
                        if crate::faults::cut(self.port, m.addr.port()) {
                            m.len = 0;
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sched.clear_readiness(event);
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_RECV_ERRORS_IN_A_ROW {
                        return Poll::Ready(Err(e));
                    }
                    tracing::debug!(error = %e, "UDP receive error; retrying");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// Waits for write readiness on one [`CairnUdpSocket`] for one task.
struct CairnUdpPoller {
    socket: Arc<CairnUdpSocket>,
}

impl fmt::Debug for CairnUdpPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CairnUdpPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for CairnUdpPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket
            .sched
            .poll_readiness(cx, Direction::Write)
            .map_ok(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> cairn_scheduler::Runtime {
        cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap()
    }

    #[test]
    fn timer_fires_and_resets() {
        let rt = runtime();
        let cairn = CairnRuntime::new(rt.handle());
        let start = Instant::now();
        let mut timer = cairn.new_timer(start + Duration::from_millis(30));
        // Reset earlier: must fire at the earlier deadline.
        rt.block_on(std::future::poll_fn(|cx| {
            let pending = timer.as_mut().poll(cx).is_pending();
            if pending && start.elapsed() < Duration::from_millis(5) {
                timer.as_mut().reset(start + Duration::from_millis(10));
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(10), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(30), "{elapsed:?}");
        // Reset later after firing: completes only at the new deadline.
        let later = Instant::now() + Duration::from_millis(20);
        timer.as_mut().reset(later);
        rt.block_on(std::future::poll_fn(|cx| timer.as_mut().poll(cx)));
        assert!(Instant::now() >= later);
        // Reset later while armed: the early firing re-arms rather than completing.
        let mut timer = cairn.new_timer(Instant::now() + Duration::from_millis(5));
        let mut reset = false;
        let target = Instant::now() + Duration::from_millis(25);
        rt.block_on(std::future::poll_fn(|cx| {
            let poll = timer.as_mut().poll(cx);
            if !reset {
                reset = true;
                timer.as_mut().reset(target);
            }
            poll
        }));
        assert!(Instant::now() >= target);
        rt.shutdown();
    }

    #[test]
    fn spawn_runs_future() {
        let rt = runtime();
        let cairn = CairnRuntime::new(rt.handle());
        let (tx, rx) = std::sync::mpsc::channel();
        cairn.spawn(Box::pin(async move {
            tx.send(42).unwrap();
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 42);
        rt.shutdown();
    }
}
