//! The PID-1 reaping mode, in its own test process: a global `waitpid` reaper would steal
//! the children of any other test running in the same process.
//!
//! The test process makes itself a child subreaper, so orphans land on it as they would on
//! PID 1, and checks that every exec still gets its own program's exit status.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vcontainer_agent::{serve, Agent, AgentInfo, NoShutdown, Reaper};
use vcontainer_proto::{
    auth, read_frame, write_frame, ExecRequest, ExitStatus, Frame, FrameType, Request, Response,
    PROTOCOL_VERSION,
};

fn secret() -> auth::Secret {
    auth::Secret::from_bytes(&[42; auth::SECRET_LEN]).expect("32 bytes")
}

/// Run one exec over the protocol and collect (stdout, stderr, status).
fn exec(socket: &std::path::Path, argv: &[&str]) -> (String, String, ExitStatus) {
    let mut conn = UnixStream::connect(socket).expect("connect");
    auth::client_exchange(
        &mut conn,
        &secret(),
        PROTOCOL_VERSION,
        &[5; auth::NONCE_LEN],
    )
    .expect("authenticate");
    let request = Request::Exec(ExecRequest::new(argv.iter().copied()));
    let frame = Frame::control(&request).expect("encode");
    write_frame(&mut conn, FrameType::Control, &frame.payload).expect("send");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let frame = read_frame(&mut conn)
            .expect("read")
            .expect("agent closed early");
        match frame.kind {
            FrameType::Stdout => out.write_all(&frame.payload).expect("buf"),
            FrameType::Stderr => err.write_all(&frame.payload).expect("buf"),
            FrameType::Control => match frame.parse::<Response>().expect("parse") {
                Response::Started { .. } => {}
                Response::Exited { status } => {
                    return (
                        String::from_utf8_lossy(&out).into_owned(),
                        String::from_utf8_lossy(&err).into_owned(),
                        status,
                    )
                }
                other => panic!("unexpected {other:?}"),
            },
            _ => {}
        }
    }
}

#[test]
fn global_reaper_gives_each_exec_its_own_status_and_reaps_orphans() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes this process's reaping role.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "cannot become a subreaper");

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let info = AgentInfo {
        runtime: "test".into(),
        warnings: Vec::new(),
        service_log_dir: dir.path().join("logs"),
        secret: Some(secret()),
    };
    let reaper = Reaper::global();
    let agent = Arc::new(Agent::new(info, reaper.clone(), Box::new(NoShutdown)));
    thread::spawn(move || serve(listener, agent));

    // Concurrent execs, each leaving an orphan behind that the reaper must collect.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let socket = socket.clone();
            thread::spawn(move || {
                let script = format!("(sleep 0.2; exit 99) & echo {i}; exit {i}");
                exec(&socket, &["sh", "-c", &script])
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let (out, _, status) = handle.join().expect("thread");
        assert_eq!(out, format!("{i}\n"));
        assert_eq!(status, ExitStatus::Code(i32::try_from(i).expect("small")));
    }
    let (_, err, status) = exec(&socket, &["no-such-program-vcontainer"]);
    assert_eq!(status, ExitStatus::Code(127), "{err}");
    let (_, _, status) = exec(&socket, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(status, ExitStatus::Signal(15));

    // A spawn whose exec fails inside std (which then reaps the child itself) must neither
    // hang nor confuse the reaper.
    let mut missing = Command::new("/nonexistent/vcontainer-test-binary");
    assert!(reaper.spawn(&mut missing).is_err());
    // The same through std's fork+exec path (taken when a pre_exec hook is set).
    let mut forked = Command::new("/nonexistent/vcontainer-test-binary");
    // SAFETY: the hook does nothing.
    unsafe {
        forked.pre_exec(|| Ok(()));
    }
    assert!(reaper.spawn(&mut forked).is_err());
    let status = reaper
        .run(Command::new("sh").args(["-c", "exit 5"]))
        .expect("run");
    assert_eq!(status, ExitStatus::Code(5));

    // All orphans (the background sleeps) are reaped: no zombie children remain. The
    // deadline only bounds a hang (the loop ends as soon as none is left).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let zombies = zombie_children();
        if zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "zombies left: {zombies:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of our children that are zombies.
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after_comm) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
            continue;
        };
        let mut fields = after_comm.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().unwrap_or("");
        if ppid == me && state == "Z" {
            zombies.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    zombies
}
