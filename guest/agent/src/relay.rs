//! `Connect`: one host connection becomes a pipe to a guest Unix socket, so the host's own
//! docker/podman clients reach the engine's API in the VM (`memres start --expose`).
//!
//! Framed both ways (host -> guest `Stdin`/`StdinEnd`, guest -> host `Stdout`/`StdoutEnd`)
//! rather than raw: the API is HTTP with hijacked streams (attach, exec) whose clients
//! half-close their side when their input ends, and a half-close does not cross the hybrid
//! vsock transport intact (vhost-device-vsock ends the whole connection on the host
//! socket's end-of-file, and the container's output was lost). End markers carry it
//! instead. The host's connection ending without `StdinEnd` means the client is gone: the
//! guest socket is then closed both ways, so a streaming request (`events`, `logs -f`)
//! does not outlive its client.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;

use vcontainer_proto::{read_frame, ErrorKind, FrameType, ProtoError, Response};

use crate::listener::AgentStream;
use crate::log;
use crate::sink::FrameSink;

/// Serves one `Connect` on `stream` (whose request frame `reader` has read).
pub fn connect<S: AgentStream>(
    path: &str,
    mut reader: S,
    sink: &FrameSink,
) -> Result<(), ProtoError> {
    if !Path::new(path).is_absolute() {
        return sink.finish(&Response::error(
            ErrorKind::BadRequest,
            format!("{path:?} is not an absolute socket path"),
        ));
    }
    let guest = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            let kind = match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            };
            return sink.finish(&Response::error(kind, format!("{path}: {e}")));
        }
    };
    sink.respond(&Response::Done)?;
    let mut into_guest = guest.try_clone()?;
    let up = thread::Builder::new().name("relay-up".into()).spawn(
        move || -> Result<(), ProtoError> {
            while let Some(frame) = read_frame(&mut reader)? {
                match frame.kind {
                    FrameType::Stdin => into_guest.write_all(&frame.payload)?,
                    FrameType::StdinEnd => {
                        let _ = into_guest.shutdown(Shutdown::Write);
                        return Ok(());
                    }
                    _ => {}
                }
            }
            // the host went away: nobody reads the answers any more
            let _ = into_guest.shutdown(Shutdown::Both);
            Ok(())
        },
    )?;
    let down = copy_out(&guest, sink);
    let _ = guest.shutdown(Shutdown::Both);
    if let Err(e) = &down {
        log!("relay from {path}: {e}");
    }
    match up.join() {
        Ok(Err(e)) => log!("relay to {path}: {e}"),
        Err(_) => log!("relay to {path}: thread panicked"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

/// Guest socket -> host, as `Stdout` frames, then `StdoutEnd`.
fn copy_out(mut guest: &UnixStream, sink: &FrameSink) -> Result<(), ProtoError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match guest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        sink.data(FrameType::Stdout, &buf[..n])?;
    }
    sink.frame(FrameType::StdoutEnd, &[])
}
