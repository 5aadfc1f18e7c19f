//! The host's half of connection authentication: run once on every new connection, before
//! any operation of this module (see vcontainer_proto::auth and docs/security.md).

use vcontainer_proto::auth::{self, ExchangeError, Secret, NONCE_LEN};
use vcontainer_proto::PROTOCOL_VERSION;

use super::{AgentConn, ClientError};

/// Prove to the agent that we hold the VM's secret, check that it holds it too and that it
/// speaks our protocol version. The connection is then ready for one operation.
pub fn authenticate<C: AgentConn + ?Sized>(
    conn: &mut C,
    secret: &Secret,
) -> Result<(), ClientError> {
    authenticate_as(conn, secret, PROTOCOL_VERSION)
}

/// [`authenticate`] claiming another protocol version (tests of the version check).
pub(crate) fn authenticate_as<C: AgentConn + ?Sized>(
    conn: &mut C,
    secret: &Secret,
    version: u32,
) -> Result<(), ClientError> {
    const DURING: &str = "during authentication";
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| ClientError::Local {
        context: "no randomness for the authentication nonce".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    auth::client_exchange(conn, secret, version, &nonce).map_err(|e| match e {
        ExchangeError::Closed => ClientError::AuthRefused,
        ExchangeError::Auth(_) => ClientError::AuthBadAnswer,
        ExchangeError::Version { host, agent } => ClientError::VersionMismatch { host, agent },
        ExchangeError::Frame(e) => ClientError::reading(DURING, e),
    })
}
