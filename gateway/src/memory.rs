//! A connection made of bytes in memory, for driving the real request path (hyper's parser,
//! the limits, routing, the dispatcher) without a socket: unit tests of malformed input and
//! the `http_request` fuzz target.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

/// Reads `input` then end-of-file; keeps everything written.
#[derive(Debug)]
pub struct MemoryIo {
    input: Vec<u8>,
    read: usize,
    /// At most this many bytes per read, to exercise partial reads.
    chunk: usize,
    output: Arc<Mutex<Vec<u8>>>,
}

impl MemoryIo {
    /// A connection whose client sends `input` (in reads of at most `chunk` bytes, at
    /// least 1) and then closes. The second value collects what the server writes.
    pub fn new(input: Vec<u8>, chunk: usize) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let output = Arc::new(Mutex::new(Vec::new()));
        let io = MemoryIo {
            input,
            read: 0,
            chunk: chunk.max(1),
            output: Arc::clone(&output),
        };
        (io, output)
    }
}

impl hyper::rt::Read for MemoryIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let n = (this.input.len() - this.read)
            .min(this.chunk)
            .min(buf.remaining());
        buf.put_slice(&this.input[this.read..this.read + n]);
        this.read += n;
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for MemoryIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.lock().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
