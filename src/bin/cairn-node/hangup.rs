//! SIGHUP for `cairn-node run`: reload the node's certificate files and revocation list
//! without a restart.
//!
//! [`block`] blocks SIGHUP in the calling thread before the node starts any thread, so
//! every thread inherits the blocked mask and the signal is never delivered to one (its
//! default action would end the process). One thread then takes it with `sigwait`
//! ([`Hangup::wait`]) and does the reload outside any signal handler, so nothing here
//! needs to be async-signal-safe.

use std::io;

/// SIGHUP, blocked in every thread started after [`block`].
pub struct Hangup(libc::sigset_t);

/// Blocks SIGHUP in this thread (call it before starting any other thread).
pub fn block() -> io::Result<Hangup> {
    // SAFETY: `set` is a local, zero-initialised `sigset_t` (plain data) that
    // `sigemptyset`/`sigaddset` initialise through a valid pointer; `pthread_sigmask` reads
    // it and changes only this thread's signal mask (the old mask is not asked for).
    let (set, rc) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        (set, rc)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Hangup(set))
}

impl Hangup {
    /// Waits for the next SIGHUP sent to the process.
    pub fn wait(&self) -> io::Result<()> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.0` is the signal set initialised by `block`, and `signal` is a valid
        // place for `sigwait` to write the signal number to.
        let rc = unsafe { libc::sigwait(&self.0, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }
}
