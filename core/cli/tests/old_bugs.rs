//! The old shell tool's known bugs (spec/cli.md §8, items 1-19) that can be proved without a
//! guest VM: the real `vcontainer` binary under its multi-call names with a temp HOME, and
//! the host's agent client against a real in-process guest agent over a Unix socket (the
//! protocol that replaced the old `===OUTPUT_END===` text framing). docs/old-bugs.md maps
//! every item to its tests; the ones that need a VM are in tests/tests/old_bugs.rs.

// test helpers outside #[test] fns: a failed setup step should just panic
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use vcontainer::agent_client::{self, ExecRequest, ExitStatus};

const NAMES: &[&str] = &["vcontainer", "vdkr", "vpdmn", "vdkr-x86_64", "vpdmn-x86_64"];

/// A temp dir with the multi-call links, a HOME and a working dir.
/// The cargo target dir holding the binary under test and the plugins built with it.
fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vcontainer"))
        .parent()
        .expect("<target>/<profile>/vcontainer")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "home", "work"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        for name in NAMES {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_vcontainer"),
                dir.path().join("bin").join(name),
            )
            .unwrap();
        }
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The link `name` with a clean environment: HOME in the fixture, the caller's PATH.
    fn cmd(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.path("bin").join(name));
        cmd.env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // a build tree names its plugins: they are never taken from beside the binary
            .env("VCONTAINER_PLUGIN_PATH", build_dir())
            .current_dir(self.path("work"));
        cmd
    }

    fn run(&self, name: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.cmd(name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A runtime command that cannot boot (no blobs there): it fails at blob resolution, after
/// the front has read every option, setting and environment variable.
const NO_BLOBS: &[&str] = &["--blob-dir", "/nonexistent-blobs", "images"];

// ---------------------------------------------------------------------------------------
// §8.2 vstorage with --state-dir

/// §8.2: `vstorage list` with `--state-dir X` listed every sibling of X as "storage"; only
/// dirs holding our marker are listed here, and `clean --all` deletes only them.
#[test]
fn vstorage_list_and_clean_with_state_dir_ignore_unmarked_siblings() {
    let f = Fixture::new();
    let project = f.path("work/project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(project.join("src/main.c"), "int main;").unwrap();
    fs::create_dir_all(project.join("state")).unwrap();
    fs::write(project.join("state/.vcontainer-state"), "vpdmn\n").unwrap();
    let o = f.run(
        "vpdmn",
        &[],
        &["--state-dir", "project/state", "vstorage", "list"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("state\n  Path:"), "{out}");
    assert!(!out.contains("src"), "an unmarked sibling is listed: {out}");
    let o = f.run(
        "vpdmn",
        &[],
        &["--state-dir", "project/state", "vstorage", "clean", "--all"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!project.join("state").exists());
    assert_eq!(
        fs::read_to_string(project.join("src/main.c")).unwrap(),
        "int main;"
    );
}

// ---------------------------------------------------------------------------------------
// §8.4 global options stop at the command

/// §8.4: `--version`, `--help`, `-it`, `--config` after the command belong to the
/// container command: the tool neither answers them itself nor takes them as its own
/// options (it goes on to the VM, which is not there, and says so).
#[test]
fn tool_options_after_the_command_reach_the_container_command() {
    let f = Fixture::new();
    for args in [
        &["exec", "-it", "c1", "sh", "--version"][..],
        &["run", "-ti", "alpine", "python", "--help"],
        &["run", "alpine", "cat", "--config", "/nonexistent/auth.json"],
    ] {
        let mut all = vec!["--blob-dir", "/nonexistent-blobs"];
        all.extend_from_slice(args);
        let o = f.run("vdkr", &[], &all);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(
            !stdout(&o).contains("vdkr version") && !stdout(&o).contains("Usage: vdkr"),
            "{args:?}: the tool answered: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("guest blobs") && !stderr(&o).contains("--config"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------
// §8.17 environment variables of the other tool

/// §8.17: `VDKR_TIMEOUT` / `VDKR_VERBOSE` applied to vpdmn too (and `VPDMN_*` to vdkr). An
/// invalid value makes the tool that reads it fail, naming it: only the owner fails.
#[test]
fn timeout_and_verbose_variables_apply_to_their_own_tool_only() {
    let f = Fixture::new();
    for (var, value) in [("TIMEOUT", "abc"), ("VERBOSE", "maybe")] {
        for (owner, other) in [("vdkr", "vpdmn"), ("vpdmn", "vdkr")] {
            let name = format!("{}_{var}", owner.to_uppercase());
            let env = [(name.as_str(), value)];
            let o = f.run(owner, &env, NO_BLOBS);
            assert_eq!(o.status.code(), Some(125), "{owner} {name}");
            assert!(
                stderr(&o).contains(&format!("${name}")),
                "{owner} did not read {name}: {}",
                stderr(&o)
            );
            let o = f.run(other, &env, NO_BLOBS);
            assert_eq!(o.status.code(), Some(125), "{other} {name}");
            assert!(
                !stderr(&o).contains(&name) && stderr(&o).contains("guest blobs"),
                "{other} read {name}: {}",
                stderr(&o)
            );
        }
    }
}

/// §8.17: `VDKR_BLOB_DIR` was used by vpdmn. Each tool's blob variable is its own (`doctor`
/// names where the blobs came from); `VCONTAINER_BLOB_DIR` is the shared one.
#[test]
fn blob_dir_variables_apply_to_their_own_tool_only() {
    let f = Fixture::new();
    let fake = f.path("fake-blobs");
    fs::create_dir(&fake).unwrap();
    let fake_s = fake.to_str().unwrap();
    for (owner, other) in [("vdkr", "vpdmn"), ("vpdmn", "vdkr")] {
        let name = format!("{}_BLOB_DIR", owner.to_uppercase());
        let env = [(name.as_str(), fake_s)];
        let mine = stdout(&f.run(owner, &env, &["doctor"]));
        let blobs_line = |report: &str| {
            report
                .lines()
                .find(|l| l.contains("blobs:"))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            blobs_line(&mine).contains(fake_s) && blobs_line(&mine).contains(&name),
            "{owner} ignored {name}: {mine}"
        );
        let theirs = stdout(&f.run(other, &env, &["doctor"]));
        assert!(
            !theirs.contains(fake_s) && !theirs.contains(&name),
            "{other} used {name}: {theirs}"
        );
    }
}

/// §8.17: the state dir variable likewise.
#[test]
fn state_dir_variable_applies_to_its_own_tool_only() {
    let f = Fixture::new();
    let root = f.path("roots");
    let env = [("VDKR_STATE_DIR", root.to_str().unwrap())];
    let o = f.run("vdkr-x86_64", &env, &["vstorage", "path"]);
    assert_eq!(stdout(&o).trim_end(), root.join("x86_64").to_str().unwrap());
    let o = f.run("vpdmn-x86_64", &env, &["vstorage", "path"]);
    assert!(
        stdout(&o).trim_end().ends_with(".vpdmn/x86_64"),
        "vpdmn used VDKR_STATE_DIR: {}",
        stdout(&o)
    );
}

// ---------------------------------------------------------------------------------------
// §8.19 no silent backend switch

/// §8.19: the old tools switched to the Xen backend whenever `xl` was on PATH. There is no
/// Xen backend here: an `xl` on PATH is never run and changes no output.
#[test]
fn an_xl_on_path_changes_nothing() {
    let f = Fixture::new();
    let xen_bin = f.path("xen-bin");
    fs::create_dir(&xen_bin).unwrap();
    let marker = f.path("xl-was-run");
    let xl = xen_bin.join("xl");
    fs::write(
        &xl,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 0\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&xl, fs::Permissions::from_mode(0o755)).unwrap();
    let with_xl = format!(
        "{}:{}",
        xen_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (tool, args) in [
        ("vdkr", &["doctor"][..]),
        ("vpdmn", &["doctor"]),
        ("vdkr", NO_BLOBS),
        ("vpdmn", NO_BLOBS),
    ] {
        let plain = f.run(tool, &[], args);
        let xen = f.run(tool, &[("PATH", &with_xl)], args);
        assert_eq!(xen.status.code(), plain.status.code(), "{tool} {args:?}");
        assert_eq!(stdout(&xen), stdout(&plain), "{tool} {args:?}");
        assert_eq!(stderr(&xen), stderr(&plain), "{tool} {args:?}");
        assert!(
            !stdout(&xen).to_lowercase().contains("xen"),
            "{}",
            stdout(&xen)
        );
    }
    assert!(!marker.exists(), "xl was run");
}

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
