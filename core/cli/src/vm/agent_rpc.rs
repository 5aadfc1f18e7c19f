//! The two agent conversations the lifecycle itself needs: `Hello` (readiness) and `Shutdown`
//! (clean stop). Kept here, small, so the VM layer does not depend on the richer client
//! used by commands; both speak `vcontainer_proto`.

use std::io::{Read, Write};

use vcontainer_proto::{read_frame, Frame, HelloOk, Request, Response, PROTOCOL_VERSION};

fn send<S: Write + ?Sized>(s: &mut S, req: &Request) -> Result<(), String> {
    let f = Frame::control(req).map_err(|e| e.to_string())?;
    s.write_all(&f.to_bytes()).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())
}

fn recv<S: Read + ?Sized>(s: &mut S) -> Result<Response, String> {
    match read_frame(s) {
        Ok(Some(f)) => f.parse::<Response>().map_err(|e| e.to_string()),
        Ok(None) => Err("the agent closed the connection".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a Hello failed: a version mismatch is final, anything else may just mean "not yet".
#[derive(Debug)]
pub enum HelloError {
    Refused(String),
    NotReady(String),
}

/// Send `Hello`, expect `HelloOk` with our protocol version.
pub fn hello<S: Read + Write + ?Sized>(s: &mut S) -> Result<HelloOk, HelloError> {
    send(
        s,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client: format!("vcontainer {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .map_err(HelloError::NotReady)?;
    match recv(s).map_err(HelloError::NotReady)? {
        Response::HelloOk(ok) if ok.protocol_version == PROTOCOL_VERSION => Ok(ok),
        Response::HelloOk(ok) => Err(HelloError::Refused(format!(
            "agent speaks protocol {}, this host {PROTOCOL_VERSION}; rebuild the guest blobs (make guest)",
            ok.protocol_version
        ))),
        Response::Error { kind, message } => {
            Err(HelloError::Refused(format!("{kind:?}: {message}")))
        }
        other => Err(HelloError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// Ask the guest to stop services, sync and unmount, then power off. Ok once it said `Done`.
pub fn shutdown<S: Read + Write + ?Sized>(s: &mut S) -> Result<(), String> {
    send(s, &Request::Shutdown)?;
    match recv(s)? {
        Response::Done => Ok(()),
        Response::Error { kind, message } => Err(format!("{kind:?}: {message}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use vcontainer_proto::{write_frame, FrameType};

    fn fake_agent(reply: Response) -> (UnixStream, std::thread::JoinHandle<Request>) {
        let (host, mut guest) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || {
            let f = read_frame(&mut guest).expect("read").expect("frame");
            let req: Request = f.parse().expect("request");
            let bytes = serde_json::to_vec(&reply).expect("json");
            write_frame(&mut guest, FrameType::Control, &bytes).expect("write");
            req
        });
        (host, t)
    }

    #[test]
    fn hello_ok_and_mismatch() {
        let ok = HelloOk {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "t".into(),
            runtime: "podman".into(),
            kernel: "6.1".into(),
            warnings: vec![],
        };
        let (mut s, t) = fake_agent(Response::HelloOk(ok.clone()));
        assert_eq!(hello(&mut s).expect("hello"), ok);
        assert!(matches!(t.join().expect("agent"), Request::Hello { .. }));

        let mut old = ok;
        old.protocol_version = PROTOCOL_VERSION + 1;
        let (mut s, _t) = fake_agent(Response::HelloOk(old));
        assert!(matches!(hello(&mut s), Err(HelloError::Refused(m)) if m.contains("make guest")));

        let (mut s, guest) = UnixStream::pair().expect("pair");
        drop(guest);
        assert!(matches!(hello(&mut s), Err(HelloError::NotReady(_))));
    }

    #[test]
    fn shutdown_waits_for_done() {
        let (mut s, t) = fake_agent(Response::Done);
        shutdown(&mut s).expect("done");
        assert_eq!(t.join().expect("agent"), Request::Shutdown);
    }
}
