//! Host<->guest wire protocol of vcontainer.
//!
//! The host CLI and the guest agent share this crate and nothing else, so that both sides agree
//! on the bytes by construction. It only encodes and decodes: who reads when, timeouts and
//! threads are the business of the agent and of the host client.
//!
//! # Wire format
//! Every message is one [`Frame`]: a 4-byte big-endian payload length, a 1-byte
//! [`FrameType`], then the payload. Payloads are at most [`MAX_PAYLOAD`] bytes; a longer length
//! is rejected before anything is allocated, because the peer (a guest, or a host) is not
//! trusted to be sane. Control frames carry a JSON [`Request`] or [`Response`]; data frames
//! carry raw stdin/stdout/stderr/tar bytes; end-of-stream frames have an empty payload.
//!
//! # Authentication (every connection, before anything else)
//! Three `Auth` frames prove that both ends hold the VM's secret and carry both protocol
//! versions; see [`auth`]. A peer that fails gets the connection closed and nothing else.
//!
//! # Conversations (one connection per operation, after authentication)
//! - `Hello` -> `HelloOk` | `Error{VersionMismatch}`. `HelloOk::capabilities` names the optional
//!   requests the agent serves (`resume`), so a host asks only for what the agent has.
//! - `Exec` (+ `Stdin`* `StdinEnd`, `Signal`, `Resize` at any time) -> [`Response::Started`]
//!   (absent when the program could not be started), `Stdout`/`Stderr` chunks as produced,
//!   `StdoutEnd`/`StderrEnd`, then exactly one `Exited`. A program that is not found or not
//!   executable ends with `Exited` 127 / 126 and a message on stderr, like a shell.
//! - `PushTar` + `Tar`* + `TarEnd` -> `Done` | `Error`.
//! - `PullTar` -> `Tar`* `TarEnd` `Done` | `Error` (possibly after some `Tar` frames).
//! - `ServiceStart` -> `Done` (service ready) | `Error`; `ServiceStatus` -> `ServiceState`.
//! - `Shutdown` -> `Done` (after services are stopped, disks synced and unmounted), then the
//!   guest powers off.

pub mod auth;
pub mod exit;
mod frame;
mod message;
pub mod redact;

pub use frame::{
    decode_frame, encode_frame, read_auth_frame, read_frame, write_frame, Frame, FrameType,
    ProtoError, HEADER_LEN, MAX_PAYLOAD,
};
pub use message::{
    check_version, ErrorKind, ExecRequest, ExitStatus, HelloOk, Request, Response, ResumeRequest,
    ServiceStartRequest, SocketProbe, SuspendRequest, WindowSize, CAPABILITY_RESUME,
    CAPABILITY_SUSPEND,
};

/// Version of this protocol. Bump it on any incompatible change of frames or messages; host
/// and agent refuse to talk across versions (see [`check_version`]).
/// Version 2: connections open with the authentication exchange of [`auth`].
/// Version 3: `MountShare` (volume shares hot-plugged into a running VM); the host's `/` is
/// no longer shared at boot; `Connect` (the engine API relayed to the host); `Resume` (a guest
/// restored from a snapshot).
pub const PROTOCOL_VERSION: u32 = 3;

/// Where the agent mounts a volume share tagged `<tag>`: `<SHARES_DIR>/<tag>` (see
/// [`Request::MountShare`]). Under /run, which containers never see unless a volume binds a
/// directory of it.
pub const SHARES_DIR: &str = "/run/vcontainer/shares";

/// Whether `tag` may name a volume share: 1-36 bytes of `[a-z0-9-]` (virtio-fs tags are at
/// most 36 bytes), so it is also a safe single path component under [`SHARES_DIR`].
pub fn valid_share_tag(tag: &str) -> bool {
    (1..=36).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The vsock port the agent listens on unless `vcontainer.port=` says otherwise.
pub const AGENT_VSOCK_PORT: u32 = 1024;

#[cfg(test)]
mod share_tag_tests {
    use super::valid_share_tag;

    #[test]
    fn share_tags_are_short_plain_path_components() {
        assert!(valid_share_tag("vcvol0"));
        assert!(valid_share_tag("a-1"));
        for bad in ["", "..", "a/b", "A", "x y", &"a".repeat(37)] {
            assert!(!valid_share_tag(bad), "{bad:?}");
        }
    }
}
