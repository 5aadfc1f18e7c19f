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
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use vcontainer_proto::auth::Secret;
use vcontainer_proto::{read_frame, write_frame, FrameType, AGENT_VSOCK_PORT, MAX_PAYLOAD};

use super::instance;
use super::transport::{AgentStream, Endpoint};
use crate::agent_client;

pub use super::config::Expose;

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
    /// One agent connection made and authenticated ahead of the next client (see
    /// [`Relay::connect_guest_fast`]).
    pub spare: Arc<Mutex<Option<AgentStream>>>,
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
        pipe(client, self.connect_guest_fast()?)
    }

    /// [`Relay::connect_guest`], but starting from the spare connection when there is one,
    /// and making the next spare in the background. Why: the docker CLI opens a new
    /// connection for nearly every request, and the vsock connect plus the authentication
    /// handshake are several round trips to the guest (most of the relay's cost per
    /// request under emulation, docs/engine-api.md). An authenticated agent connection
    /// waits for its request without a timeout, so it can be made early; the engine's
    /// socket itself is not (its server may close a connection that sends nothing).
    pub fn connect_guest_fast(&self) -> Result<AgentStream, String> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.refill();
        if let Some(agent) = spare {
            match agent_client::connect_socket(agent, &self.guest_socket) {
                Ok(a) => return Ok(a),
                Err(e) => tracing::debug!("the spare agent connection failed: {e}"),
            }
        }
        self.connect_guest()
    }

    /// Makes a spare agent connection in the background, unless one is there already.
    pub fn refill(&self) {
        let relay = self.clone();
        let _ = thread::Builder::new()
            .name("engine-spare".into())
            .spawn(move || {
                if relay.spare.lock().is_ok_and(|s| s.is_some()) {
                    return;
                }
                let Ok(agent) = relay.endpoint.connect(
                    AGENT_VSOCK_PORT,
                    Duration::from_secs(10),
                    &relay.secret,
                ) else {
                    return;
                };
                let mut spare = relay.spare.lock().unwrap_or_else(PoisonError::into_inner);
                if spare.is_none() {
                    *spare = Some(agent);
                }
            });
    }

    /// A new agent connection that now carries the engine socket's bytes in
    /// `Stdin`/`Stdout` frames (also used by the events watcher, `vm::engine_events`).
    pub fn connect_guest(&self) -> Result<AgentStream, String> {
        let agent = self
            .endpoint
            .connect(AGENT_VSOCK_PORT, Duration::from_secs(10), &self.secret)
            .map_err(|e| e.to_string())?;
        agent_client::connect_socket(agent, &self.guest_socket)
            .map_err(|e| format!("{}: {e}", self.guest_socket))
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

/// The plugin's words about its engine API that the core prints (from `EngineApi`).
#[derive(Debug, Clone, Copy)]
pub struct ApiWords<'a> {
    pub host_socket_name: &'a str,
    pub client_env: &'a str,
    pub client_hint: &'a str,
}

/// `doctor`'s line on the engine API of the memres VM in `state_dir`: the line to use
/// while it is exposed, else how to expose it.
pub fn doctor_line(tool: &str, state_dir: Option<&Path>, words: ApiWords<'_>) -> String {
    if words.host_socket_name.is_empty() {
        return "[ok  ] engine API: this runtime has none to expose".to_string();
    }
    let running = state_dir.and_then(instance::Instance::find);
    match running.as_ref().map(|i| &i.record.expose) {
        Some(Some(e)) => format!(
            "[ok  ] engine API: {}",
            client_lines(words.client_env, words.client_hint, &e.host_socket)
        ),
        Some(None) => format!(
            "[ok  ] engine API: not exposed (the memres VM runs without it); \
             `{tool} memres restart --expose` serves it for {}",
            words.client_env
        ),
        None => {
            let at = state_dir
                .map(|d| format!(" at {}", d.join(words.host_socket_name).display()))
                .unwrap_or_default();
            format!(
                "[ok  ] engine API: not exposed; `{tool} vexpose` (= `{tool} memres start --expose`) \
                 serves it{at} for {}",
                words.client_env
            )
        }
    }
}

/// The argv of the plugin's `context_create` template for `name` and `host_socket`: split
/// on whitespace first, then each word filled in, so a path with spaces stays one word.
/// None when the template is empty.
pub fn context_argv(template: &str, name: &str, host_socket: &Path) -> Option<Vec<String>> {
    let socket = host_socket.display().to_string();
    let argv: Vec<String> = template
        .split_whitespace()
        .map(|w| w.replace("{name}", name).replace("{socket}", &socket))
        .collect();
    (!argv.is_empty()).then_some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_argv_keeps_a_spaced_path_in_one_word() {
        let argv = context_argv(
            "docker context create {name} --docker host=unix://{socket}",
            "vcontainer-x86_64",
            Path::new("/home/a b/.vdkr/x86_64/docker.sock"),
        )
        .expect("argv");
        assert_eq!(
            argv,
            [
                "docker",
                "context",
                "create",
                "vcontainer-x86_64",
                "--docker",
                "host=unix:///home/a b/.vdkr/x86_64/docker.sock"
            ]
        );
        assert!(context_argv("  ", "n", Path::new("/s")).is_none());
    }

    #[test]
    fn doctor_says_how_to_expose_when_no_vm_runs() {
        let t = tempfile::tempdir().expect("tmp");
        let words = ApiWords {
            host_socket_name: "docker.sock",
            client_env: "DOCKER_HOST",
            client_hint: "docker -H unix://{socket}",
        };
        let line = doctor_line("vdkr", Some(t.path()), words);
        assert!(line.contains("`vdkr vexpose`"), "{line}");
        assert!(line.contains("docker.sock"), "{line}");
        let none = doctor_line(
            "vdkr",
            None,
            ApiWords {
                host_socket_name: "",
                ..words
            },
        );
        assert!(none.contains("none to expose"), "{none}");
    }

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
