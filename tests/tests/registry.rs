//! Registry options end to end (issue 4 items 1 and 7) against a local `docker-registry` on
//! loopback, reached from the guest at 10.0.2.2: push/pull round trip with
//! `--insecure-registry`, applied at the next command of a running memres VM (and not
//! installed again when unchanged); login with `--password-stdin` against an
//! htpasswd-protected registry; `--config auth.json` and `--registry-user`/
//! `--registry-password` for one command; `--registry` as the default for unqualified names
//! in pull, run and vrun; `--ca-cert` against a TLS registry with a self-signed certificate;
//! `--config` validation; a cold `pull` with credentials and a cold `login` on a terminal
//! (no secret on any command line or state file), and a one-shot vdkr `pull`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vcontainer_tests::fixtures::{
    base64, write_auth_file, BusyboxLayouts, LocalRegistry, MemresGuard,
};
use vcontainer_tests::terminal::on_terminal;
use vcontainer_tests::{
    assert_fsck_clean, assert_no_vm_processes, busybox_rootfs_tar, pids_matching, stderr, stdout,
    vm_or_skip, World,
};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

fn registry_or_skip() -> bool {
    if LocalRegistry::available() {
        return true;
    }
    vcontainer_tests::skip("/usr/bin/docker-registry is not installed");
    false
}

/// A `docker-registry` the guest reaches at 10.0.2.2; `dir` holds its storage and log.
trait GuestRegistry {
    /// `10.0.2.2:<port>`: the registry as the guest sees it.
    fn guest_address(&self) -> String;
    fn dir(&self) -> &Path;

    /// Whether a repository has been pushed (its dir exists in the registry's storage).
    fn has_repository(&self, name: &str) -> bool {
        self.dir()
            .join("storage/docker/registry/v2/repositories")
            .join(name)
            .is_dir()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("registry.log")).unwrap_or_default()
    }
}

impl GuestRegistry for LocalRegistry {
    fn guest_address(&self) -> String {
        LocalRegistry::guest_address(self)
    }
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One tool against one fresh registry: a memres VM holding `bb:1`, also tagged `remote`.
struct Session<'a> {
    w: &'a World,
    tool: &'a str,
    /// The registry as the guest reaches it (`10.0.2.2:<port>`).
    addr: String,
    /// `<addr>/<repo>:1`, the name pushed and pulled.
    remote: String,
}

impl Session<'_> {
    fn ok(&self, args: &[&str]) -> String {
        self.w.run_ok(self.tool, args)
    }

    /// Fails unless `tool args` fails; returns its stdout and stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.w.run(self.tool, args);
        assert_ne!(
            o.status.code(),
            Some(0),
            "{} {args:?} succeeded: {}",
            self.tool,
            stdout(&o)
        );
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// `--insecure-registry <addr> push <remote>`
    fn insecure_push(&self) -> [&str; 4] {
        ["--insecure-registry", &self.addr, "push", &self.remote]
    }
}

/// What every registry round trip does for each tool: skip without docker-registry or the
/// tool's guest, start a registry, a memres VM holding `bb:1` tagged `<registry>/<repo>:1`,
/// run `body`, and check that `memres stop` succeeds (a guard stops the VM on a panic too).
fn each_tool<R: GuestRegistry>(
    repo: &str,
    start: impl Fn() -> Result<R, String>,
    body: impl Fn(&Session<'_>, &R),
) {
    if !registry_or_skip() {
        return;
    }
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let reg = start().expect("registry");
        let addr = reg.guest_address();
        let remote = format!("{addr}/{repo}:1");
        let w = memres_with_busybox(tool);
        let _stop = MemresGuard::new(&w, tool);
        let s = Session {
            w: &w,
            tool,
            addr,
            remote,
        };
        s.ok(&["tag", "bb:1", &s.remote]);
        body(&s, &reg);
        s.ok(&["memres", "stop"]);
    }
}

/// A world with a running memres VM and the busybox image `bb:1`.
fn memres_with_busybox(tool: &str) -> World {
    let w = World::new();
    w.run_ok(tool, ["memres", "start"]);
    let tar = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    let o = w.run(tool, ["vimport", tar.to_str().expect("utf-8"), "bb:1"]);
    if o.status.code() != Some(0) {
        let _ = w.run(tool, ["memres", "stop"]);
        panic!("{tool} vimport of the busybox rootfs: {}", stderr(&o));
    }
    w
}

/// `tool args` with `input` on stdin.
fn with_stdin(w: &World, tool: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = w
        .cmd(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn config_file_is_validated_before_anything_runs() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let d = w.home.path().join("auth");
    std::fs::create_dir_all(&d).expect("mkdir");
    let good = d.join("good.json");
    write_auth_file(&good, "10.0.2.2:5000", "u", "p", 0o600);
    let wide = d.join("wide.json");
    write_auth_file(&wide, "10.0.2.2:5000", "u", "p", 0o644);
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let empty = d.join("empty.json");
    std::fs::write(&empty, "").expect("write");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let big = d.join("big.json");
    std::fs::write(&big, vec![b' '; 1024 * 1024 + 1]).expect("write");
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let junk = d.join("junk.json");
    std::fs::write(&junk, "not json").expect("write");
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cases: [(&Path, &str); 7] = [
        (
            &wide,
            "file has unsafe permissions (0644); expected 0600 or 0400.",
        ),
        (&link, "must not be a symlink"),
        (&d.join("missing.json"), "file not found"),
        (&d, "must be a regular file"),
        (&empty, "file is empty or too small to be valid JSON"),
        (&big, "file is too large"),
        (&junk, "is not valid JSON"),
    ];
    for (tool, _) in TOOLS {
        for (path, want) in cases {
            let o = w.run(
                tool,
                ["--config", path.to_str().expect("utf-8"), "pull", "bb:1"],
            );
            assert_eq!(
                o.status.code(),
                Some(125),
                "{tool} {}: {}",
                path.display(),
                stderr(&o)
            );
            let err = stderr(&o);
            assert!(
                err.contains(&format!("--config {}: {want}", path.display())),
                "{tool}: {err}"
            );
        }
        // the environment variable gets the same checks (both tools read both names)
        let o = w
            .cmd(tool)
            .env("VDKR_CONFIG", &wide)
            .args(["images"])
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        assert!(stderr(&o).contains("unsafe permissions"), "{}", stderr(&o));
    }
    assert!(
        pids_matching(&w.home.path().display().to_string()).is_empty(),
        "a process was started although --config was refused"
    );
}

#[test]
fn push_pull_round_trip_with_insecure_registry() {
    each_tool("bb", LocalRegistry::plain, |s, reg| {
        let (tool, remote) = (s.tool, s.remote.as_str());
        // without the option the registry is TLS: refused
        let out = s.fails(&["push", remote]);
        assert!(out.to_lowercase().contains("http"), "{tool}: {out}");
        // with it, on the same memres VM, without a restart
        s.ok(&s.insecure_push());
        // the same options again: the guest configuration is not installed a second time
        let o =
            s.w.cmd(tool)
                .env("VCONTAINER_LOG", "vcontainer=debug")
                .args(s.insecure_push())
                .output()
                .expect("run");
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("registry configuration unchanged"),
            "{tool}: {}",
            stderr(&o)
        );
        assert!(
            reg.has_repository("bb"),
            "{tool}: nothing arrived; {}",
            reg.log()
        );
        s.ok(&["rmi", remote]);
        s.ok(&["rmi", "bb:1"]);
        s.ok(&["--insecure-registry", &s.addr, "pull", remote]);
        let out = s.ok(&["vrun", remote, "/bin/echo", "pulled-ok"]);
        assert_eq!(out.trim(), "pulled-ok");
        // the next command without the option is back to TLS
        s.ok(&["rmi", remote]);
        s.fails(&["pull", remote]);
    });
}

#[test]
fn login_with_password_stdin_against_htpasswd_registry() {
    let start = || LocalRegistry::with_htpasswd("tester", "s3cret pass");
    each_tool("private/bb", start, |s, reg| {
        let (tool, addr) = (s.tool, s.addr.as_str());
        assert_eq!(reg.probe().expect("probe"), 401);
        let out = s.fails(&s.insecure_push());
        assert!(
            out.to_lowercase().contains("unauthorized")
                || out.contains("authentication required")
                || out.contains("no basic auth credentials"),
            "{tool}: {out}"
        );
        let login = [
            "--insecure-registry",
            addr,
            "login",
            "-u",
            "tester",
            "--password-stdin",
            addr,
        ];
        let o = with_stdin(s.w, tool, &login, "wrong\n");
        assert_ne!(o.status.code(), Some(0), "{tool}: wrong password accepted");
        let o = with_stdin(s.w, tool, &login, "s3cret pass\n");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tool}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("Login Succeeded"), "{}", stdout(&o));
        s.ok(&s.insecure_push());
        assert!(reg.has_repository("private/bb"));
        s.ok(&["logout", addr]);
    });
}

#[test]
fn config_auth_file_authenticates_one_command_only() {
    let start = || LocalRegistry::with_htpasswd("tester", "pw");
    each_tool("cfg/bb", start, |s, reg| {
        let auth = s.w.home.path().join("auth.json");
        write_auth_file(&auth, &s.addr, "tester", "pw", 0o600);
        let auth = auth.to_str().expect("utf-8");
        s.ok(&[&["--config", auth][..], &s.insecure_push()].concat());
        assert!(reg.has_repository("cfg/bb"));
        // the credentials were for that command only
        s.fails(&s.insecure_push());
    });
}

#[test]
fn default_registry_serves_unqualified_names() {
    each_tool("bb", LocalRegistry::plain, |s, _| {
        let (w, tool, addr, remote) = (s.w, s.tool, s.addr.as_str(), s.remote.as_str());
        s.ok(&s.insecure_push());
        s.ok(&["rmi", remote]);
        s.ok(&["rmi", "bb:1"]);
        // the private default registry is reached over plain HTTP without another option
        s.ok(&["--registry", addr, "pull", "bb:1"]);
        let out = s.ok(&["vrun", "bb:1", "/bin/echo", "default-ok"]);
        assert_eq!(out.trim(), "default-ok");
        // run and vrun of a missing unqualified image pull it from the default registry;
        // the pull's progress goes to stderr, stdout is the container's alone
        for (cmd, word) in [("run", "run-ok"), ("vrun", "vrun-ok")] {
            remove_image(w, tool, &["bb:1", remote]);
            let mut args = vec!["--registry", addr, cmd];
            if cmd == "run" {
                args.push("--rm");
            }
            args.extend(["bb:1", "/bin/echo", word]);
            let out = s.ok(&args);
            assert_eq!(out, format!("{word}\n"), "{tool} {cmd}");
        }
        // a name the default registry does not have falls back to docker.io (offline here:
        // it fails, saying where it looked)
        let o = w.run(tool, ["--registry", addr, "run", "--rm", "nosuch:1"]);
        assert_ne!(o.status.code(), Some(0), "{tool}: {}", stdout(&o));
        if tool == "vdkr" {
            assert!(
                stderr(&o).contains("not found in the default registry"),
                "{tool}: {}",
                stderr(&o)
            );
        }
    });
}

/// Removes every name given (ignoring names that are not there) and checks the image is
/// gone, so the next command must pull it.
fn remove_image(w: &World, tool: &str, names: &[&str]) {
    for n in names {
        let _ = w.run(tool, ["rmi", n]);
    }
    let o = w.run(tool, ["image", "inspect", names[0]]);
    assert_ne!(o.status.code(), Some(0), "{tool}: {} still there", names[0]);
}

#[test]
fn registry_user_and_password_authenticate_without_a_config_file() {
    let start = || LocalRegistry::with_htpasswd("tester", "s3cret pass");
    each_tool("flags/bb", start, |s, reg| {
        /// `--registry-user tester --registry-password PASSWORD THEN...`
        fn creds<'a>(password: &'a str, then: &[&'a str]) -> Vec<&'a str> {
            let user = ["--registry-user", "tester", "--registry-password", password];
            [&user[..], then].concat()
        }
        s.fails(&creds("wrong", &s.insecure_push()));
        assert!(!reg.has_repository("flags/bb"));
        // the registry is the one the image names (no --registry needed)
        s.ok(&creds("s3cret pass", &s.insecure_push()));
        assert!(reg.has_repository("flags/bb"), "{}: {}", s.tool, reg.log());
        // for that command only
        s.fails(&s.insecure_push());
        // and pulled back with --registry R, the credentials going to R
        s.ok(&["rmi", &s.remote]);
        let pull = ["--insecure-registry", &s.addr, "pull", &s.remote];
        s.ok(&creds("s3cret pass", &pull));
    });
}

/// A `docker-registry` serving TLS on 127.0.0.1:<port> with a self-signed certificate for
/// 10.0.2.2 (the address the guest uses).
struct TlsRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRegistry {
    fn start() -> Result<TlsRegistry, String> {
        let dir = tempfile::Builder::new()
            .prefix("vct-tls-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=vcontainer-test-registry"])
            .args(["-addext", "subjectAltName=IP:10.0.2.2,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {cert}\n    key: {key}\n",
            storage = d.join("storage").display(),
            cert = d.join("cert.pem").display(),
            key = d.join("key.pem").display(),
        );
        std::fs::write(d.join("config.yml"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("docker-registry: {e}"))?;
        let reg = TlsRegistry { child, port, dir };
        // listening is enough: the handshake itself is what the test checks
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err(format!("TLS registry did not listen: {}", reg.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(reg)
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

impl GuestRegistry for TlsRegistry {
    fn guest_address(&self) -> String {
        format!("10.0.2.2:{}", self.port)
    }
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ca_cert_trusts_a_tls_registry_with_a_private_ca() {
    each_tool("tls/bb", TlsRegistry::start, |s, reg| {
        let (tool, remote) = (s.tool, s.remote.as_str());
        // the certificate is not trusted without the option
        let out = s.fails(&["push", remote]);
        assert!(
            out.contains("certificate") || out.contains("x509"),
            "{tool}: {out}"
        );
        let cert = reg.cert();
        let cert = cert.to_str().expect("utf-8");
        s.ok(&["--ca-cert", cert, "push", remote]);
        assert!(reg.has_repository("tls/bb"), "{tool}: {}", reg.log());
        // as the default registry: pulled by its short name over verified TLS
        remove_image(s.w, tool, &["bb:1", remote]);
        s.ok(&["--ca-cert", cert, "--registry", &s.addr, "pull", "tls/bb:1"]);
        let o = s.w.run(tool, ["image", "inspect", remote]);
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
        // the next command without it no longer trusts the registry
        s.ok(&["rmi", remote]);
        s.fails(&["pull", remote]);
    });
}

#[test]
fn interactive_login_prompts_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        vcontainer_tests::skip("util-linux `script` is not installed");
        return;
    }
    let start = || LocalRegistry::with_htpasswd("tester", "s3cret pass");
    each_tool("tty/bb", start, |s, reg| {
        let (tool, addr) = (s.tool, s.addr.as_str());
        let login = ["--insecure-registry", addr, "login", addr];
        let (code, shown) = on_terminal(
            s.w,
            tool,
            &login,
            &[
                ("Username", Duration::ZERO, "tester\r"),
                ("Password", Duration::ZERO, "s3cret pass\r"),
            ],
        );
        assert_eq!(code, 0, "{tool}: {shown}");
        assert!(shown.contains("Login Succeeded"), "{tool}: {shown}");
        // the password was not echoed to the terminal
        assert!(!shown.contains("s3cret"), "{tool}: {shown}");
        s.ok(&s.insecure_push());
        assert!(reg.has_repository("tty/bb"), "{tool}: {}", reg.log());
        s.ok(&["logout", addr]);
    });
}

// ---------------------------------------------------------------------------------------
// pulls and logins on a cold start, one-shot pulls (docs/old-bugs.md §6, §15, §18)

fn ok(w: &World, tool: &str, args: &[&str]) -> String {
    w.run_ok(tool, args)
}

fn state_dir(w: &World, tool: &str) -> PathBuf {
    w.home.path().join(format!(".{tool}")).join("x86_64")
}

/// Command lines (and for VM processes the environment) of every process that mentions
/// `needle`, plus every process's command line: where a secret must never show.
fn process_texts(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let ours: Vec<u32> = pids_matching(needle);
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let mut text = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ours.contains(&pid) {
            text.extend(std::fs::read(e.path().join("environ")).unwrap_or_default());
        }
        out.push((pid, String::from_utf8_lossy(&text).replace('\0', " ")));
    }
    out
}

/// Every regular file under `dir` up to 4 MiB (the state disk image excluded) as text.
fn small_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(small_files(&p));
        } else if meta.is_file() && meta.len() <= 4 << 20 {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            out.push((p, text));
        }
    }
    out
}

/// Pushes the busybox test image from the host to `reg` as `repo` (skopeo, no VM).
fn push_from_host(reg: &LocalRegistry, repo: &str) -> Result<(), String> {
    let layouts = BusyboxLayouts::new()?;
    let layout = layouts.single("bb", "amd64")?;
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if let Some((user, password)) = &reg.credentials {
        cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    let o = cmd
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://127.0.0.1:{}/{repo}", reg.port))
        .output()
        .map_err(|e| format!("skopeo: {e}"))?;
    if !o.status.success() {
        return Err(format!("skopeo copy: {}", stderr(&o)));
    }
    Ok(())
}

fn registry_ready() -> bool {
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !LocalRegistry::available() || !have("skopeo") || !have("umoci") {
        vcontainer_tests::skip("docker-registry, skopeo or umoci is not installed");
        return false;
    }
    true
}

/// §8.6 (`pull` never auto-started the daemon), §8.3 (`--registry-password 'p w'` broke the
/// runner argv), §8.18 (the password went base64 onto QEMU's command line; user/password
/// were ignored without a default registry) and §8.15 (`login` on a cold start could not
/// prompt), against a local htpasswd registry.
#[test]
fn cold_pull_with_credentials_and_cold_login_on_a_terminal() {
    let tool = "vpdmn";
    if !registry_ready() {
        return;
    }
    vm_or_skip!("podman");
    // unique, so no other process can show it by chance
    let password = format!("old bug {}", std::process::id());
    let password = password.as_str();
    let reg = LocalRegistry::with_htpasswd("tester", password).expect("registry");
    push_from_host(&reg, "cold/bb:1").expect("push the test image");
    let addr = reg.guest_address();
    let remote = format!("{addr}/cold/bb:1");
    let w = World::new();
    let _guard = MemresGuard::new(&w, tool);

    // cold: the pull starts the memres VM and authenticates with a password with a space
    let o = w.run(
        tool,
        [
            "--registry-user",
            "tester",
            "--registry-password",
            password,
            "--insecure-registry",
            &addr,
            "pull",
            &remote,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "cold pull: {}", stderr(&o));
    assert!(
        ok(&w, tool, &["memres", "status"]).starts_with("running"),
        "pull did not start the memres VM"
    );
    let out = ok(&w, tool, &["vrun", &remote, "echo", "pulled-ok"]);
    assert_eq!(out, "pulled-ok\n");
    // the secret is on no process's command line (nor a VM process's environment), in no
    // file of the state dir
    let secrets = [
        password.to_string(),
        base64(password.as_bytes()),
        base64(format!("tester:{password}").as_bytes()),
    ];
    let home = w.home.path().to_string_lossy().into_owned();
    for (pid, text) in process_texts(&home) {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "pid {pid} shows the password: {text}"
            );
        }
    }
    for (path, text) in small_files(&state_dir(&w, tool)) {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{} holds the password",
                path.display()
            );
        }
    }
    let o = w.run(tool, ["memres", "stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_no_vm_processes(w.home.path());

    // cold again: `login` starts the VM and still prompts on the terminal
    let (code, shown) = on_terminal(
        &w,
        tool,
        &["--insecure-registry", &addr, "login", &addr],
        &[
            ("Username", Duration::ZERO, "tester\r"),
            ("Password", Duration::ZERO, &format!("{password}\r")),
        ],
    );
    assert_eq!(code, 0, "cold login: {shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(
        !shown.contains(password),
        "the password was echoed: {shown}"
    );
    // the login is what authenticates the next pull
    ok(&w, tool, &["rmi", &remote]);
    ok(&w, tool, &["--insecure-registry", &addr, "pull", &remote]);
    ok(&w, tool, &["logout", &addr]);
    ok(&w, tool, &["memres", "stop"]);
    assert_no_vm_processes(w.home.path());
}

/// §8.6 (a one-shot vdkr `pull` always reported failure, exit 1): with no memres VM, `pull`
/// in a one-shot VM succeeds and the image is on the state disk for the next command.
#[test]
fn vdkr_one_shot_pull_succeeds_and_keeps_the_image() {
    let tool = "vdkr";
    if !registry_ready() {
        return;
    }
    vm_or_skip!("docker");
    let reg = LocalRegistry::plain().expect("registry");
    push_from_host(&reg, "oneshot/bb:1").expect("push the test image");
    let addr = reg.guest_address();
    let remote = format!("{addr}/oneshot/bb:1");
    let w = World::new();
    let o = w.run(
        tool,
        ["--no-daemon", "--insecure-registry", &addr, "pull", &remote],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "one-shot pull: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains(&remote), "{}", stdout(&o));
    assert_no_vm_processes(w.home.path());
    let images = ok(&w, tool, &["--no-daemon", "images"]);
    assert!(
        images.contains(&format!("{addr}/oneshot/bb")),
        "the pulled image is not on the state disk: {images}"
    );
    assert_no_vm_processes(w.home.path());
    assert_fsck_clean(&state_dir(&w, tool).join("docker-state.img"));
}

/// The `needles` the file at `path` holds. Only its data extents are read (a state disk is
/// a sparse file of gigabytes, mostly holes), in chunks that overlap by a needle's length.
fn needles_in(path: &Path, needles: &[&str]) -> Vec<String> {
    use nix::unistd::{lseek, Whence};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(1).max(1) - 1;
    let mut found: Vec<String> = Vec::new();
    let mut file = std::fs::File::open(path).expect("open");
    let len = file.metadata().expect("stat").len() as i64;
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0i64;
    while at < len {
        // ENXIO: no data after `at`
        let Ok(data) = lseek(fd, at, Whence::SeekData) else {
            break;
        };
        let hole = lseek(fd, data, Whence::SeekHole).unwrap_or(len);
        let mut pos = data;
        while pos < hole {
            file.seek(SeekFrom::Start(pos as u64)).expect("seek");
            let want = ((hole - pos) as usize).min(buf.len());
            let n = file.read(&mut buf[..want]).expect("read");
            if n == 0 {
                break;
            }
            for needle in needles {
                let hit = buf[..n]
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes());
                if hit && !found.iter().any(|f| f == needle) {
                    found.push(needle.to_string());
                }
            }
            if pos + n as i64 >= hole || n <= overlap {
                pos += n as i64;
            } else {
                pos += (n - overlap) as i64;
            }
        }
        at = hole;
    }
    found
}

/// (file, needle) for every file under `dir` (recursively, state disks included) and every
/// one of `needles` it holds.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                for needle in needles_in(&path, needles) {
                    found.push((path.clone(), needle));
                }
            }
        }
    }
    found
}

#[test]
fn passwords_never_reach_stderr_or_a_file_in_the_state_dir_at_the_most_verbose_logging() {
    // no registry needed: every password goes through the same planning, logging and exec as
    // a good one, and the logins fail fast against a closed port in the guest
    let (tool, runtime) = ("vdkr", "docker");
    vm_or_skip!(runtime);
    let w = World::new();
    // -v, the most verbose host log, and the agent's exec argv on the VM console
    let verbose = |args: &[&str]| {
        let mut c = w.cmd(tool);
        c.env("VCONTAINER_LOG", "trace")
            .env("VCONTAINER_GUEST_DEBUG", "1")
            .arg("-v")
            .args(args);
        c
    };
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut c = verbose(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        child.wait_with_output().expect("wait")
    };
    let o = run(&["memres", "start"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let _stop = MemresGuard::new(&w, tool);

    let secrets = [
        "pw-flag-Qx7vZ2",
        "pw-short-Kd93mT",
        "pw-glued-Lw4pR8",
        "pw-long-Hc62nB",
        "pw-stdin-Ye51sJ",
    ];
    let closed = "127.0.0.1:1";
    let image = format!("{closed}/nobody/x:1");
    let flag = [
        "--registry-user",
        "me",
        "--registry-password",
        secrets[0],
        "pull",
        &image,
    ];
    let short = ["login", "-u", "me", "-p", secrets[1], closed];
    let glued = format!("-p{}", secrets[2]);
    let glued = ["login", "-u", "me", &glued, closed];
    let long = format!("--password={}", secrets[3]);
    let long = ["login", "-u", "me", &long, closed];
    let stdin = ["login", "-u", "me", "--password-stdin", closed];
    let mut all_stderr = String::new();
    for (args, input) in [
        (&flag[..], None),
        (&short[..], None),
        (&glued[..], None),
        (&long[..], None),
        (&stdin[..], Some(format!("{}\n", secrets[4]))),
    ] {
        let o = run(args, input.as_deref());
        assert_ne!(o.status.code(), Some(0), "{args:?}: nothing listens there");
        let err = stderr(&o);
        // the debug log was on and showed the command, with the value hidden
        assert!(err.contains("exec in the guest"), "{args:?}: {err}");
        all_stderr.push_str(&err);
    }
    assert!(all_stderr.contains("<redacted>"), "{all_stderr}");

    let state = w.home.path().join(".vdkr/x86_64");
    let console = std::fs::read_to_string(state.join("console.log")).expect("console.log");
    assert!(
        console.contains("exec pid") && console.contains("<redacted>"),
        "the agent's debug log is on and hides the password: {console}"
    );
    let o = run(&["memres", "stop"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    all_stderr.push_str(&stderr(&o));
    for secret in secrets {
        assert!(
            !all_stderr.contains(secret),
            "{secret} on stderr: {all_stderr}"
        );
    }
    // the scan itself finds what is there: the marker file's own words
    let marker = files_holding(&state, &["vstorage clean"]);
    assert_eq!(marker.len(), 1, "{marker:?}");
    assert_eq!(
        files_holding(&state, &secrets),
        Vec::<(PathBuf, String)>::new(),
        "passwords in files under the state dir"
    );
}
