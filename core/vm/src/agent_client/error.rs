//! Errors of agent operations.

use std::io;

use vcontainer_proto::{ErrorKind, ProtoError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection closed (or failed) before the operation's final answer: the guest
    /// agent or the whole VM is gone.
    #[error("the connection to the guest agent was lost {during}{}", source_text(.source))]
    ConnectionLost {
        during: &'static str,
        #[source]
        source: Option<io::Error>,
    },
    #[error(
        "protocol version mismatch: this vcontainer speaks version {host}, the guest agent \
         version {agent}; a running VM started by another vcontainer version must be \
         restarted (`memres stop`, then run the command again); otherwise rebuild the guest \
         blobs so that both match"
    )]
    VersionMismatch { host: u32, agent: u32 },
    /// The agent closed the connection instead of answering our proof of the secret.
    #[error(
        "the guest agent refused this connection: it does not accept this VM's secret (a VM \
         started by an older vcontainer, or guest blobs built without agent authentication); \
         restart the VM (`memres stop`) or rebuild the guest blobs"
    )]
    AuthRefused,
    /// Something answered that does not hold the VM's secret: not our agent.
    #[error(
        "the peer on the VM's vsock address does not prove the VM's secret: refusing to talk to it"
    )]
    AuthBadAnswer,
    /// The agent answered with an error value.
    #[error("guest agent: {message}")]
    Agent { kind: ErrorKind, message: String },
    /// The agent sent something that is not valid protocol.
    #[error("invalid data from the guest agent: {0}")]
    Protocol(ProtoError),
    /// A local source or sink (the user's stdin, stdout, a file) failed.
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("unexpected answer from the guest agent: {0}")]
    Unexpected(String),
}

fn source_text(source: &Option<io::Error>) -> String {
    source
        .as_ref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default()
}

impl ClientError {
    /// True when the guest went away: the caller should report the VM as dead.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ConnectionLost { .. })
    }

    /// Classify a failure to read the next frame.
    pub(crate) fn reading(during: &'static str, e: ProtoError) -> Self {
        match e {
            ProtoError::Io(source) => Self::ConnectionLost {
                during,
                source: Some(source),
            },
            ProtoError::Truncated => Self::ConnectionLost {
                during,
                source: None,
            },
            other => Self::Protocol(other),
        }
    }

    /// Classify a failure to send a frame.
    pub(crate) fn writing(during: &'static str, e: ProtoError) -> Self {
        match e {
            ProtoError::Io(source) => Self::ConnectionLost {
                during,
                source: Some(source),
            },
            other => Self::Protocol(other),
        }
    }

    pub(crate) fn closed(during: &'static str) -> Self {
        Self::ConnectionLost {
            during,
            source: None,
        }
    }
}
