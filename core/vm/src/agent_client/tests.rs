//! The client against a real in-process agent over a Unix socket.

use std::io::{Cursor, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vcontainer_agent::Agent;
use vcontainer_proto::auth::{Secret, AGENT_REPLY_LEN, SECRET_LEN};
use vcontainer_proto::{
    read_frame, write_frame, ErrorKind, ExecRequest, ExitStatus, Frame, FrameType, Request,
    Response,
};

use super::exec::run;
use super::*;

/// The secret of the test agents.
fn test_secret() -> Secret {
    Secret::from_bytes(&[0x5a; SECRET_LEN]).expect("32 bytes")
}

/// A running in-process agent; `connect` opens one authenticated connection per operation.
struct TestAgent {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl TestAgent {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let agent = Arc::new(Agent::for_tests(dir.path().join("logs"), test_secret()));
        thread::spawn(move || vcontainer_agent::serve(listener, agent));
        Self { socket, dir }
    }

    fn connect(&self) -> UnixStream {
        let mut conn = self.raw_connect();
        authenticate(&mut conn, &test_secret()).expect("authenticate");
        conn
    }

    /// A connection that has not authenticated.
    fn raw_connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect")
    }

    fn exec(&self, argv: &[&str]) -> (String, String, ExitStatus) {
        self.exec_with(ExecRequest::new(argv.iter().copied()), None)
    }

    fn exec_with(
        &self,
        request: ExecRequest,
        stdin: Option<Box<dyn Read + Send>>,
    ) -> (String, String, ExitStatus) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let status = exec(self.connect(), request, stdin, &mut out, &mut err).expect("exec");
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            status,
        )
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
fn agent_refuses_another_protocol_version_naming_both() {
    let agent = TestAgent::start();
    let mut conn = agent.connect();
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        client: "future".into(),
    };
    let frame = Frame::control(&hello).expect("encode");
    write_frame(&mut conn, FrameType::Control, &frame.payload).expect("send");
    let answer: Response = read_frame(&mut conn)
        .expect("read")
        .expect("frame")
        .parse()
        .expect("parse");
    match answer {
        Response::Error {
            kind: ErrorKind::VersionMismatch,
            message,
        } => {
            assert!(
                message.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
                "{message}"
            );
            assert!(
                message.contains(&format!("version {PROTOCOL_VERSION}")),
                "{message}"
            );
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}

/// Bytes the agent sent before closing (it must close: the read ends).
fn everything_sent(conn: &mut UnixStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // closed with our bytes unread: a reset, which is a close too
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the agent must close the connection: {e}"),
        }
    }
}

#[test]
fn a_client_without_the_secret_gets_no_answer_and_runs_nothing() {
    let agent = TestAgent::start();
    let marker = agent.dir.path().join("ran");
    let request = Request::Exec(ExecRequest::new(["touch", marker.to_str().expect("utf-8")]));
    // a bare request, as a pre-authentication client would send it
    let mut conn = agent.raw_connect();
    let frame = Frame::control(&request).expect("encode");
    write_frame(&mut conn, FrameType::Control, &frame.payload).expect("send");
    assert_eq!(everything_sent(&mut conn), b"", "no byte comes back");
    // garbage, and a connection that sends nothing and hangs up
    let mut conn = agent.raw_connect();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    assert_eq!(everything_sent(&mut conn), b"");
    let mut conn = agent.raw_connect();
    conn.shutdown(Shutdown::Write).expect("half close");
    assert_eq!(everything_sent(&mut conn), b"");
    assert!(!marker.exists(), "the request must not have run");
    // the agent still serves its host
    assert!(agent.exec(&["true"]).2.success());
}

#[test]
fn a_client_with_a_wrong_secret_is_refused_and_runs_nothing() {
    let agent = TestAgent::start();
    let marker = agent.dir.path().join("ran");
    let mut conn = agent.raw_connect();
    let wrong = Secret::from_bytes(&[0x5b; SECRET_LEN]).expect("32 bytes");
    let err = authenticate(&mut conn, &wrong).expect_err("wrong secret");
    assert!(matches!(err, ClientError::AuthRefused), "{err:?}");
    assert!(err.to_string().contains("memres stop"), "{err}");
    // whatever it sends next is not read as a request
    let request = Request::Exec(ExecRequest::new(["touch", marker.to_str().expect("utf-8")]));
    let frame = Frame::control(&request).expect("encode");
    let _ = write_frame(&mut conn, FrameType::Control, &frame.payload);
    assert_eq!(everything_sent(&mut conn), b"");
    thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the request must not have run");
}

#[test]
fn a_client_of_another_protocol_version_is_told_to_restart_the_vm() {
    let agent = TestAgent::start();
    let mut conn = agent.raw_connect();
    let err = super::auth::authenticate_as(&mut conn, &test_secret(), PROTOCOL_VERSION + 1)
        .expect_err("version");
    match &err {
        ClientError::VersionMismatch { host, agent } => {
            assert_eq!((*host, *agent), (PROTOCOL_VERSION + 1, PROTOCOL_VERSION));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("must be restarted") && text.contains("memres stop"),
        "{text}"
    );
    // and the agent closed the connection after saying so
    assert_eq!(everything_sent(&mut conn), b"");
}

#[test]
fn an_answer_without_the_secret_is_not_trusted() {
    // something on the VM's address that answers without knowing the secret
    let (mut client, mut fake_agent) = UnixStream::pair().expect("pair");
    let fake = thread::spawn(move || {
        let _ = read_frame(&mut fake_agent);
        let _ = write_frame(&mut fake_agent, FrameType::Auth, &[0u8; AGENT_REPLY_LEN]);
        // the client must not send its proof or a request after a bad answer
        let mut rest = Vec::new();
        let _ = fake_agent.read_to_end(&mut rest);
        rest
    });
    let err = authenticate(&mut client, &test_secret()).expect_err("fake agent");
    assert!(matches!(err, ClientError::AuthBadAnswer), "{err:?}");
    drop(client);
    assert_eq!(
        fake.join().expect("fake"),
        b"",
        "nothing sent to a fake agent"
    );
}

#[test]
fn client_refuses_an_agent_with_another_version_naming_both() {
    let (client, mut fake_agent) = UnixStream::pair().expect("pair");
    thread::spawn(move || {
        let _ = read_frame(&mut fake_agent);
        let answer = Response::HelloOk(HelloOk {
            protocol_version: 999,
            agent_version: "9.9.9".into(),
            runtime: "docker".into(),
            kernel: "6.1".into(),
            warnings: vec![],
            capabilities: vec![],
        });
        let frame = Frame::control(&answer).expect("encode");
        let _ = write_frame(&mut fake_agent, FrameType::Control, &frame.payload);
    });
    let err = hello(client).expect_err("mismatch");
    let text = err.to_string();
    assert!(
        matches!(err, ClientError::VersionMismatch { agent: 999, .. }),
        "{err:?}"
    );
    assert!(
        text.contains(&format!(
            "this vcontainer speaks version {PROTOCOL_VERSION}"
        )),
        "{text}"
    );
    assert!(text.contains("the guest agent version 999"), "{text}");
}

#[test]
fn a_missing_working_directory_is_an_error_value() {
    let agent = TestAgent::start();
    let mut request = ExecRequest::new(["true"]);
    request.cwd = Some("/no/such/dir/vcontainer".into());
    let result = exec(
        agent.connect(),
        request,
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    );
    match result {
        Err(ClientError::Agent {
            kind: ErrorKind::NotFound,
            message,
        }) => assert!(message.contains("/no/such/dir/vcontainer"), "{message}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn stdout_stderr_and_exit_code_are_separate() {
    let agent = TestAgent::start();
    let (out, err, status) = agent.exec(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(status, ExitStatus::Code(7));
}

#[test]
fn argv_arrives_unchanged() {
    let agent = TestAgent::start();
    let args = ["a b", "c'd", "e\"f", "g;h", "$(i)", "`j`", "", "  k  ", "*"];
    let mut argv = vec!["printf", "[%s]\n"];
    argv.extend(args);
    let (out, _, status) = agent.exec(&argv);
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(out, expected);
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn env_and_cwd_are_applied_and_agent_env_is_not_leaked() {
    let agent = TestAgent::start();
    let mut request = ExecRequest::new(["sh", "-c", "pwd; echo \"$GREETING\""]);
    request.env = vec![("GREETING".into(), "hello world".into())];
    request.cwd = Some("/tmp".into());
    let (out, _, status) = agent.exec_with(request, None);
    assert_eq!(out, "/tmp\nhello world\n");
    assert_eq!(status, ExitStatus::Code(0));

    // `env` run directly (no shell adding its own variables) sees exactly the fixed base
    // plus the request's variables, nothing of the agent's (this test process's) own.
    let mut request = ExecRequest::new(["env"]);
    request.env = vec![
        ("GREETING".into(), "hi".into()),
        ("HOME".into(), "/home/override".into()),
    ];
    let (out, _, status) = agent.exec_with(request, None);
    assert_eq!(status, ExitStatus::Code(0));
    let mut vars: Vec<&str> = out.lines().collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            "GREETING=hi",
            "HOME=/home/override",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
}

#[test]
fn not_found_is_127_and_not_executable_is_126() {
    let agent = TestAgent::start();
    let (_, err, status) = agent.exec(&["no-such-program-vcontainer"]);
    assert_eq!(status, ExitStatus::Code(127));
    assert!(
        err.contains("no-such-program-vcontainer: command not found"),
        "{err}"
    );

    let plain = agent.dir.path().join("plain-file");
    std::fs::write(&plain, "not a program").expect("write");
    let (_, err, status) = agent.exec(&[plain.to_str().expect("utf8")]);
    assert_eq!(status, ExitStatus::Code(126));
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn a_killed_program_reports_its_signal() {
    let agent = TestAgent::start();
    let (_, _, status) = agent.exec(&["sh", "-c", "kill -9 $$"]);
    assert_eq!(status, ExitStatus::Signal(9));
    assert_eq!(status.shell_code(), 137);
}

#[test]
fn eight_concurrent_execs_get_their_own_output() {
    let agent = Arc::new(TestAgent::start());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let agent = Arc::clone(&agent);
            thread::spawn(move || {
                let script = format!("sleep 0.2; echo out-{i}; echo err-{i} >&2; exit {i}");
                agent.exec(&["sh", "-c", &script])
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let (out, err, status) = handle.join().expect("thread");
        assert_eq!(out, format!("out-{i}\n"));
        assert_eq!(err, format!("err-{i}\n"));
        assert_eq!(status, ExitStatus::Code(i32::try_from(i).expect("small")));
    }
}

#[test]
fn stdin_round_trips_byte_for_byte_and_reaches_eof() {
    let agent = TestAgent::start();
    // Larger than one frame, with every byte value, so chunking and EOF are both exercised.
    let input: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = exec(
        agent.connect(),
        ExecRequest::new(["cat"]),
        Some(Box::new(Cursor::new(input.clone()))),
        &mut out,
        &mut err,
    )
    .expect("exec");
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out.len(), input.len());
    assert!(out == input, "stdin came back altered");
}

#[test]
fn a_background_child_holding_stdout_does_not_hold_up_the_exit_status() {
    let agent = TestAgent::start();
    let started = Instant::now();
    let (out, _, status) = agent.exec(&["sh", "-c", "sleep 20 & echo hi; exit 3"]);
    assert_eq!(out, "hi\n");
    assert_eq!(status, ExitStatus::Code(3));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn without_stdin_the_program_reads_eof() {
    let agent = TestAgent::start();
    let (out, _, status) = agent.exec(&["sh", "-c", "cat; echo done"]);
    assert_eq!(out, "done\n");
    assert_eq!(status, ExitStatus::Code(0));
}

/// Runs `script` on a 24x80 PTY and sends `resize` once its first output has arrived (no
/// fixed sleep decides the order, however slow the machine); returns status and output.
fn pty_exec_resized_after_first_output(script: &str, resize: WindowSize) -> (ExitStatus, String) {
    let agent = TestAgent::start();
    let mut request = ExecRequest::new(["sh", "-c", script]);
    request.tty = Some(WindowSize { rows: 24, cols: 80 });
    let (first_output_tx, first_output) = channel();
    let mut out = Notify {
        seen: Vec::new(),
        tx: Some(first_output_tx),
    };
    let mut err = Vec::new();
    let status = run(
        agent.connect(),
        request,
        None,
        &mut out,
        &mut err,
        |writer| {
            thread::spawn(move || {
                if first_output.recv().is_ok() {
                    let _ = writer.request(&Request::Resize(resize));
                }
            });
        },
    )
    .expect("exec");
    (status, String::from_utf8_lossy(&out.seen).into_owned())
}

#[test]
fn pty_mode_has_a_terminal_of_the_requested_size_and_follows_resize() {
    // The program waits (up to 30 s, only to bound a hang) for the size to change.
    let script = "stty size; i=0; \
        while [ \"$(stty size)\" = '24 80' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
        stty size";
    let (status, text) = pty_exec_resized_after_first_output(
        script,
        WindowSize {
            rows: 50,
            cols: 132,
        },
    );
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(text, "24 80\r\n50 132\r\n");
}

#[test]
fn a_resize_to_the_same_size_still_signals_sigwinch() {
    // The host re-sends the size after start so that a runtime CLI whose first resize of
    // the container's terminal was lost tries again: that needs a SIGWINCH even though the
    // size did not change (the kernel sends none then). The loop only bounds a hang.
    let script = "trap 'echo winch; exit 0' WINCH; echo ready; i=0; \
        while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo no-winch";
    let (status, text) =
        pty_exec_resized_after_first_output(script, WindowSize { rows: 24, cols: 80 });
    assert_eq!(text, "ready\r\nwinch\r\n");
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn signal_is_delivered_to_the_program() {
    let agent = TestAgent::start();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = run(
        agent.connect(),
        ExecRequest::new(["sleep", "30"]),
        None,
        &mut out,
        &mut err,
        |writer| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(200));
                let _ = writer.request(&Request::Signal { signal: 15 });
            });
        },
    )
    .expect("exec");
    assert_eq!(status, ExitStatus::Signal(15));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Tests that send SIGINT to this whole test process take turns: a relay installed by one
/// would otherwise take the other's signal.
static SIGINT_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends SIGINT to this process once `flag` exists, `times` times, `gap` apart. The deadline
/// only bounds a hang.
fn sigint_once_running(flag: std::path::PathBuf, times: usize, gap: Duration) {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.exists() {
            if Instant::now() > deadline {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..times {
            // SAFETY: kill has no memory-safety preconditions; the relay installed by the
            // exec under test turns SIGINT into a forwarded Signal request.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGINT);
            }
            thread::sleep(gap);
        }
    });
}

#[test]
fn relayed_sigint_reaches_the_program_and_a_second_one_stops_waiting() {
    let _turn = SIGINT_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let agent = TestAgent::start();
    // A program that handles SIGINT ends with its own status after the first one.
    let running = agent.dir.path().join("running");
    let script = format!(
        "trap 'echo got-int; exit 3' INT; : > {}; while :; do sleep 0.1; done",
        running.display()
    );
    sigint_once_running(running.clone(), 1, Duration::ZERO);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = exec_relaying_signals(
        agent.connect(),
        ExecRequest::new(["sh", "-c", script.as_str()]),
        &mut out,
        &mut err,
    )
    .expect("exec");
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(String::from_utf8_lossy(&out), "got-int\n");

    // One that ignores it (as a container's PID 1 does): the second SIGINT stops waiting,
    // and the status says so; the agent hangs up on the program.
    let running = agent.dir.path().join("running-2");
    let script = format!("trap '' INT; : > {}; exec sleep 30", running.display());
    sigint_once_running(running, 2, Duration::from_millis(300));
    let started = Instant::now();
    let status = exec_relaying_signals(
        agent.connect(),
        ExecRequest::new(["sh", "-c", script.as_str()]),
        &mut out,
        &mut err,
    )
    .expect("exec");
    assert_eq!(status, ExitStatus::Signal(libc::SIGINT));
    assert!(started.elapsed() < Duration::from_secs(20));
    let restore = super::interactive::default_after_sessions().expect("flag");
    assert!(restore.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn interactive_exec_forwards_our_sigint_to_the_program() {
    let _turn = SIGINT_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let agent = TestAgent::start();
    let conn = agent.connect();
    // SIGINT goes out only once the program runs: then exec_interactive has installed its
    // handler (before it sent the request). Sent any earlier, SIGINT's default action would
    // end the whole test process. The deadline only bounds a hang.
    let running = agent.dir.path().join("running");
    // `: >` (a shell builtin, no child for the shell to wait on) then `exec`
    let script = format!(": > {}; exec sleep 30", running.display());
    sigint_once_running(running, 1, Duration::ZERO);
    let started = Instant::now();
    let status =
        exec_interactive(conn, ExecRequest::new(["sh", "-c", script.as_str()])).expect("exec");
    assert_eq!(status, ExitStatus::Signal(libc::SIGINT));
    assert!(started.elapsed() < Duration::from_secs(10));
    // After the session, Ctrl-C / SIGTERM act as default again (end this process).
    let restore = super::interactive::default_after_sessions().expect("flag");
    assert!(restore.load(std::sync::atomic::Ordering::SeqCst));
}

/// Forwards one connection to the agent until told to cut it, like a VM that dies.
fn cutting_proxy(agent: &TestAgent) -> (UnixStream, Sender<()>) {
    let (client, proxy_side) = UnixStream::pair().expect("pair");
    let upstream = agent.connect();
    let (cut_tx, cut_rx) = channel::<()>();
    let pipes = [
        (
            proxy_side.try_clone().expect("clone"),
            upstream.try_clone().expect("clone"),
        ),
        (
            upstream.try_clone().expect("clone"),
            proxy_side.try_clone().expect("clone"),
        ),
    ];
    for (mut from, mut to) in pipes {
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        });
    }
    thread::spawn(move || {
        let _ = cut_rx.recv();
        let _ = proxy_side.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    });
    (client, cut_tx)
}

/// A connection through [`cutting_proxy`] that is cut as soon as the program's first output
/// reached the returned sink.
fn cut_at_first_output(agent: &TestAgent) -> (UnixStream, Notify) {
    let (conn, cut) = cutting_proxy(agent);
    let (seen_tx, seen_rx) = channel();
    thread::spawn(move || {
        let _ = seen_rx.recv();
        let _ = cut.send(());
    });
    let out = Notify {
        seen: Vec::new(),
        tx: Some(seen_tx),
    };
    (conn, out)
}

/// Tells the test when the program's first output arrived.
struct Notify {
    seen: Vec<u8>,
    tx: Option<Sender<()>>,
}

impl Write for Notify {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.seen.extend_from_slice(buf);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn connection_lost_mid_exec_is_a_distinct_error() {
    let agent = TestAgent::start();
    let (conn, mut out) = cut_at_first_output(&agent);
    let mut err = Vec::new();
    let result = exec(
        conn,
        ExecRequest::new(["sh", "-c", "echo started; sleep 30"]),
        None,
        &mut out,
        &mut err,
    );
    match result {
        Err(e) => {
            assert!(e.is_connection_lost(), "wrong error: {e:?}");
            assert!(e.to_string().contains("lost"), "{e}");
        }
        Ok(status) => panic!("expected a lost connection, got {status:?}"),
    }
    assert_eq!(out.seen, b"started\n");
}

/// A client killed mid-command: the agent hangs up on the program (and kills it when it
/// ignores that) and runs the request's
/// `if_host_lost` steps (the follow-up steps that client would have run); a client that stays
/// gets its status and the agent runs none of them.
#[test]
fn steps_for_a_lost_host_run_only_when_the_host_is_gone() {
    let agent = TestAgent::start();
    let mark = agent.dir.path().join("cleaned");
    let step = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("echo \"$STEP_ENV\" > {}", mark.display()),
    ];
    let request = |script: &str| {
        let mut r = ExecRequest::new(["sh", "-c", script]);
        r.env.push(("STEP_ENV".into(), "from-request".into()));
        r.if_host_lost = vec![step.clone()];
        r
    };
    let (_, _, status) = agent.exec_with(request("exit 3"), None);
    assert_eq!(status, ExitStatus::Code(3));
    thread::sleep(Duration::from_millis(300));
    assert!(!mark.exists(), "ran although the host stayed");

    let (conn, mut out) = cut_at_first_output(&agent);
    let result = exec(
        conn,
        // a container's PID 1 ignores SIGHUP: the agent kills what ignores it
        request("trap '' HUP; echo started; sleep 30"),
        None,
        &mut out,
        &mut Vec::new(),
    );
    assert!(result.is_err(), "{result:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mark.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&mark).expect("the step ran"),
        "from-request\n"
    );
}

/// A tar archive built in memory with the given (name, contents) files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = ::tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = ::tar::Header::new_gnu();
        set_owner(&mut header);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(::tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, *data)
            .expect("append");
    }
    builder.into_inner().expect("finish")
}

fn set_owner(header: &mut ::tar::Header) {
    header.set_uid(u64::from(nix::unistd::geteuid().as_raw()));
    header.set_gid(u64::from(nix::unistd::getegid().as_raw()));
    header.set_mtime(1_700_000_000);
}

/// A tar whose single entry has a raw name, bypassing the tar crate's own name checks.
fn tar_with_raw_name(name: &str) -> Vec<u8> {
    let mut header = ::tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(::tar::EntryType::Regular);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(b"evil");
    bytes.resize(1024, 0);
    bytes.extend_from_slice(&[0u8; 1024]);
    bytes
}

fn entries_of(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = ::tar::Archive::new(archive);
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        out.push((name, data));
    }
    out.sort();
    out
}

#[test]
fn push_then_pull_round_trips_files() {
    let agent = TestAgent::start();
    let dest = agent.dir.path().join("pushed");
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let archive = tar_of(&[("a.txt", b"alpha\n"), ("sub/dir/b.bin", &big)]);
    push_tar(agent.connect(), path_str(&dest), &mut Cursor::new(archive)).expect("push");
    assert_eq!(std::fs::read(dest.join("a.txt")).expect("a"), b"alpha\n");
    assert_eq!(std::fs::read(dest.join("sub/dir/b.bin")).expect("b"), big);

    let mut pulled = Vec::new();
    pull_tar(agent.connect(), path_str(&dest), &mut pulled).expect("pull");
    let entries = entries_of(&pulled);
    let files: Vec<_> = entries.iter().filter(|(_, d)| !d.is_empty()).collect();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].0, "pushed/a.txt");
    assert_eq!(files[0].1, b"alpha\n");
    assert_eq!(files[1].0, "pushed/sub/dir/b.bin");
    assert!(files[1].1 == big);

    let mut contents = Vec::new();
    pull_tar_contents(agent.connect(), path_str(&dest), &mut contents).expect("pull contents");
    let contents = entries_of(&contents);
    assert!(
        contents
            .iter()
            .any(|(name, data)| name.trim_start_matches("./") == "a.txt" && data == b"alpha\n"),
        "{:?}",
        contents.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(!contents.iter().any(|(n, _)| n.contains("pushed")));
}

#[test]
fn push_refuses_entries_that_escape_the_destination() {
    let agent = TestAgent::start();
    let dest = agent.dir.path().join("jail");
    for name in ["../escaped.txt", "/abs-escaped.txt", "ok/../../escaped.txt"] {
        let result = push_tar(
            agent.connect(),
            path_str(&dest),
            &mut Cursor::new(tar_with_raw_name(name)),
        );
        match result {
            Err(ClientError::Agent {
                kind: ErrorKind::PathEscape,
                ..
            }) => {}
            other => panic!("{name}: expected a path escape refusal, got {other:?}"),
        }
    }
    assert!(!agent.dir.path().join("escaped.txt").exists());
    assert!(!Path::new("/abs-escaped.txt").exists());
}

#[test]
fn push_refuses_writing_through_a_symlink_out_of_the_destination() {
    let agent = TestAgent::start();
    let dest = agent.dir.path().join("jail");
    let outside = agent.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    // First a symlink pointing out of the jail, then a file "through" it.
    let mut builder = ::tar::Builder::new(Vec::new());
    let mut link = ::tar::Header::new_gnu();
    set_owner(&mut link);
    link.set_entry_type(::tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder
        .append_link(&mut link, "link", &outside)
        .expect("link");
    let mut file = ::tar::Header::new_gnu();
    set_owner(&mut file);
    file.set_size(4);
    file.set_mode(0o644);
    file.set_entry_type(::tar::EntryType::Regular);
    builder
        .append_data(&mut file, "link/owned.txt", &b"evil"[..])
        .expect("file");
    let archive = builder.into_inner().expect("finish");
    let result = push_tar(agent.connect(), path_str(&dest), &mut Cursor::new(archive));
    assert!(
        matches!(
            result,
            Err(ClientError::Agent {
                kind: ErrorKind::PathEscape,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!outside.join("owned.txt").exists());
}

#[test]
fn pull_skips_sockets_and_keeps_hard_links() {
    let agent = TestAgent::start();
    let dir = agent.dir.path().join("tree");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("a"), b"shared").expect("write");
    std::fs::hard_link(dir.join("a"), dir.join("b")).expect("link");
    let _socket = UnixListener::bind(dir.join("s.sock")).expect("socket");
    let mut pulled = Vec::new();
    pull_tar_contents(agent.connect(), path_str(&dir), &mut pulled).expect("pull");
    let mut archive = ::tar::Archive::new(&pulled[..]);
    let mut kinds = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let link = entry
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        kinds.push((name, entry.header().entry_type(), link));
    }
    assert!(
        !kinds.iter().any(|(n, _, _)| n.contains("s.sock")),
        "{kinds:?}"
    );
    assert!(kinds
        .iter()
        .any(|(n, t, _)| n.trim_start_matches("./") == "a" && *t == ::tar::EntryType::Regular));
    assert!(
        kinds
            .iter()
            .any(|(n, t, l)| n.trim_start_matches("./") == "b"
                && *t == ::tar::EntryType::Link
                && l.as_deref().map(|l| l.trim_start_matches("./")) == Some("a")),
        "{kinds:?}"
    );
}

#[test]
fn pull_of_a_missing_path_is_not_found() {
    let agent = TestAgent::start();
    let missing = agent.dir.path().join("missing");
    let mut sink = Vec::new();
    let result = pull_tar(agent.connect(), path_str(&missing), &mut sink);
    assert!(
        matches!(
            result,
            Err(ClientError::Agent {
                kind: ErrorKind::NotFound,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn services_start_with_probe_report_status_and_stop_on_shutdown() {
    let agent = TestAgent::start();
    let ready_flag = agent.dir.path().join("ready");
    let script = format!("sleep 0.3; touch {}; exec sleep 60", ready_flag.display());
    service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "svc".into(),
            argv: vec!["sh".into(), "-c".into(), script],
            env: vec![],
            probe: vec!["test".into(), "-e".into(), ready_flag.display().to_string()],
            probe_socket: None,
            timeout_secs: 10,
        },
    )
    .expect("service start");
    assert!(
        ready_flag.exists(),
        "Done came before the probe could succeed"
    );
    let state = service_status(agent.connect(), "svc").expect("status");
    assert!(state.running);
    assert!(state.pid.is_some());

    shutdown(agent.connect()).expect("shutdown");
    let state = service_status(agent.connect(), "svc").expect("status");
    assert!(!state.running);
}

#[test]
fn a_socket_probe_replaces_the_probe_program() {
    let agent = TestAgent::start();
    let socket = agent.dir.path().join("svc.sock");
    // The "service" only sleeps; its socket appears (bound by the test) 300 ms later. The
    // probe program always fails, so only the socket check can report ready. The clock
    // starts before the binder does, so the socket cannot exist sooner than 300 ms in.
    let started = Instant::now();
    let binder = {
        let socket = socket.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            UnixListener::bind(socket).expect("bind")
        })
    };
    service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "sock".into(),
            argv: vec!["sleep".into(), "60".into()],
            env: vec![],
            probe: vec!["false".into()],
            probe_socket: Some(SocketProbe {
                path: path_str(&socket).to_owned(),
                http_path: None,
            }),
            timeout_secs: 10,
        },
    )
    .expect("ready by its socket");
    let waited = started.elapsed();
    let _listener = binder.join().expect("binder");
    assert!(
        waited >= Duration::from_millis(250),
        "ready before the socket existed ({waited:?})"
    );
    shutdown(agent.connect()).expect("shutdown");
}

#[test]
fn a_dependency_dying_ends_the_wait_of_a_later_service() {
    let agent = TestAgent::start();
    // "ready once started": the start returns while it still runs. It dies only when told
    // (the deadline only bounds a hang), so a slow start cannot see it dead already.
    let die = agent.dir.path().join("die");
    let dep_script = format!(
        "i=0; while [ ! -e {} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
         echo dep-died; exit 2",
        die.display()
    );
    service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "dep".into(),
            argv: vec!["sh".into(), "-c".into(), dep_script],
            env: vec![],
            probe: vec![],
            probe_socket: None,
            timeout_secs: 10,
        },
    )
    .expect("dependency started");
    // dies while (or, on a slow machine, before) the later service waits: either way its
    // death must end that wait
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        std::fs::write(die, b"").expect("tell dep to die");
    });
    let started = Instant::now();
    let user = service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "user".into(),
            argv: vec!["sleep".into(), "60".into()],
            env: vec![],
            probe: vec!["false".into()],
            probe_socket: None,
            timeout_secs: 30,
        },
    );
    match user {
        Err(ClientError::Agent {
            kind: ErrorKind::ServiceFailed,
            message,
        }) => {
            assert!(message.contains("service dep"), "{message}");
            assert!(message.contains("dep-died"), "{message}");
        }
        other => panic!("expected ServiceFailed naming dep, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the timeout instead"
    );
    killer.join().expect("killer");
    shutdown(agent.connect()).expect("shutdown");
}

#[test]
fn a_service_that_dies_or_never_gets_ready_is_an_error() {
    let agent = TestAgent::start();
    let died = service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "dies".into(),
            argv: vec!["sh".into(), "-c".into(), "echo boom; exit 3".into()],
            env: vec![],
            probe: vec!["false".into()],
            probe_socket: None,
            timeout_secs: 10,
        },
    );
    match died {
        Err(ClientError::Agent {
            kind: ErrorKind::ServiceFailed,
            message,
        }) => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected ServiceFailed, got {other:?}"),
    }
    let slow = service_start(
        agent.connect(),
        ServiceStartRequest {
            name: "never-ready".into(),
            argv: vec!["sleep".into(), "60".into()],
            env: vec![],
            probe: vec!["false".into()],
            probe_socket: None,
            timeout_secs: 1,
        },
    );
    assert!(
        matches!(
            slow,
            Err(ClientError::Agent {
                kind: ErrorKind::Timeout,
                ..
            })
        ),
        "{slow:?}"
    );
    shutdown(agent.connect()).expect("shutdown");
}

#[test]
fn a_service_that_timed_out_is_probed_again_not_started_twice() {
    let agent = TestAgent::start();
    let flag = agent.dir.path().join("late-ready");
    let request = |timeout_secs| ServiceStartRequest {
        name: "late".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!("sleep 2; touch {}; exec sleep 60", flag.display()),
        ],
        env: vec![],
        probe: vec!["test".into(), "-e".into(), flag.display().to_string()],
        probe_socket: None,
        timeout_secs,
    };
    let first = service_start(agent.connect(), request(1));
    assert!(
        matches!(
            first,
            Err(ClientError::Agent {
                kind: ErrorKind::Timeout,
                ..
            })
        ),
        "{first:?}"
    );
    let pid = service_status(agent.connect(), "late").expect("status").pid;
    assert!(pid.is_some());
    service_start(agent.connect(), request(20)).expect("second start");
    assert_eq!(
        service_status(agent.connect(), "late").expect("status").pid,
        pid
    );
    shutdown(agent.connect()).expect("shutdown");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The snapshot hook of a test agent: the "fw_cfg" secret can change (a new restore), and
/// each Resume is recorded.
struct TestSnapshot {
    secret: Arc<std::sync::Mutex<Secret>>,
    resumed: Arc<std::sync::Mutex<Vec<vcontainer_proto::ResumeRequest>>>,
}

impl vcontainer_agent::SnapshotHook for TestSnapshot {
    fn current_secret(&self) -> Option<Secret> {
        Some(self.secret.lock().expect("lock").clone())
    }
    fn resume(&self, request: &vcontainer_proto::ResumeRequest) -> Result<(), String> {
        self.resumed.lock().expect("lock").push(request.clone());
        Ok(())
    }
    fn suspend(&self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_snapshot_agent_serves_the_current_secret_and_takes_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let secret = Arc::new(std::sync::Mutex::new(test_secret()));
    let resumed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let agent = Agent::for_tests(dir.path().join("logs"), test_secret()).with_snapshot(Box::new(
        TestSnapshot {
            secret: Arc::clone(&secret),
            resumed: Arc::clone(&resumed),
        },
    ));
    let agent = Arc::new(agent);
    thread::spawn(move || vcontainer_agent::serve(listener, agent));

    // a restore: the saved boot's secret no longer opens the agent, this run's does
    let fresh = Secret::from_bytes(&[0x77; SECRET_LEN]).expect("32 bytes");
    *secret.lock().expect("lock") = fresh.clone();
    let mut old = UnixStream::connect(&socket).expect("connect");
    assert!(authenticate(&mut old, &test_secret()).is_err());
    let mut conn = UnixStream::connect(&socket).expect("connect");
    authenticate(&mut conn, &fresh).expect("this run's secret");
    let request = vcontainer_proto::ResumeRequest {
        unix_time_ns: 1_700_000_000_000_000_000,
        entropy: vec![9; 64],
        state_device: Some("/dev/vdb".into()),
    };
    resume(conn, request.clone()).expect("resume");
    assert_eq!(
        resumed.lock().expect("lock").as_slice(),
        std::slice::from_ref(&request)
    );

    // an agent not booted for snapshots refuses it
    let plain = TestAgent::start();
    match resume(plain.connect(), request) {
        Err(ClientError::Agent { kind, .. }) => assert_eq!(kind, ErrorKind::BadRequest),
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

/// A guest saved while a connection is open would, once restored, close that socket of a
/// vsock device it no longer has and reset the new connection reusing its ports (seen: a
/// timed-out command's exec thread, waiting out its grace, broke the next command). So a
/// `Suspend` waits for every other connection to close, and is refused (`Busy`) while one
/// stays open.
#[test]
fn suspend_is_refused_while_another_connection_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let agent = Agent::for_tests(dir.path().join("logs"), test_secret()).with_snapshot(Box::new(
        TestSnapshot {
            secret: Arc::new(std::sync::Mutex::new(test_secret())),
            resumed: Arc::new(std::sync::Mutex::new(Vec::new())),
        },
    ));
    thread::spawn(move || vcontainer_agent::serve(listener, Arc::new(agent)));
    let connect = || {
        let mut conn = UnixStream::connect(&socket).expect("connect");
        authenticate(&mut conn, &test_secret()).expect("auth");
        conn
    };
    let busy = connect();
    let running = thread::spawn(move || {
        exec(
            busy,
            ExecRequest::new(["sleep", "4"]),
            None,
            &mut Vec::new(),
            &mut Vec::new(),
        )
    });
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    match suspend(connect(), vcontainer_proto::SuspendRequest::default()) {
        Err(ClientError::Agent { kind, message }) => {
            assert_eq!(kind, ErrorKind::Busy, "{message}");
            assert!(message.contains("still finishing"), "{message}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // it waited for the other connection a while first
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        running.join().expect("exec thread").expect("exec"),
        ExitStatus::Code(0)
    );
}
