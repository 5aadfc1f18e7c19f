//! Typed control messages, carried as JSON in control frames.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// Run one program in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments, passed to execve unchanged (no shell in between); `argv[0]`
    /// is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment, on top of the agent's fixed defaults (PATH, HOME, TERM).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; `/` when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run on a pseudo terminal of this size (stdout and stderr are then one stream).
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// The host sends stdin frames; otherwise the program's stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Programs (argv each) the agent runs in turn once the program has ended, when the host
    /// is gone by then (its connection closed before the exit status could reach it: a
    /// client killed mid-command). A host that stays runs its follow-up steps itself; these
    /// are their safety net, so a killed client leaves nothing behind (podman's `run --rm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub if_host_lost: Vec<Vec<String>>,
}

impl ExecRequest {
    /// A plain request: no PTY, no stdin, no extra environment, cwd `/`.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            tty: None,
            stdin: false,
            if_host_lost: Vec::new(),
        }
    }
}

/// Start a long-running service (e.g. containerd, dockerd) and wait until it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStartRequest {
    /// Name used by `ServiceStatus` and in logs; starting a running name again is a no-op.
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Program run repeatedly until it exits 0 (= ready); empty means "ready once started".
    #[serde(default)]
    pub probe: Vec<String>,
    /// When present, readiness is checked on this socket by the agent itself (every few
    /// milliseconds) instead of by running `probe`: a process per try costs seconds under
    /// TCG. Agents that predate it ignore the field and run `probe`, so hosts send both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_socket: Option<SocketProbe>,
    /// How long the probe may keep failing before the start is reported as failed.
    pub timeout_secs: u64,
}

/// Readiness as seen on a service's Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketProbe {
    /// Absolute path of the socket in the guest; ready once it accepts a connection...
    pub path: String,
    /// ...and, when set, once `GET <http_path>` over it answers with a 2xx status. For
    /// daemons that listen before they serve (dockerd opens its socket first, then
    /// initialises for seconds): a bare connect would say "ready" too early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
}

/// What a guest restored from a snapshot learns from the host before it serves commands
/// (see docs/snapshot.md): the saved guest woke up with the clock, entropy and storage of the
/// moment it was saved, and this makes it the host's fresh run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The host's wall clock, nanoseconds since the Unix epoch, when the request was sent.
    pub unix_time_ns: u64,
    /// Fresh random bytes for the guest's entropy pool (the saved pool is shared by every
    /// restore of one snapshot).
    pub entropy: Vec<u8>,
    /// The state disk hot-plugged for this run (mounted on the boot's `vcontainer.storage`),
    /// None for a run without one (the storage is then a tmpfs, as with `vcontainer.state=none`).
    #[serde(default)]
    pub state_device: Option<String>,
}

/// Host -> guest control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol_version: u32,
        /// Free text naming the client (e.g. "vcontainer 0.1.0"), for the guest's log.
        client: String,
    },
    Exec(ExecRequest),
    /// Deliver a signal (Linux numbering) to the running program's process group.
    Signal {
        signal: i32,
    },
    /// New PTY size; the program gets SIGWINCH.
    Resize(WindowSize),
    /// Unpack the tar stream that follows into the guest directory `dest` (created if missing).
    PushTar {
        dest: String,
    },
    /// Send `path` back as a tar stream. Entries are named `<basename of path>/...` (like
    /// `tar -C dirname basename`), or relative to `path` itself with `contents_only`.
    PullTar {
        path: String,
        #[serde(default)]
        contents_only: bool,
    },
    ServiceStart(ServiceStartRequest),
    ServiceStatus {
        name: String,
    },
    /// Stop services, sync and unmount the state disk, answer `Done`, then power off.
    Shutdown,
    /// Mount the virtio-fs device tagged `tag` (just hot-plugged by the host) on
    /// `SHARES_DIR/<tag>`, read-only when asked, waiting a while for the device to appear;
    /// `Done` once mounted (or when it already is).
    MountShare {
        tag: String,
        #[serde(default)]
        read_only: bool,
    },
    /// Connect to the guest's Unix socket `path` (the engine's API); after `Done` the
    /// host sends the bytes for it as `Stdin` frames (`StdinEnd`: half-close) and gets its
    /// answers as `Stdout` frames (`StdoutEnd`: it closed), until both ends are done.
    Connect {
        path: String,
    },
    /// Only to an agent booted with `vcontainer.snapshot=1`, once after each restore: set the
    /// clock, reseed entropy, mount the run's storage (or thaw it, after a `Suspend`);
    /// answered `Done`.
    Resume(ResumeRequest),
    /// Only to an agent that advertises [`CAPABILITY_SUSPEND`], when the host's command is
    /// done and it would save the guest with its storage (docs/snapshot.md, "Suspended
    /// VMs"): answered `Done` when services run, nothing else does (no container), and the
    /// state disk is synced and frozen, so the disk alone is complete and consistent
    /// whatever happens to the saved guest; the next `Resume` thaws it. Otherwise an error
    /// (`Busy`: what still runs) and nothing changed.
    Suspend(SuspendRequest),
}

/// What a `Suspend` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendRequest {
    /// Refuse when no service runs: the host's save is slow (on aarch64 the guest takes ~2 s
    /// to release the vsock device), so a guest without an engine to keep is cheaper to
    /// restore from the shared snapshot. False: what a guest without services keeps (the
    /// runtime's per-boot state) is worth the save.
    #[serde(default)]
    pub only_with_services: bool,
}

/// How a program ended: a value, never parsed from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    /// Killed by this signal (Linux numbering).
    Signal(i32),
}

impl ExitStatus {
    /// The status as a shell (and docker) reports it: the code, or 128 + signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(sig) => crate::exit::killed_by(sig),
        }
    }

    pub fn success(self) -> bool {
        self == Self::Code(crate::exit::OK)
    }
}

/// Classes of agent-side failures, so the host can choose an exit code and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    VersionMismatch,
    /// The request was malformed or not valid in this state of the conversation.
    BadRequest,
    NotFound,
    PermissionDenied,
    /// A tar entry would land outside the target directory.
    PathEscape,
    ServiceFailed,
    Timeout,
    Io,
    Internal,
    /// The guest is not idle: something the request would disturb still runs.
    Busy,
    /// A kind this side does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// What the agent says about itself in answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    pub protocol_version: u32,
    pub agent_version: String,
    /// `vcontainer.runtime=` from the kernel command line ("" when not set).
    pub runtime: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Problems found during boot that did not stop the agent (e.g. the state disk failed
    /// fsck and runtime storage is on tmpfs), for the host to show.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Optional requests this agent serves, by name (e.g. [`CAPABILITY_RESUME`]). Absent from
    /// agents that predate the field (serde's default: none), and hosts that predate it skip
    /// it, so the protocol version stays the same: a capability is something a host may ask
    /// for, never something it must understand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// In `HelloOk::capabilities`: the agent was booted with `vcontainer.snapshot=1` and will
/// answer [`Request::Resume`] after a restore, so its guest may be saved as a snapshot.
pub const CAPABILITY_RESUME: &str = "resume";

/// In `HelloOk::capabilities`: a guest restored from a snapshot that serves
/// [`Request::Suspend`], so it may be saved again with its storage when a command is done.
pub const CAPABILITY_SUSPEND: &str = "suspend";

impl HelloOk {
    /// Whether the agent says it serves the optional request named `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// Guest -> host control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    HelloOk(HelloOk),
    /// The program is running with this guest pid.
    Started {
        pid: u32,
    },
    Exited {
        status: ExitStatus,
    },
    /// A request without a richer answer completed (push, pull, service start, shutdown).
    Done,
    ServiceState {
        name: String,
        running: bool,
        pid: Option<u32>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error {
            kind,
            message: message.into(),
        }
    }
}

/// Refuse to talk across protocol versions, naming both.
pub fn check_version(host: u32, agent: u32) -> Result<(), ProtoError> {
    if host == agent {
        Ok(())
    } else {
        Err(ProtoError::VersionMismatch { host, agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    #[test]
    fn capabilities_are_optional_both_ways() {
        // an agent that predates the field: no capabilities
        let old = r#"{"type":"hello_ok","protocol_version":3,"agent_version":"0.1.0","runtime":"podman","kernel":"6.1","warnings":[]}"#;
        let Response::HelloOk(ok) = serde_json::from_str::<Response>(old).expect("old") else {
            panic!("not HelloOk");
        };
        assert!(ok.capabilities.is_empty());
        assert!(!ok.has_capability(CAPABILITY_RESUME));
        // a new agent's answer keeps what an old host reads, and round-trips
        let new = Response::HelloOk(HelloOk {
            capabilities: vec![CAPABILITY_RESUME.into()],
            ..ok
        });
        let json = serde_json::to_string(&new).expect("encode");
        assert!(json.contains(r#""capabilities":["resume"]"#), "{json}");
        let Response::HelloOk(back) = serde_json::from_str::<Response>(&json).expect("new") else {
            panic!("not HelloOk");
        };
        assert!(back.has_capability(CAPABILITY_RESUME));
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        assert!(check_version(PROTOCOL_VERSION, PROTOCOL_VERSION).is_ok());
        let err = check_version(1, 2).expect_err("mismatch");
        let text = err.to_string();
        assert!(text.contains("host speaks version 1"), "{text}");
        assert!(text.contains("agent speaks version 2"), "{text}");
    }

    #[test]
    fn every_request_round_trips() {
        let requests = vec![
            Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                client: "test".into(),
            },
            Request::Exec(ExecRequest {
                argv: vec!["a b".into(), "c'd\"e;f".into()],
                env: vec![("K".into(), "v=1".into())],
                cwd: Some("/tmp".into()),
                tty: Some(WindowSize { rows: 24, cols: 80 }),
                stdin: true,
                if_host_lost: vec![vec!["sh".into(), "-c".into(), "rm x".into()]],
            }),
            Request::Suspend(SuspendRequest {
                only_with_services: true,
            }),
            Request::Signal { signal: 15 },
            Request::Resize(WindowSize { rows: 1, cols: 2 }),
            Request::PushTar { dest: "/x".into() },
            Request::PullTar {
                path: "/y".into(),
                contents_only: true,
            },
            Request::ServiceStart(ServiceStartRequest {
                name: "dockerd".into(),
                argv: vec!["dockerd".into()],
                env: vec![],
                probe: vec!["docker".into(), "info".into()],
                probe_socket: Some(SocketProbe {
                    path: "/var/run/docker.sock".into(),
                    http_path: Some("/_ping".into()),
                }),
                timeout_secs: 60,
            }),
            Request::ServiceStatus { name: "x".into() },
            Request::Shutdown,
        ];
        for req in requests {
            let json = serde_json::to_vec(&req).expect("ser");
            let back: Request = serde_json::from_slice(&json).expect("de");
            assert_eq!(back, req);
        }
    }

    #[test]
    fn service_start_stays_compatible_both_ways() {
        // from a host that predates socket probes: no probe_socket
        let old: Request = serde_json::from_str(
            r#"{"type":"service_start","name":"c","argv":["c"],"probe":["p"],"timeout_secs":5}"#,
        )
        .expect("old request");
        let Request::ServiceStart(old) = old else {
            panic!("not a service start: {old:?}");
        };
        assert_eq!(old.probe_socket, None);
        // to an agent that predates them: the field is extra, and extra fields are ignored
        let json = serde_json::to_value(Request::ServiceStart(ServiceStartRequest {
            probe_socket: Some(SocketProbe {
                path: "/run/s.sock".into(),
                http_path: None,
            }),
            ..old.clone()
        }))
        .expect("ser");
        assert_eq!(json["probe_socket"]["path"], "/run/s.sock");
        assert!(json["probe_socket"].get("http_path").is_none(), "{json}");
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OldRequest {
            ServiceStart {
                probe: Vec<String>,
                timeout_secs: u64,
            },
        }
        let OldRequest::ServiceStart {
            probe,
            timeout_secs,
        } = serde_json::from_value(json).expect("an old agent reads it");
        assert_eq!((probe, timeout_secs), (vec!["p".to_string()], 5));
    }

    #[test]
    fn unknown_error_kind_from_a_newer_peer_is_kept_as_unknown() {
        let resp: Response =
            serde_json::from_str(r#"{"type":"error","kind":"brand_new","message":"m"}"#)
                .expect("de");
        assert_eq!(resp, Response::error(ErrorKind::Unknown, "m"));
    }

    #[test]
    fn signal_exit_maps_to_128_plus_n() {
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::Code(7).shell_code(), 7);
    }
}
