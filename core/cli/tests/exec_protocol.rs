//! The exec channel between the host's agent client and a real guest agent, in process over a
//! Unix socket: output is opaque length-prefixed data on separate streams with the status as
//! its own value, so none of the old tool's text-framing bugs (docs/old-bugs.md §5:
//! `===OUTPUT_END===` leaks, eaten lines, truncation, lost errors, merged or buffered
//! streams, stale replies) can happen. On a real VM the same items are checked by
//! tests/tests/vm_lifecycle.rs and tests/tests/containers_live.rs (docs/old-bugs.md maps
//! them).

// test helpers outside #[test] fns: a failed setup step should just panic
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use vcontainer::agent_client::{self, ExecRequest, ExitStatus};

// ---------------------------------------------------------------------------------------
// §8.5 the host <-> guest protocol, against a real in-process agent

/// A real guest agent serving a Unix socket in this process.
struct Agent {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = Arc::new(vcontainer_agent::Agent::for_tests(
            dir.path().join("logs"),
            Self::secret(),
        ));
        std::thread::spawn(move || vcontainer_agent::serve(listener, agent));
        Agent { socket, _dir: dir }
    }

    fn secret() -> vcontainer_agent::Secret {
        vcontainer_agent::Secret::from_bytes(&[9; 32]).unwrap()
    }

    fn connect(&self) -> UnixStream {
        let mut conn = UnixStream::connect(&self.socket).unwrap();
        agent_client::authenticate(&mut conn, &Self::secret()).unwrap();
        conn
    }

    /// Runs `argv`; returns stdout, stderr and the status.
    fn exec(&self, argv: &[&str]) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let status = agent_client::exec(
            self.connect(),
            ExecRequest::new(argv.iter().copied()),
            None,
            &mut out,
            &mut err,
        )
        .unwrap();
        (out, err, status)
    }
}

/// §8.5: output without a trailing newline leaked the `===OUTPUT_END===` marker; lines
/// `-e`/`-n` were eaten by `echo`; a literal `===END===` truncated the output; an
/// `===ERROR===` or `===EXIT_CODE=` line in the output was taken as the reply. Here output
/// is opaque length-prefixed data and the status a separate value.
#[test]
fn marker_like_lines_and_a_missing_final_newline_arrive_verbatim() {
    let agent = Agent::start();
    let lines = [
        "-e",
        "-n",
        "-E",
        "===END===",
        "===OUTPUT_START===",
        "===OUTPUT_END===",
        "===EXIT_CODE=0===",
        "===ERROR===",
    ];
    let script = "for l in \"$@\"; do printf '%s\\n' \"$l\"; printf '%s\\n' \"$l\" >&2; done; \
                  printf 'no-newline'; exit 3";
    let mut argv = vec!["sh", "-c", script, "sh"];
    argv.extend(lines);
    let (out, err, status) = agent.exec(&argv);
    let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{want}no-newline"));
    assert_eq!(String::from_utf8(err).unwrap(), want);
    assert_eq!(status, ExitStatus::Code(3), "the program's status, not 0");
}

/// §8.5: the old channel was binary-unsafe (text lines through `echo`). Every byte value,
/// NULs and invalid UTF-8 included, comes back on stdout and stderr unchanged.
#[test]
fn binary_output_round_trips_on_both_streams() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 257).collect();
    let file = dir.path().join("bytes.bin");
    fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();
    let (out, err, status) = agent.exec(&["sh", "-c", "cat \"$1\"; cat \"$1\" >&2", "sh", f]);
    assert_eq!(status, ExitStatus::Code(0));
    assert!(out == data, "stdout differs ({} bytes)", out.len());
    assert!(err == data, "stderr differs ({} bytes)", err.len());
}

/// Sends each chunk written to it over a channel as it arrives.
struct Chunks(mpsc::Sender<Vec<u8>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// §8.5: the old guest buffered all output until the command ended (no `logs -f`, no pull
/// progress). Here the first line arrives while the program is still blocked, waiting for a
/// file that the test creates only after it has seen that line.
#[test]
fn output_streams_while_the_program_is_still_running() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let go_s = go.to_str().unwrap().to_string();
    let conn = agent.connect();
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let mut out = Chunks(tx);
        agent_client::exec(
            conn,
            ExecRequest::new([
                "sh",
                "-c",
                "echo first; while [ ! -e \"$1\" ]; do sleep 0.05; done; echo second",
                "sh",
                &go_s,
            ]),
            None,
            &mut out,
            &mut io::sink(),
        )
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no output while the program runs");
    assert_eq!(first, b"first\n");
    assert!(!runner.is_finished(), "the program ended before its go");
    fs::write(&go, "").unwrap();
    let status = runner.join().unwrap().unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    let rest: Vec<u8> = rx.iter().flatten().collect();
    assert_eq!(rest, b"second\n");
}

/// Accepts the first write, then fails (a client that goes away mid-command).
struct FailsAfterFirst(bool);

impl Write for FailsAfterFirst {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"));
        }
        self.0 = true;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// §8.5: with no request ids, the reply of an abandoned command could be delivered to the
/// next one. Every command has its own connection: a command abandoned mid-output leaves
/// nothing for the next, which gets exactly its own output and status.
#[test]
fn an_abandoned_command_never_answers_the_next_one() {
    let agent = Agent::start();
    let r = agent_client::exec(
        agent.connect(),
        ExecRequest::new([
            "sh",
            "-c",
            "echo old-1; sleep 0.5; echo old-2; sleep 0.5; echo old-3; exit 9",
        ]),
        None,
        &mut FailsAfterFirst(false),
        &mut io::sink(),
    );
    assert!(r.is_err(), "a failed sink must fail the call: {r:?}");
    for i in 0..3 {
        let (out, err, status) = agent.exec(&["sh", "-c", &format!("echo fresh-{i}; exit {i}")]);
        assert_eq!(String::from_utf8(out).unwrap(), format!("fresh-{i}\n"));
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
        assert_eq!(status, ExitStatus::Code(i));
    }
}

/// §8.5: stdout and stderr were merged; an `===ERROR===` reply was ignored (exit 0). The
/// streams stay apart, and an agent-side failure is an error value, never a success.
#[test]
fn streams_stay_apart_and_agent_errors_are_errors() {
    let agent = Agent::start();
    let (out, err, status) = agent.exec(&["sh", "-c", "echo to-out; echo to-err >&2; exit 4"]);
    assert_eq!(out, b"to-out\n");
    assert_eq!(err, b"to-err\n");
    assert_eq!(status, ExitStatus::Code(4));
    let (_, _, status) = agent.exec(&["/nonexistent/program"]);
    assert_eq!(status.shell_code(), 127);
    let mut request = ExecRequest::new(["true"]);
    request.cwd = Some("/nonexistent/dir".into());
    let r = agent_client::exec(
        agent.connect(),
        request,
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    );
    assert!(r.is_err(), "a refused exec reported as {r:?}");
}
