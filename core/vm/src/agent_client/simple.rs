//! Request/answer operations: hello, services, volume shares, shutdown.

use std::io::{Read, Write};

use vcontainer_proto::{
    read_frame, write_frame, ErrorKind, Frame, FrameType, HelloOk, Request, Response,
    ServiceStartRequest, PROTOCOL_VERSION,
};

use super::{AgentConn, ClientError};

/// Send one request as a control frame.
pub(crate) fn send_request(
    conn: &mut (impl Write + ?Sized),
    request: &Request,
    during: &'static str,
) -> Result<(), ClientError> {
    let frame = Frame::control(request).map_err(ClientError::Protocol)?;
    write_frame(conn, FrameType::Control, &frame.payload)
        .map_err(|e| ClientError::writing(during, e))
}

/// Read frames until a control frame arrives and return its response.
pub(crate) fn read_response(
    conn: &mut (impl Read + ?Sized),
    during: &'static str,
) -> Result<Response, ClientError> {
    loop {
        let frame = read_frame(conn)
            .map_err(|e| ClientError::reading(during, e))?
            .ok_or_else(|| ClientError::closed(during))?;
        if frame.kind == FrameType::Control {
            return frame.parse().map_err(ClientError::Protocol);
        }
    }
}

/// An `Error` response as a client error, anything else as unexpected.
pub(crate) fn unexpected(response: Response) -> ClientError {
    match response {
        Response::Error { kind, message } => ClientError::Agent { kind, message },
        other => ClientError::Unexpected(format!("{other:?}")),
    }
}

/// Greet the agent and check that it speaks our protocol version. The VM layer uses a
/// successful hello as the only sign that a guest has booted.
pub fn hello<C: AgentConn>(mut conn: C) -> Result<HelloOk, ClientError> {
    const DURING: &str = "during hello";
    let request = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client: format!("vcontainer {}", env!("CARGO_PKG_VERSION")),
    };
    send_request(&mut conn, &request, DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::HelloOk(ok) if ok.protocol_version == PROTOCOL_VERSION => Ok(ok),
        Response::HelloOk(ok) => Err(ClientError::VersionMismatch {
            host: PROTOCOL_VERSION,
            agent: ok.protocol_version,
        }),
        Response::Error {
            kind: ErrorKind::VersionMismatch,
            message,
        } => Err(ClientError::Agent {
            kind: ErrorKind::VersionMismatch,
            message,
        }),
        other => Err(unexpected(other)),
    }
}

/// Start a service in the guest and wait until its probe succeeds (or it fails / times out).
/// Starting a service that already runs succeeds at once.
pub fn service_start<C: AgentConn>(
    mut conn: C,
    request: ServiceStartRequest,
) -> Result<(), ClientError> {
    const DURING: &str = "while starting a guest service";
    send_request(&mut conn, &Request::ServiceStart(request), DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Whether a service runs, and its guest pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub running: bool,
    pub pid: Option<u32>,
}

pub fn service_status<C: AgentConn>(mut conn: C, name: &str) -> Result<ServiceState, ClientError> {
    const DURING: &str = "while asking for a service's state";
    let request = Request::ServiceStatus {
        name: name.to_owned(),
    };
    send_request(&mut conn, &request, DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::ServiceState { running, pid, .. } => Ok(ServiceState { running, pid }),
        other => Err(unexpected(other)),
    }
}

/// Ask the guest to stop services, sync and unmount the state disk, and power off. Returns
/// once the agent confirmed that persistent state is safe; the VM exits shortly after.
pub fn shutdown<C: AgentConn>(mut conn: C) -> Result<(), ClientError> {
    const DURING: &str = "during shutdown";
    send_request(&mut conn, &Request::Shutdown, DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Ask the guest to mount the just hot-plugged virtio-fs device `tag` on
/// `SHARES_DIR/<tag>` (read-only if asked). The agent waits for the device to appear.
pub fn mount_share<C: AgentConn>(
    mut conn: C,
    tag: &str,
    read_only: bool,
) -> Result<(), ClientError> {
    const DURING: &str = "while mounting a volume share";
    let request = Request::MountShare {
        tag: tag.to_owned(),
        read_only,
    };
    send_request(&mut conn, &request, DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Tell a guest restored from a snapshot its clock, fresh entropy and storage (see
/// vm/snapshot.rs); returns once it is the host's run.
pub fn resume<C: AgentConn>(
    mut conn: C,
    request: vcontainer_proto::ResumeRequest,
) -> Result<(), ClientError> {
    const DURING: &str = "while resuming a restored guest";
    send_request(&mut conn, &Request::Resume(request), DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Ask a guest restored from a snapshot to get ready to be saved with its storage (see
/// vm/snapshot.rs, "suspend"): `Ok` once its state disk is frozen; an error (kind `Busy`
/// when something besides the services still runs) leaves it as it was.
pub fn suspend<C: AgentConn>(
    mut conn: C,
    request: vcontainer_proto::SuspendRequest,
) -> Result<(), ClientError> {
    const DURING: &str = "while suspending the guest";
    send_request(&mut conn, &Request::Suspend(request), DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Turn `conn` into a byte pipe to the guest's Unix socket `path` (the engine API relay):
/// once this returns, the socket's bytes travel as `Stdin`/`Stdout` frames (see
/// `vm::engine_api`).
pub fn connect_socket<C: AgentConn>(mut conn: C, path: &str) -> Result<C, ClientError> {
    const DURING: &str = "while connecting to a guest socket";
    let request = Request::Connect {
        path: path.to_owned(),
    };
    send_request(&mut conn, &request, DURING)?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(conn),
        other => Err(unexpected(other)),
    }
}
