//! Running a program in the guest with streamed stdio.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use vcontainer_proto::{
    read_frame, write_frame, ExecRequest, ExitStatus, Frame, FrameType, ProtoError, Request,
    Response,
};

use super::simple::unexpected;
use super::{AgentConn, ClientError};

const STDIN_CHUNK: usize = 64 * 1024;
const DURING: &str = "before the command's exit status arrived";

/// The sending half of an exec connection, shared by the stdin and signal threads.
#[derive(Clone)]
pub(crate) struct SharedWriter(Arc<Mutex<Box<dyn AgentConn>>>);

impl SharedWriter {
    pub(crate) fn frame(&self, kind: FrameType, payload: &[u8]) -> Result<(), ProtoError> {
        let mut conn = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        write_frame(&mut *conn, kind, payload)
    }

    pub(crate) fn request(&self, request: &Request) -> Result<(), ProtoError> {
        let frame = Frame::control(request)?;
        self.frame(FrameType::Control, &frame.payload)
    }

    /// Ends the conversation from our side: the reader sees EOF, the agent hangs up on the
    /// program (SIGHUP), as when a terminal closes.
    pub(crate) fn shutdown(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown_conn();
    }
}

/// Run `request` in the guest: `stdin` (if any) is streamed to the program until EOF, its
/// stdout and stderr go to `stdout` and `stderr` as they are produced, and its exit status
/// comes back as a value. A program that is not found or cannot run ends with 127 / 126.
pub fn exec<C: AgentConn>(
    conn: C,
    request: ExecRequest,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<ExitStatus, ClientError> {
    run(conn, request, stdin, stdout, stderr, |_| {})
}

/// The exec conversation; `started` gets a writer for Signal/Resize after the request is sent.
pub(crate) fn run<C: AgentConn>(
    mut conn: C,
    mut request: ExecRequest,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    started: impl FnOnce(SharedWriter),
) -> Result<ExitStatus, ClientError> {
    request.stdin = stdin.is_some();
    let writer = SharedWriter(Arc::new(Mutex::new(
        conn.try_clone_conn()
            .map_err(|e| ClientError::writing(DURING, ProtoError::Io(e)))?,
    )));
    writer
        .request(&Request::Exec(request))
        .map_err(|e| ClientError::writing(DURING, e))?;
    if let Some(source) = stdin {
        spawn_stdin_pump(source, writer.clone());
    }
    started(writer);
    let result = read_until_exit(&mut conn, stdout, stderr);
    // Wake the stdin pump's writes (and tell the agent we are done) in every case.
    conn.shutdown_conn();
    result
}

fn read_until_exit<C: AgentConn>(
    conn: &mut C,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<ExitStatus, ClientError> {
    loop {
        let frame = read_frame(conn)
            .map_err(|e| ClientError::reading(DURING, e))?
            .ok_or_else(|| ClientError::closed(DURING))?;
        match frame.kind {
            FrameType::Stdout => copy_out(stdout, &frame.payload, "stdout")?,
            FrameType::Stderr => copy_out(stderr, &frame.payload, "stderr")?,
            FrameType::Control => match frame.parse().map_err(ClientError::Protocol)? {
                Response::Started { .. } => {}
                Response::Exited { status } => return Ok(status),
                other => return Err(unexpected(other)),
            },
            // End markers need no action: the exit status is what ends the conversation.
            _ => {}
        }
    }
}

fn copy_out(sink: &mut dyn Write, bytes: &[u8], name: &str) -> Result<(), ClientError> {
    sink.write_all(bytes)
        .and_then(|()| sink.flush())
        .map_err(|source| ClientError::Local {
            context: format!("writing the command's {name}"),
            source,
        })
}

/// Read the local stdin on its own thread until EOF and forward it. The thread is detached:
/// a read from a terminal cannot be cancelled, and it ends with the process anyway.
fn spawn_stdin_pump(mut source: Box<dyn Read + Send>, writer: SharedWriter) {
    let _ = thread::Builder::new()
        .name("agent-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if writer.frame(FrameType::Stdin, &buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = writer.frame(FrameType::StdinEnd, &[]);
        });
}
