//! End-to-end test of the engine API on the host (`memres start --expose`, `vexpose`): the
//! host's own docker client (any docker CLI on PATH) and podman (`podman --remote`, Debian's
//! package) drive the engine in the real guest through the relayed socket, and see the same
//! images and containers as `vdkr`/`vpdmn`, and Debian's `docker-compose` brings up two
//! services that answer each other. One VM per runtime, every check on it.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, skip, stderr, stdout, vm_or_skip, World,
};

/// (tool, runtime, host client program, the client's arguments before the command)
const CLIENTS: [(&str, &str, &str, &[&str]); 2] = [
    ("vdkr", "docker", "docker", &[]),
    ("vpdmn", "podman", "podman", &["--remote"]),
];

struct Client<'a> {
    program: &'a str,
    pre: &'a [&'a str],
    env: (&'static str, String),
    config: PathBuf,
}

impl Client<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.program);
        c.args(self.pre)
            .args(args)
            .env(self.env.0, &self.env.1)
            // the client's own config and state stay in the test's world
            .env("XDG_CONFIG_HOME", &self.config)
            .env("XDG_DATA_HOME", &self.config)
            .env("XDG_RUNTIME_DIR", &self.config);
        if self.program == "docker" {
            // (podman reads DOCKER_CONFIG as its auth file)
            c.env("DOCKER_CONFIG", &self.config);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn the host client")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{} {args:?}: {}{}",
            self.program,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

/// Whether the host client `program` runs (the caller skips through the harness's `skip`,
/// which fails the test under `VCONTAINER_E2E=1`).
fn client_present(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `vexpose` / `memres start --expose`: the runtime's own client runs a container (output,
/// stdin and exit code through the relay), lists what the tool lists, streams `logs -f`,
/// survives 8 parallel clients and one killed mid-stream; the socket is the owner's only
/// and goes with the VM.
#[test]
fn the_hosts_own_client_drives_the_guest_engine() {
    for (tool, runtime, program, pre) in CLIENTS {
        vm_or_skip!(runtime);
        if !client_present(program) {
            skip(format!(
                "no `{program}` client on PATH (scripts/setup-host.sh installs it)"
            ));
            continue;
        }
        let w = World::new();
        let started = w.run_ok(tool, ["vexpose"]);
        let state = w.home.path().join(format!(".{tool}")).join("x86_64");
        let socket = state.join(format!("{runtime}.sock"));
        let env = if runtime == "docker" {
            "DOCKER_HOST"
        } else {
            "CONTAINER_HOST"
        };
        let url = format!("unix://{}", socket.display());
        assert!(
            started.contains(&format!("export {env}={url}")),
            "{tool}: {started}"
        );
        let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
        assert!(meta.file_type().is_socket(), "{tool}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{tool}");
        assert!(
            w.run_ok(tool, ["memres", "status"]).contains(&url),
            "{tool}: status names the socket"
        );
        let tar = w.home.path().join("bb.tar");
        busybox_rootfs_tar(&tar).expect("busybox tar");
        let o = w.run(
            tool,
            [OsStr::new("import"), tar.as_os_str(), OsStr::new("bb:1")],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} import: {}", stderr(&o));

        let config = w.home.path().join("client");
        std::fs::create_dir_all(&config).expect("mkdir");
        let c = Client {
            program,
            pre,
            env: (env, url.clone()),
            config,
        };
        checks(&w, tool, &c);
        ports(&w, tool, &c, &state);
        doctor_and_context(&w, tool, &url, &c);
        compose(&w, tool, &url);

        w.run_ok(tool, ["memres", "stop"]);
        assert!(!socket.exists(), "{tool}: the socket outlived the VM");
        assert_no_vm_processes(w.home.path());
    }
}

fn checks(w: &World, tool: &str, c: &Client<'_>) {
    // a container's output and exit code come back through the relay
    assert_eq!(
        c.ok(&["run", "--rm", "bb:1", "uname", "-m"]),
        "x86_64\n",
        "{tool}"
    );
    let o = c.run(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{tool}: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n", "{tool}");
    assert!(stderr(&o).contains("err"), "{tool}: {}", stderr(&o));
    // stdin, and its end (a half-close the relay carries), reach the container
    let mut child = c
        .cmd(&["run", "-i", "--rm", "bb:1", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through stdin\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&o), "through stdin\ndone\n", "{tool}");

    // the client and the tool see the same engine
    assert!(c.ok(&["images"]).contains("bb"), "{tool}");
    c.ok(&[
        "run",
        "-d",
        "--name",
        "streamer",
        "bb:1",
        "sh",
        "-c",
        "echo one; sleep 1; echo two; sleep 3600",
    ]);
    let ps = w.run_ok(tool, ["ps"]);
    assert!(ps.contains("streamer"), "{tool}: {ps}");

    // logs -f streams; a client killed mid-stream ends only its own relay
    let mut follower = c
        .cmd(&["logs", "-f", "streamer"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut follower_out = follower.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !seen.contains("two") && Instant::now() < deadline {
            match std::io::Read::read(&mut follower_out, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let seen = reader.join().expect("reader");
    assert!(
        seen.contains("one") && seen.contains("two"),
        "{tool}: logs -f: {seen:?}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    // 8 clients at once all get their answer
    let parallel: Vec<_> = (0..8)
        .map(|_| {
            c.cmd(&["ps", "--format", "{{.Names}}"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for (n, child) in parallel.into_iter().enumerate() {
        let o = child.wait_with_output().expect("wait");
        assert!(
            o.status.success() && stdout(&o).contains("streamer"),
            "{tool}: parallel client {n}: {}",
            stdout(&o)
        );
    }
    c.ok(&["rm", "-f", "streamer"]);
    assert!(!w.run_ok(tool, ["ps", "-a"]).contains("streamer"), "{tool}");
}

/// A two-service compose file (an httpd and a client that fetches its page by service name)
/// comes up through the relayed socket; podman's socket serves the Docker API too.
fn compose(w: &World, tool: &str, url: &str) {
    if !client_present("docker-compose") {
        skip("no `docker-compose` on PATH (scripts/setup-host.sh installs it)");
        return;
    }
    let dir = w.home.path().join("compose");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"version: "3"
services:
  web:
    image: bb:1
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && httpd -f -p 8080 -h /www"]
  client:
    image: bb:1
    depends_on: [web]
    command: ["sh", "-c", "for i in $$(busybox seq 30); do busybox wget -qO- http://web:8080/ && exit 0; sleep 1; done; exit 1"]
"#,
    )
    .expect("write compose file");
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .args(["--no-ansi", "-p", "vct"])
            .args(args)
            .current_dir(&dir)
            .env("DOCKER_HOST", url)
            .env("DOCKER_CONFIG", w.home.path().join("client"))
            .output()
            .expect("spawn docker-compose")
    };
    let o = compose(&[
        "up",
        "--abort-on-container-exit",
        "--exit-code-from",
        "client",
    ]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{tool}: compose up: {text}");
    assert!(text.contains("hello-from-web"), "{tool}: {text}");
    let o = compose(&["down"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{tool}: compose down: {}",
        stderr(&o)
    );
}

/// A free TCP port on the host's loopback (bound and released: QEMU takes it next).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET /` on 127.0.0.1:port; the body, or None when nothing answers there.
fn http_get(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut got = String::new();
    s.read_to_string(&mut got).ok()?;
    got.contains("200").then_some(got)
}

/// A container the host's client starts with `-p H:80` is reachable from the host at
/// 127.0.0.1:H (the supervisor saw its start event and added the forward), and is not after
/// `stop` (the die event removed it).
fn ports(w: &World, tool: &str, c: &Client<'_>, state: &std::path::Path) {
    let port = free_port();
    c.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "bb:1",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-through-the-socket > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut page = None;
    while page.is_none() && Instant::now() < deadline {
        page = http_get(port);
        if page.is_none() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let page = page.unwrap_or_else(|| panic!("{tool}: 127.0.0.1:{port} never answered"));
    assert!(page.contains("hello-through-the-socket"), "{tool}: {page}");
    let records = std::fs::read_to_string(state.join("port-forwards.json")).expect("records");
    assert!(
        records.contains(&format!("\"host\": {port}")) && records.contains("\"web\""),
        "{tool}: {records}"
    );
    assert!(
        !records.contains("0.0.0.0"),
        "{tool}: loopback only: {records}"
    );
    assert!(
        w.run_ok(tool, ["ps"]).contains(&port.to_string()),
        "{tool}: ps shows the forward"
    );

    c.ok(&["stop", "-t", "1", "web"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gone = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
            && !std::fs::read_to_string(state.join("port-forwards.json"))
                .unwrap_or_default()
                .contains("\"web\"");
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tool}: the forward of 127.0.0.1:{port} outlived its container"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.ok(&["rm", "web"]);
}

/// `doctor` prints the client line while the API is exposed; `context` prints the client's
/// command that saves it (the plugin's words), naming the same socket, and `--create` runs
/// it: the client then reaches the engine by that name, without the variable.
fn doctor_and_context(w: &World, tool: &str, url: &str, c: &Client<'_>) {
    let o = w.run(tool, ["doctor"]);
    let text = stdout(&o);
    assert!(
        text.contains("engine API: export ") && text.contains(url),
        "{tool}: doctor: {text}"
    );
    let line = w.run_ok(tool, ["context"]);
    let socket = url.trim_start_matches("unix://");
    assert!(
        line.contains("vcontainer-x86_64") && line.contains(socket),
        "{tool}: context: {line}"
    );
    // the client's config stays in the test's world
    let o = w
        .cmd(tool)
        .args(["context", "--create"])
        .env("DOCKER_CONFIG", &c.config)
        .env("XDG_CONFIG_HOME", &c.config)
        .env("XDG_DATA_HOME", &c.config)
        .env("XDG_RUNTIME_DIR", &c.config)
        .output()
        .expect("spawn");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{tool}: context --create: {}",
        stderr(&o)
    );
    let by_name = if c.program == "docker" {
        ["--context", "vcontainer-x86_64"]
    } else {
        ["--connection", "vcontainer-x86_64"]
    };
    let o = c
        .cmd(&[by_name[0], by_name[1], "ps", "--format", "{{.Names}}"])
        .env_remove(c.env.0)
        .output()
        .expect("spawn");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{tool}: the client by the context's name: {}",
        stderr(&o)
    );
}
