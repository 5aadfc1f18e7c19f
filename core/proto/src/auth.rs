//! Connection authentication: every connection proves it holds the VM's secret before the
//! agent reads a request, and the agent proves it holds it too before the host sends one.
//!
//! Why: the agent runs everything as root in the guest, and on the in-kernel vsock transport
//! any local process can connect to any guest CID. The host makes a random per-VM secret
//! ([`Secret`], 32 bytes, a 0600 file handed to QEMU as fw_cfg) and both sides run a
//! challenge/response over it with HMAC-SHA256. The secret itself never crosses the wire.
//!
//! # Exchange (three [`crate::FrameType::Auth`] frames, then the usual request)
//! 1. host -> agent, [`HOST_HELLO_LEN`] bytes: `version (u32 BE) | host nonce | MAC`
//!    with MAC = HMAC(secret, "vcontainer-auth-1 host-hello" | version | host nonce).
//!    The agent checks the MAC (in constant time); anything else (another frame type, a
//!    wrong length, a wrong MAC) makes it close the connection without writing a byte.
//! 2. agent -> host, [`AGENT_REPLY_LEN`] bytes: `version | agent nonce | MAC` with
//!    MAC = HMAC(secret, "vcontainer-auth-1 agent" | version | host nonce | agent nonce).
//!    The host checks it (a stranger answering on the VM's CID learns nothing and gets no
//!    request), then compares versions: the agent sends this even when they differ, and
//!    closes, so a CLI upgraded under a running VM can say "restart the VM".
//! 3. host -> agent, [`HOST_PROOF_LEN`] bytes: MAC = HMAC(secret, "vcontainer-auth-1
//!    host-proof" | host nonce | agent nonce). A replayed step 1 fails here: the agent's
//!    nonce is fresh for each connection.
//!
//! The layout of these frames is frozen across protocol versions (only the version number
//! inside changes), so two versions can always tell each other that they differ.
//!
//! This module only computes and checks bytes; nonces come from the caller (the host and the
//! agent take them from the OS) so that it stays free of I/O.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{read_auth_frame, write_frame, FrameType, ProtoError};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the per-VM secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;
/// Payload of step 1.
pub const HOST_HELLO_LEN: usize = 4 + NONCE_LEN + MAC_LEN;
/// Payload of step 2.
pub const AGENT_REPLY_LEN: usize = 4 + NONCE_LEN + MAC_LEN;
/// Payload of step 3.
pub const HOST_PROOF_LEN: usize = MAC_LEN;

/// Name of the QEMU fw_cfg item holding the secret (`-fw_cfg name=...,file=...`).
pub const FW_CFG_NAME: &str = "opt/vcontainer/secret";

const LABEL_HOST_HELLO: &[u8] = b"vcontainer-auth-1 host-hello";
const LABEL_AGENT: &[u8] = b"vcontainer-auth-1 agent";
const LABEL_HOST_PROOF: &[u8] = b"vcontainer-auth-1 host-proof";

/// Why an authentication step failed. Deliberately coarse: the agent says nothing to the
/// peer anyway, and the host only needs to know that the other side is not its agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the agent secret must be {SECRET_LEN} bytes, got {0}")]
    SecretLength(usize),
    #[error("authentication frame of {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("authentication failed: the peer does not hold this VM's secret")]
    BadMac,
}

/// The per-VM secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Exactly [`SECRET_LEN`] bytes, as read from the secret file or from fw_cfg.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        let array: [u8; SECRET_LEN] = bytes
            .try_into()
            .map_err(|_| AuthError::SecretLength(bytes.len()))?;
        Ok(Self(array))
    }

    /// The raw bytes, for writing the secret file.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail for a 32-byte key
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        for part in parts {
            mac.update(part);
        }
        mac
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` against the MAC of `parts`.
    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), AuthError> {
        self.mac(parts)
            .verify_slice(tag)
            .map_err(|_| AuthError::BadMac)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Step 1 as the host sends it.
pub fn host_hello(secret: &Secret, version: u32, host_nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let version = version.to_be_bytes();
    let tag = secret.tag(&[LABEL_HOST_HELLO, &version, host_nonce]);
    [&version[..], host_nonce, &tag].concat()
}

/// Step 1 as the agent checks it: the host's protocol version and nonce.
pub fn check_host_hello(
    secret: &Secret,
    payload: &[u8],
) -> Result<(u32, [u8; NONCE_LEN]), AuthError> {
    let (version, nonce, tag) = split(payload, HOST_HELLO_LEN)?;
    secret.verify(&[LABEL_HOST_HELLO, &version.to_be_bytes(), &nonce], tag)?;
    Ok((version, nonce))
}

/// Step 2 as the agent sends it.
pub fn agent_reply(
    secret: &Secret,
    version: u32,
    host_nonce: &[u8; NONCE_LEN],
    agent_nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let version = version.to_be_bytes();
    let tag = secret.tag(&[LABEL_AGENT, &version, host_nonce, agent_nonce]);
    [&version[..], agent_nonce, &tag].concat()
}

/// Step 2 as the host checks it: the agent's protocol version and nonce.
pub fn check_agent_reply(
    secret: &Secret,
    host_nonce: &[u8; NONCE_LEN],
    payload: &[u8],
) -> Result<(u32, [u8; NONCE_LEN]), AuthError> {
    let (version, nonce, tag) = split(payload, AGENT_REPLY_LEN)?;
    secret.verify(
        &[LABEL_AGENT, &version.to_be_bytes(), host_nonce, &nonce],
        tag,
    )?;
    Ok((version, nonce))
}

/// Step 3 as the host sends it.
pub fn host_proof(
    secret: &Secret,
    host_nonce: &[u8; NONCE_LEN],
    agent_nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    secret
        .tag(&[LABEL_HOST_PROOF, host_nonce, agent_nonce])
        .to_vec()
}

/// Step 3 as the agent checks it.
pub fn check_host_proof(
    secret: &Secret,
    host_nonce: &[u8; NONCE_LEN],
    agent_nonce: &[u8; NONCE_LEN],
    payload: &[u8],
) -> Result<(), AuthError> {
    if payload.len() != HOST_PROOF_LEN {
        return Err(AuthError::Length {
            got: payload.len(),
            expected: HOST_PROOF_LEN,
        });
    }
    secret.verify(&[LABEL_HOST_PROOF, host_nonce, agent_nonce], payload)
}

/// How the host's side of the exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The agent closed without answering step 1: it does not hold the secret we hold (or it
    /// predates authentication), or it is not up yet.
    #[error("the guest agent closed the connection without answering the authentication")]
    Closed,
    #[error(transparent)]
    Frame(#[from] ProtoError),
    /// The answer does not prove the secret: whatever answered is not this VM's agent.
    #[error("the guest agent's answer does not prove this VM's secret")]
    Auth(#[from] AuthError),
    /// Authenticated, but another protocol version (the agent closes after saying so).
    #[error("host speaks protocol version {host}, guest agent speaks version {agent}")]
    Version { host: u32, agent: u32 },
}

/// The host's side of the whole exchange on a fresh connection (steps 1 to 3), with the
/// caller's fresh random `host_nonce`. On `Ok` the connection is ready for a request.
pub fn client_exchange<S: Read + Write + ?Sized>(
    conn: &mut S,
    secret: &Secret,
    version: u32,
    host_nonce: &[u8; NONCE_LEN],
) -> Result<(), ExchangeError> {
    write_frame(
        conn,
        FrameType::Auth,
        &host_hello(secret, version, host_nonce),
    )?;
    let reply = match read_auth_frame(conn, AGENT_REPLY_LEN) {
        Ok(Some(reply)) => reply,
        Ok(None) | Err(ProtoError::Truncated) => return Err(ExchangeError::Closed),
        Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(ExchangeError::Closed)
        }
        Err(e) => return Err(e.into()),
    };
    let (agent_version, agent_nonce) = check_agent_reply(secret, host_nonce, &reply)?;
    if agent_version != version {
        return Err(ExchangeError::Version {
            host: version,
            agent: agent_version,
        });
    }
    write_frame(
        conn,
        FrameType::Auth,
        &host_proof(secret, host_nonce, &agent_nonce),
    )?;
    Ok(())
}

/// `version | nonce | tag` of a step-1 or step-2 payload.
fn split(payload: &[u8], expected: usize) -> Result<(u32, [u8; NONCE_LEN], &[u8]), AuthError> {
    let length = AuthError::Length {
        got: payload.len(),
        expected,
    };
    if payload.len() != expected {
        return Err(length);
    }
    let (version, rest) = payload.split_at(4);
    let (nonce, tag) = rest.split_at(NONCE_LEN);
    let version: [u8; 4] = version.try_into().map_err(|_| length.clone())?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| length)?;
    Ok((u32::from_be_bytes(version), nonce, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes(&[byte; SECRET_LEN]).expect("32 bytes")
    }

    #[test]
    fn both_sides_with_the_same_secret_agree() {
        let s = secret(7);
        let (hn, an) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let hello = host_hello(&s, 5, &hn);
        assert_eq!(hello.len(), HOST_HELLO_LEN);
        assert_eq!(check_host_hello(&s, &hello), Ok((5, hn)));
        let reply = agent_reply(&s, 6, &hn, &an);
        assert_eq!(reply.len(), AGENT_REPLY_LEN);
        assert_eq!(check_agent_reply(&s, &hn, &reply), Ok((6, an)));
        let proof = host_proof(&s, &hn, &an);
        assert_eq!(check_host_proof(&s, &hn, &an, &proof), Ok(()));
    }

    #[test]
    fn another_secret_fails_every_step() {
        let (good, bad) = (secret(7), secret(8));
        let (hn, an) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let hello = host_hello(&bad, 1, &hn);
        assert_eq!(check_host_hello(&good, &hello), Err(AuthError::BadMac));
        let reply = agent_reply(&bad, 1, &hn, &an);
        assert_eq!(
            check_agent_reply(&good, &hn, &reply),
            Err(AuthError::BadMac)
        );
        let proof = host_proof(&bad, &hn, &an);
        assert_eq!(
            check_host_proof(&good, &hn, &an, &proof),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn tampering_or_replaying_is_caught() {
        let s = secret(7);
        let hn = [1u8; NONCE_LEN];
        // the version is covered by the MAC: a downgrade is not possible
        let mut hello = host_hello(&s, 1, &hn);
        hello[3] ^= 1;
        assert_eq!(check_host_hello(&s, &hello), Err(AuthError::BadMac));
        // a reply made for another host nonce (replayed) is refused
        let reply = agent_reply(&s, 1, &[9u8; NONCE_LEN], &[2u8; NONCE_LEN]);
        assert_eq!(check_agent_reply(&s, &hn, &reply), Err(AuthError::BadMac));
        // a proof made for another agent nonce (a replayed connection) is refused
        let proof = host_proof(&s, &hn, &[3u8; NONCE_LEN]);
        assert_eq!(
            check_host_proof(&s, &hn, &[4u8; NONCE_LEN], &proof),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let s = secret(7);
        for len in [0, 1, 4, 36, HOST_HELLO_LEN - 1, HOST_HELLO_LEN + 1] {
            let payload = vec![0u8; len];
            assert!(matches!(
                check_host_hello(&s, &payload),
                Err(AuthError::Length { .. })
            ));
            assert!(matches!(
                check_agent_reply(&s, &[0; NONCE_LEN], &payload),
                Err(AuthError::Length { .. })
            ));
        }
        assert!(matches!(
            check_host_proof(&s, &[0; NONCE_LEN], &[0; NONCE_LEN], &[0; 31]),
            Err(AuthError::Length { .. })
        ));
        assert_eq!(
            Secret::from_bytes(&[0; 31]),
            Err(AuthError::SecretLength(31))
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", secret(0xab));
        assert!(!text.contains("171") && !text.contains("ab"), "{text}");
    }
}
