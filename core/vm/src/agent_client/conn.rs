//! The connection abstraction: any bidirectional byte stream to the agent.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

/// A connected stream to the guest agent.
///
/// Streaming operations need a second handle on the same connection (stdin and signals are
/// sent from other threads while the main thread reads output), hence `try_clone_conn`.
pub trait AgentConn: Read + Write + Send + 'static {
    fn try_clone_conn(&self) -> io::Result<Box<dyn AgentConn>>;
    /// Close both directions (unblocks readers on other handles).
    fn shutdown_conn(&self);
}

impl AgentConn for UnixStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn AgentConn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl AgentConn for vsock::VsockStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn AgentConn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl AgentConn for Box<dyn AgentConn> {
    fn try_clone_conn(&self) -> io::Result<Box<dyn AgentConn>> {
        (**self).try_clone_conn()
    }
    fn shutdown_conn(&self) {
        (**self).shutdown_conn()
    }
}
