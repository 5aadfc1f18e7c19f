//! Moving files as tar streams.

use std::io::{self, Read, Write};

use vcontainer_proto::{read_frame, write_frame, FrameType, Request, Response, MAX_PAYLOAD};

use super::simple::{read_response, send_request, unexpected};
use super::{AgentConn, ClientError};

const PUSH_CHUNK: usize = 256 * 1024;
const _: () = assert!(PUSH_CHUNK <= MAX_PAYLOAD);

/// Stream the tar archive read from `source` into the guest directory `dest` (created if
/// missing). The agent refuses entries that would land outside `dest`.
pub fn push_tar<C: AgentConn>(
    mut conn: C,
    dest: &str,
    source: &mut dyn Read,
) -> Result<(), ClientError> {
    const DURING: &str = "while sending a tar stream";
    let request = Request::PushTar {
        dest: dest.to_owned(),
    };
    send_request(&mut conn, &request, DURING)?;
    let mut buf = vec![0u8; PUSH_CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                // Without TarEnd the agent sees a broken stream and writes nothing more.
                return Err(ClientError::Local {
                    context: "reading the tar stream to send".into(),
                    source,
                });
            }
        };
        if let Err(e) = write_frame(&mut conn, FrameType::Tar, &buf[..n]) {
            // The agent may have refused the stream and said why before closing.
            return Err(match read_response(&mut conn, DURING) {
                Ok(response) => unexpected(response),
                Err(_) => ClientError::writing(DURING, e),
            });
        }
    }
    write_frame(&mut conn, FrameType::TarEnd, &[]).map_err(|e| ClientError::writing(DURING, e))?;
    match read_response(&mut conn, DURING)? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Receive guest `path` as a tar stream into `sink`; entries are named `<basename>/...`.
pub fn pull_tar<C: AgentConn>(
    conn: C,
    path: &str,
    sink: &mut dyn Write,
) -> Result<(), ClientError> {
    pull(conn, path, false, sink)
}

/// Like [`pull_tar`], but entries are named relative to `path` itself (`./...`).
pub fn pull_tar_contents<C: AgentConn>(
    conn: C,
    path: &str,
    sink: &mut dyn Write,
) -> Result<(), ClientError> {
    pull(conn, path, true, sink)
}

fn pull<C: AgentConn>(
    mut conn: C,
    path: &str,
    contents_only: bool,
    sink: &mut dyn Write,
) -> Result<(), ClientError> {
    const DURING: &str = "while receiving a tar stream";
    let request = Request::PullTar {
        path: path.to_owned(),
        contents_only,
    };
    send_request(&mut conn, &request, DURING)?;
    loop {
        let frame = read_frame(&mut conn)
            .map_err(|e| ClientError::reading(DURING, e))?
            .ok_or_else(|| ClientError::closed(DURING))?;
        match frame.kind {
            FrameType::Tar => {
                sink.write_all(&frame.payload)
                    .map_err(|source| ClientError::Local {
                        context: "writing the received tar stream".into(),
                        source,
                    })?
            }
            FrameType::TarEnd => {}
            FrameType::Control => {
                return match frame.parse().map_err(ClientError::Protocol)? {
                    Response::Done => sink.flush().map_err(|source| ClientError::Local {
                        context: "writing the received tar stream".into(),
                        source,
                    }),
                    other => Err(unexpected(other)),
                };
            }
            other => {
                return Err(ClientError::Unexpected(format!(
                    "{other:?} frame in a tar stream"
                )))
            }
        }
    }
}
