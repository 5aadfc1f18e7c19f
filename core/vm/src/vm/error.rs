//! Errors of the VM layer. Each says what happened and what to do next, because the CLI prints
//! them as they are.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("guest blobs for {arch}/{runtime} not found: {detail}\n  build them with `make guest`, or point --blob-dir / VCONTAINER_BLOB_DIR at a blob dir")]
    BlobsMissing {
        arch: String,
        runtime: String,
        detail: String,
    },

    #[error("{program} not found on PATH; install QEMU (Debian: apt-get install qemu-system-x86 qemu-system-arm)")]
    QemuNotFound { program: String },

    #[error("vhost-device-vsock not found on PATH; it is needed for the hybrid vsock transport (install it, or use a host with /dev/vhost-vsock)")]
    VhostDeviceVsockNotFound,

    #[error("transport {0:?} is not available: {1}")]
    TransportUnavailable(String, String),

    #[error("cannot create the state disk {path}: {detail}")]
    StateDisk { path: PathBuf, detail: String },

    #[error("the VM exited during boot ({status}); last console lines:\n{tail}\n  full log: {console_log}")]
    BootExited {
        status: String,
        tail: String,
        console_log: PathBuf,
    },

    #[error("the guest agent did not answer within {secs} s; last console lines:\n{tail}\n  full log: {console_log}")]
    BootTimeout {
        secs: u64,
        tail: String,
        console_log: PathBuf,
    },

    /// vhost-device-vsock 0.3.0 lost its vring worker during the guest's device set-up (see
    /// vm/vhost_gate.rs): nothing ran in the guest yet, so a fresh boot is safe.
    #[error("vhost-device-vsock (pid {pid}) lost its vring_worker thread: it is alive but will never answer a CONNECT again (a vhost-device-vsock bug hit by a host connection while the guest set up the device; see vm/vhost_gate.rs)\n{diagnostics}")]
    VsockBackendLost { pid: i32, diagnostics: String },

    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),

    #[error("the guest agent refused the connection: {0}")]
    Hello(String),

    #[error("the VM for {state_dir} is not running (start it with `memres start`)")]
    NotRunning { state_dir: PathBuf },

    #[error("the VM stopped: {detail}; see {console_log}")]
    VmGone {
        detail: String,
        console_log: PathBuf,
    },

    /// The connection was made but the agent authentication failed (wrong or missing
    /// secret, another protocol version).
    #[error("{0}")]
    Auth(crate::agent_client::ClientError),

    #[error("cannot connect to the guest agent on port {port}: {detail}")]
    Connect { port: u32, detail: String },

    #[error("the VM supervisor failed: {0}")]
    Supervisor(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A state, socket or plugin path others could write or replace.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),

    #[error("{0}")]
    Other(String),
}

impl VmError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        VmError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;

/// Why a snapshot could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the migration {0}")]
    Migration(String),
    #[error("the restored guest: {0}")]
    Resume(String),
    #[error(
        "the guest's agent ({agent_version}) does not serve Resume (no `resume` capability in \
         its Hello): a guest built with an older agent cannot be restored, so it is not saved"
    )]
    AgentWithoutResume { agent_version: String },
    #[error("no cache dir: neither XDG_CACHE_HOME nor HOME is an absolute path")]
    NoCacheDir,
}
