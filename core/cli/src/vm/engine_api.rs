//! The engine's API on the host (`memres start --expose`, `vexpose`): a Unix socket in the
//! state dir (`docker.sock` / `podman.sock`, mode 0600) whose every connection is relayed to
//! the engine's own socket in the guest, over the same authenticated agent channel as
//! everything else (the agent's `Connect` request), so the host's `docker`/`podman --remote`
//! clients, compose and any Docker API program work against the VM.
//!
//! No ssh and no TCP port (the old tool's `vexpose` used ssh): the socket file's mode and
//! the state dir are the access control, as for the user's own dockerd socket. The relay
//! runs in the memres supervisor, so it lives exactly as long as the VM, and each client
//! connection is its own agent connection: a client killed mid-stream ends only its own.
//! Which socket in the guest and what the host file is called come from the runtime plugin
//! (`RuntimeSpec::engine_api`).

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vcontainer_proto::auth::Secret;
use vcontainer_proto::{read_frame, write_frame, FrameType, AGENT_VSOCK_PORT, MAX_PAYLOAD};

use super::instance;
use super::transport::{AgentStream, Endpoint};
use crate::agent_client;

/// What to expose: part of a memres VM's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expose {
    /// The engine's socket in the guest.
    pub guest_socket: String,
    /// The relayed socket on the host (in the state dir).
    pub host_socket: PathBuf,
}

/// Why the API cannot be exposed.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    #[error("{0} exists and is not a socket: not replacing it")]
    NotASocket(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Creates the host socket, readable and writable by its owner only. A stale socket of an
/// earlier VM is replaced; any other file there is left alone and refused.
pub fn bind(host_socket: &Path) -> Result<UnixListener, ExposeError> {
    let io = |what, source| ExposeError::Io {
        what,
        path: host_socket.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(host_socket) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(host_socket).map_err(|e| io("removing the stale socket", e))?
        }
        Ok(_) => return Err(ExposeError::NotASocket(host_socket.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("checking", e)),
    }
    // umask first, so the socket is never reachable by others, even for an instant
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(host_socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| io("creating", e))?;
    std::fs::set_permissions(host_socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("chmod 0600", e))?;
    Ok(listener)
}

/// Removes the host socket after the VM stopped (only if it is a socket).
pub fn remove_socket(host_socket: &Path) {
    if std::fs::symlink_metadata(host_socket).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(host_socket);
    }
}

/// Where the relay takes each client: the VM's agent and the engine socket behind it.
#[derive(Clone)]
pub struct Relay {
    pub endpoint: Endpoint,
    pub secret: Secret,
    pub guest_socket: String,
    pub state_dir: PathBuf,
}

/// Accepts clients on `listener` for the rest of this process's life (a thread of the
/// supervisor), each relayed by threads of its own.
pub fn serve(listener: UnixListener, relay: Relay) -> io::Result<()> {
    thread::Builder::new()
        .name("engine-api".into())
        .spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let relay = relay.clone();
                let _ = thread::Builder::new()
                    .name("engine-client".into())
                    .spawn(move || {
                        if let Err(e) = relay.one(client) {
                            tracing::debug!("engine API client: {e}");
                        }
                    });
            }
        })
        .map(drop)
}

impl Relay {
    /// One client: its own agent connection, turned into a pipe to the engine's socket.
    fn one(&self, client: UnixStream) -> Result<(), String> {
        instance::touch_activity(&self.state_dir);
        let agent = self
            .endpoint
            .connect(AGENT_VSOCK_PORT, Duration::from_secs(10), &self.secret)
            .map_err(|e| e.to_string())?;
        let agent = agent_client::connect_socket(agent, &self.guest_socket)
            .map_err(|e| format!("{}: {e}", self.guest_socket))?;
        pipe(client, agent)
    }
}

/// Copies both ways until both directions ended: the client's bytes go as `Stdin` frames
/// (its end-of-file as `StdinEnd`, a half-close), the engine's come back from `Stdout`
/// frames (`StdoutEnd`: half-close towards the client). Framed because a half-close does
/// not cross the hybrid vsock transport (see the agent's relay module).
fn pipe(client: UnixStream, agent: AgentStream) -> Result<(), String> {
    let mut client_in = client.try_clone().map_err(|e| e.to_string())?;
    let mut agent_out = agent.try_clone().map_err(|e| e.to_string())?;
    let up = thread::Builder::new()
        .name("engine-up".into())
        .spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_in.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                for chunk in buf[..n].chunks(MAX_PAYLOAD) {
                    write_frame(&mut agent_out, FrameType::Stdin, chunk)
                        .map_err(io::Error::other)?;
                }
            }
            write_frame(&mut agent_out, FrameType::StdinEnd, &[]).map_err(io::Error::other)
        })
        .map_err(|e| e.to_string())?;
    let (mut agent_in, mut client_out) = (agent, client);
    let down = (|| -> io::Result<()> {
        while let Some(frame) = read_frame(&mut agent_in).map_err(io::Error::other)? {
            match frame.kind {
                FrameType::Stdout => client_out.write_all(&frame.payload)?,
                FrameType::StdoutEnd => break,
                _ => {}
            }
        }
        Ok(())
    })();
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    if down.is_err() {
        // the client is gone: end the agent connection, which ends the guest side and
        // wakes the other direction
        let _ = agent_in.shutdown(std::net::Shutdown::Both);
    }
    let up = up.join().map_err(|_| "relay thread panicked".to_string())?;
    let _ = agent_in.shutdown(std::net::Shutdown::Both);
    down.and(up).map_err(|e| e.to_string())
}

/// The line that tells a user how to point the runtime's client at `host_socket`.
pub fn client_lines(env: &str, hint: &str, host_socket: &Path) -> String {
    let socket = host_socket.display().to_string();
    format!(
        "export {env}=unix://{socket}   # or: {}",
        hint.replace("{socket}", &socket)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_private_and_no_other_file_is_replaced() {
        let t = tempfile::tempdir().expect("tmp");
        let sock = t.path().join("docker.sock");
        let l = bind(&sock).expect("bind");
        let mode = std::fs::metadata(&sock).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(l);
        // a stale socket is replaced
        bind(&sock).expect("rebind");
        // a user's file is not
        let file = t.path().join("podman.sock");
        std::fs::write(&file, "mine").expect("w");
        assert!(matches!(bind(&file), Err(ExposeError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&file).expect("r"), "mine");
    }

    #[test]
    fn the_pipe_frames_bytes_and_half_closes_both_ways() {
        let (client, mut user) = UnixStream::pair().expect("pair");
        let (agent_side, mut guest) = UnixStream::pair().expect("pair");
        let t = thread::spawn(move || pipe(client, AgentStream::Unix(agent_side)));
        user.write_all(b"GET /_ping").expect("w");
        user.shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let f = read_frame(&mut guest).expect("read").expect("frame");
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (FrameType::Stdin, &b"GET /_ping"[..])
        );
        let f = read_frame(&mut guest).expect("read").expect("frame");
        assert_eq!(f.kind, FrameType::StdinEnd, "the client's EOF is a marker");
        // the answer still flows after the client's half-close
        write_frame(&mut guest, FrameType::Stdout, b"OK").expect("w");
        write_frame(&mut guest, FrameType::StdoutEnd, &[]).expect("w");
        let mut back = Vec::new();
        user.read_to_end(&mut back).expect("user reads to EOF");
        assert_eq!(back, b"OK");
        t.join().expect("join").expect("pipe");
    }

    #[test]
    fn client_lines_name_the_socket() {
        let l = client_lines(
            "DOCKER_HOST",
            "docker -H unix://{socket}",
            Path::new("/s/docker.sock"),
        );
        assert_eq!(
            l,
            "export DOCKER_HOST=unix:///s/docker.sock   # or: docker -H unix:///s/docker.sock"
        );
    }
}
