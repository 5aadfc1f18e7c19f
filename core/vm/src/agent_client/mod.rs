//! Host-side client of the guest agent protocol (one connection per operation).
//!
//! Every connection starts with [`authenticate`] (the VM layer runs it when it opens one).
//! Every other function takes a connected byte stream (the VM layer opens it: a Unix socket after
//! the hybrid-vsock `CONNECT` handshake, or an AF_VSOCK stream), runs exactly one operation
//! on it and consumes it. Results and exit statuses are values; the one failure the caller
//! must treat specially is [`ClientError::ConnectionLost`]: the guest went away before
//! answering, which usually means the VM died (the VM layer points the user at the console
//! log and exits 125).

mod auth;
mod conn;
mod error;
mod exec;
mod interactive;
mod simple;
mod tar;
#[cfg(test)]
mod tests;

pub use auth::authenticate;
pub use conn::AgentConn;
pub use error::ClientError;
pub use exec::exec;
pub use interactive::{exec_interactive, exec_relaying_signals, terminal_size};
pub use simple::{
    connect_socket, hello, mount_share, resume, service_start, service_status, shutdown, suspend,
    ServiceState,
};
pub use tar::{pull_tar, pull_tar_contents, push_tar};
pub use vcontainer_proto::{
    ExecRequest, ExitStatus, HelloOk, ServiceStartRequest, SocketProbe, WindowSize,
    PROTOCOL_VERSION,
};
