//! What the agent serves on: anything that accepts byte streams.
//!
//! In the guest that is an AF_VSOCK listener; in unit tests a Unix socket. The serving code
//! is generic over these traits so the tests exercise the same code the guest runs.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// One connection from the host.
pub trait AgentStream: Read + Write + Send + Sized + 'static {
    /// A second handle on the same connection (one thread reads, others write).
    fn try_clone_stream(&self) -> io::Result<Self>;
    /// Close both directions, waking up any thread blocked in a read.
    fn shutdown_both(&self);

    /// Bound reads (the authentication step must not hold a connection thread forever).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// Accepts connections, one per host operation.
pub trait AgentListener: Send + 'static {
    type Stream: AgentStream;
    fn accept_stream(&self) -> io::Result<Self::Stream>;
}

impl AgentStream for UnixStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

impl AgentListener for UnixListener {
    type Stream = UnixStream;
    fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().map(|(stream, _)| stream)
    }
}

impl AgentStream for vsock::VsockStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        vsock::VsockStream::set_read_timeout(self, timeout)
    }
}

impl AgentListener for vsock::VsockListener {
    type Stream = vsock::VsockStream;
    fn accept_stream(&self) -> io::Result<vsock::VsockStream> {
        self.accept().map(|(stream, _)| stream)
    }
}
