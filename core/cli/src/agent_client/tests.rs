//! The client against a real in-process agent over a Unix socket.

use std::io::{Cursor, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use vcontainer_agent::Agent;
use vcontainer_proto::{ErrorKind, ExecRequest, ExitStatus};

use super::*;

/// A running in-process agent; connect() opens one connection per operation.
struct TestAgent {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl TestAgent {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let agent = Arc::new(Agent::for_tests(dir.path().join("logs")));
        thread::spawn(move || vcontainer_agent::serve(listener, agent));
        Self { socket, dir }
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect")
    }

    fn exec(&self, argv: &[&str]) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        self.exec_with(ExecRequest::new(argv.iter().copied()), None)
    }

    fn exec_with(
        &self,
        request: ExecRequest,
        stdin: Option<Box<dyn Read + Send>>,
    ) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let status = exec(self.connect(), request, stdin, &mut out, &mut err).expect("exec");
        (out, err, status)
    }
}

#[test]
fn hello_reports_the_protocol_version() {
    let agent = TestAgent::start();
    let ok = hello(agent.connect()).expect("hello");
    assert_eq!(ok.protocol_version, PROTOCOL_VERSION);
    assert_eq!(ok.runtime, "test");
    assert!(!ok.kernel.is_empty());
}

#[test]
fn stdout_stderr_and_exit_code_are_separate() {
    let agent = TestAgent::start();
    let (out, err, status) = agent.exec(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(status, ExitStatus::Code(7));
}
