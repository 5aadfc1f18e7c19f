//! The agent's half of connection authentication (vcontainer_proto::auth): a connection is
//! served only after it proved it holds this VM's secret, and speaks our protocol version.
//!
//! Why here and not in each request handler: nothing of a connection is read as a request,
//! and nothing is written back, before this succeeded. A peer without the secret gets the
//! connection closed and no byte from us.

use std::io::{Read, Write};
use std::time::Duration;

use vcontainer_proto::auth::{self, Secret, HOST_HELLO_LEN, HOST_PROOF_LEN, NONCE_LEN};
use vcontainer_proto::{read_auth_frame, write_frame, FrameType, PROTOCOL_VERSION};

use crate::listener::AgentStream;

/// How long a connection may take to authenticate before it is dropped.
const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a connection was not served (for the guest's log only; the peer is told nothing).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "this agent has no secret (the host did not pass opt/vcontainer/secret): serving nobody"
    )]
    NoSecret,
    #[error("closed before authenticating")]
    Closed,
    #[error("{0}")]
    Frame(#[from] vcontainer_proto::ProtoError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("no randomness for a nonce: {0}")]
    Random(String),
    #[error("authenticated client speaks protocol version {host}, this agent {agent}: told it and closed")]
    Version { host: u32, agent: u32 },
    #[error("cannot set the authentication timeout: {0}")]
    Timeout(std::io::Error),
}

/// Run the agent's side of the exchange on a fresh connection. `Ok(())`: serve it.
pub fn accept<S: AgentStream>(
    secret: Option<&Secret>,
    stream: &S,
    reader: &mut impl Read,
    writer: &mut impl Write,
) -> Result<(), Refused> {
    let secret = secret.ok_or(Refused::NoSecret)?;
    stream
        .set_read_timeout(Some(AUTH_TIMEOUT))
        .map_err(Refused::Timeout)?;
    let hello = read_auth_frame(reader, HOST_HELLO_LEN)?.ok_or(Refused::Closed)?;
    let (host_version, host_nonce) = auth::check_host_hello(secret, &hello)?;
    let agent_nonce = nonce()?;
    let reply = auth::agent_reply(secret, PROTOCOL_VERSION, &host_nonce, &agent_nonce);
    write_frame(writer, FrameType::Auth, &reply)?;
    if host_version != PROTOCOL_VERSION {
        return Err(Refused::Version {
            host: host_version,
            agent: PROTOCOL_VERSION,
        });
    }
    let proof = read_auth_frame(reader, HOST_PROOF_LEN)?.ok_or(Refused::Closed)?;
    auth::check_host_proof(secret, &host_nonce, &agent_nonce, &proof)?;
    stream.set_read_timeout(None).map_err(Refused::Timeout)?;
    Ok(())
}

fn nonce() -> Result<[u8; NONCE_LEN], Refused> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Refused::Random(e.to_string()))?;
    Ok(nonce)
}
