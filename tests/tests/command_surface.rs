//! End-to-end tests of the runtime commands the other e2e files do not reach (issue 4 items 1
//! and 3): `images [filter]`, `image ls|rm|tag|inspect|history|prune`, `tag`, `rmi [-f]`,
//! `inspect` (stdout is pure JSON), `history`, `import`, `logout` (after a login, against a
//! local htpasswd registry), `run --name -e --entrypoint -w -u`, `vrun` against an image with
//! an entrypoint, `ps [-a] [-q]`, `start`, `stop`, `restart`, `kill`, `rm [-f]`, `commit
//! --change`, `pause`/`unpause`, `system df|prune|info`, `info` and `version`.
//!
//! One memres VM per runtime runs the whole sequence (a boot under TCG costs more than all the
//! commands together); real QEMU, real guest, real docker/podman, offline busybox image.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Instant;

use serde_json::Value;
use vcontainer_tests::fixtures::LocalRegistry;
use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip, World,
};

/// A world with a running memres VM for one tool, stopped on drop (also when an assertion
/// fails half-way, so no VM outlives the test).
struct Session {
    w: World,
    tool: &'static str,
    started: Instant,
}

impl Session {
    fn start(tool: &'static str) -> Session {
        let s = Session {
            w: World::new(),
            tool,
            started: Instant::now(),
        };
        s.ok(&["memres", "start"]);
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let o = self.w.run(self.tool, args);
        eprintln!(
            "[{:>6.1}s] {} {args:?} -> {:?} ({:.1}s)",
            self.started.elapsed().as_secs_f64(),
            self.tool,
            o.status.code(),
            t.elapsed().as_secs_f64()
        );
        o
    }

    /// Runs and asserts exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{} {args:?}: stdout {} stderr {}",
            self.tool,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs and asserts a failure exit status; returns stdout + stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "{} {args:?} succeeded: stdout {} stderr {}",
            self.tool,
            stdout(&o),
            stderr(&o)
        );
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// Runs with `input` on stdin.
    fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .w
            .cmd(self.tool)
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

    /// `inspect`-style JSON on stdout: must parse as a whole (nothing else on stdout).
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "{} {args:?}: stdout is not pure JSON ({e}): {out}",
                self.tool
            )
        })
    }

    /// One `inspect --format` field of a container or image.
    fn field(&self, format: &str, name: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
            .trim()
            .to_string()
    }

    /// `(repository, tag)` rows of `images`-style output, with podman's `localhost/` prefix
    /// taken off so both runtimes compare alike.
    fn image_rows(&self, args: &[&str]) -> Vec<(String, String)> {
        let out = self.ok(args);
        let mut lines = out.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.starts_with("REPOSITORY") && header.contains("TAG"),
            "{} {args:?}: no images header: {out}",
            self.tool
        );
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut cols = l.split_whitespace();
                let repo = cols.next().unwrap_or_default();
                let tag = cols.next().unwrap_or_default();
                (
                    repo.trim_start_matches("localhost/").to_string(),
                    tag.to_string(),
                )
            })
            .collect()
    }

    /// The `ps` row of container `name` (None when it is not listed).
    fn ps_row(&self, args: &[&str], name: &str) -> Option<String> {
        let out = self.ok(args);
        out.lines()
            .skip(1)
            .find(|l| l.split_whitespace().last() == Some(name))
            .map(str::to_string)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.w.run(self.tool, ["memres", "stop"]);
    }
}

fn has_image(rows: &[(String, String)], repo: &str, tag: &str) -> bool {
    rows.iter().any(|(r, t)| r == repo && t == tag)
}

fn env_of(config: &Value) -> Vec<String> {
    config["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The whole sequence for one tool (`vdkr` = docker, `vpdmn` = podman).
fn command_surface(tool: &'static str) {
    let s = Session::start(tool);
    let docker = tool == "vdkr";

    // --- import, images [filter], image ls, tag, image tag ------------------------------
    let tar = s.w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    // other:7 gets a label so it is a different image: podman lists every name of an image
    // that matches a filter, and two plain imports of one tar can be the same image
    for (name, change) in [("bb:1", "LABEL which=bb"), ("other:7", "LABEL which=other")] {
        let o = s.w.run(
            tool,
            [
                OsStr::new("import"),
                OsStr::new("--change"),
                OsStr::new(change),
                tar.as_os_str(),
                OsStr::new(name),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} import: {}", stderr(&o));
    }
    // without a name: the old tool's imported:latest, not an untagged image
    let o = s.w.run(tool, [OsStr::new("import"), tar.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{tool} import: {}", stderr(&o));
    assert!(
        has_image(&s.image_rows(&["images"]), "imported", "latest"),
        "{tool}: import without a name"
    );
    s.ok(&["rmi", "imported:latest"]);
    let all = s.image_rows(&["images"]);
    assert!(has_image(&all, "bb", "1"), "{tool}: {all:?}");
    assert!(has_image(&all, "other", "7"), "{tool}: {all:?}");
    assert_eq!(s.image_rows(&["image", "ls"]), all, "{tool}: image ls");
    s.ok(&["tag", "bb:1", "bb:t2"]);
    s.ok(&["image", "tag", "bb:1", "bb:t3"]);
    let only_bb = s.image_rows(&["images", "bb"]);
    assert!(
        only_bb.iter().all(|(r, _)| r == "bb"),
        "{tool}: images bb lists others: {only_bb:?}"
    );
    for tag in ["1", "t2", "t3"] {
        assert!(has_image(&only_bb, "bb", tag), "{tool}: {only_bb:?}");
    }
    let quiet = s.ok(&["images", "-q"]);
    assert!(
        !quiet.is_empty()
            && quiet
                .lines()
                .all(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{tool}: images -q printed more than ids: {quiet}"
    );
    assert_eq!(
        s.image_rows(&["image", "ls", "other"]),
        [("other".to_string(), "7".to_string())],
        "{tool}: image ls other"
    );

    // --- inspect / image inspect: pure JSON on stdout --------------------------------------
    let img = s.json(&["inspect", "bb:1"]);
    let id = img[0]["Id"].as_str().expect("image Id").to_string();
    assert_eq!(img[0]["Architecture"], "amd64", "{tool}: {img}");
    assert_eq!(
        img[0]["Config"]["Labels"]["which"], "bb",
        "{tool}: import --change: {img}"
    );
    let tagged = s.json(&["image", "inspect", "bb:t2"]);
    assert_eq!(
        tagged[0]["Id"],
        id.as_str(),
        "{tool}: tag is the same image"
    );
    let o = s.run(&["inspect", "no-such-thing:9"]);
    assert_ne!(o.status.code(), Some(0), "{tool}: inspect of nothing");

    // --- rmi / image rm -----------------------------------------------------------------
    s.ok(&["rmi", "bb:t2"]);
    s.ok(&["image", "rm", "bb:t3"]);
    let only_bb = s.image_rows(&["images", "bb"]);
    assert_eq!(
        only_bb,
        [("bb".to_string(), "1".to_string())],
        "{tool}: rmi/image rm left tags"
    );
    s.ok(&["rmi", "other:7"]);
    assert!(
        !has_image(&s.image_rows(&["images"]), "other", "7"),
        "{tool}"
    );

    // --- run --name -e -w -u --entrypoint -----------------------------------------------
    let out = s.ok(&[
        "run",
        "--rm",
        "--name",
        "opts",
        "-e",
        "FOO=bar baz",
        "-w",
        "/tmp",
        "-u",
        "65534:65534",
        "bb:1",
        "sh",
        "-c",
        "echo \"$FOO\"; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "bar baz\n/tmp\n65534\n65534\n", "{tool}: run options");
    let out = s.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "bb:1", "hello"]);
    assert_eq!(out, "hello\n", "{tool}: --entrypoint");

    // --- commit --change: an image with env, label and entrypoint ------------------------
    assert_eq!(
        s.run(&[
            "run",
            "--name",
            "src",
            "bb:1",
            "sh",
            "-c",
            "echo made > /made.txt"
        ])
        .status
        .code(),
        Some(0),
        "{tool}"
    );
    s.ok(&[
        "commit",
        "--change",
        "ENV COMMITTED=yes",
        "--change",
        "LABEL stage=surface",
        "--change",
        "ENTRYPOINT [\"/bin/echo\", \"ep\"]",
        "--change",
        "CMD [\"default\"]",
        "src",
        "bb:ep",
    ]);
    let ep = s.json(&["inspect", "bb:ep"]);
    let config = &ep[0]["Config"];
    assert!(
        env_of(config).iter().any(|e| e == "COMMITTED=yes"),
        "{tool}: commit --change ENV: {config}"
    );
    assert_eq!(config["Labels"]["stage"], "surface", "{tool}: {config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/bin/echo", "ep"]),
        "{tool}: {config}"
    );
    // docker semantics: run honours the entrypoint (the command becomes its arguments);
    // vrun clears it when a command is given, keeps it when none is
    assert_eq!(s.ok(&["run", "--rm", "bb:ep", "x"]), "ep x\n", "{tool}");
    assert_eq!(
        s.ok(&["vrun", "bb:ep", "cat", "/made.txt"]),
        "made\n",
        "{tool}: vrun"
    );
    assert_eq!(
        s.ok(&["vrun", "bb:ep"]),
        "ep default\n",
        "{tool}: vrun, no command"
    );

    // --- history / image history: the committed layer on top of the imported one ---------
    let rows = |args: &[&str]| -> Vec<String> {
        let out = s.ok(args);
        let mut lines = out.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.contains("CREATED BY"),
            "{tool} {args:?}: no history header: {out}"
        );
        lines
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let base = rows(&["history", "bb:1"]);
    assert!(!base.is_empty(), "{tool}: history of bb:1 is empty");
    let committed = rows(&["image", "history", "bb:ep"]);
    assert!(
        committed.len() > base.len(),
        "{tool}: commit added no layer: {committed:?} vs {base:?}"
    );

    // --- ps [-a] [-q], exit status of an exited container --------------------------------
    let run_id = s.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "-e",
        "SURFACE=1",
        "bb:1",
        "sleep",
        "600",
    ]);
    let run_id = run_id.trim();
    assert!(
        run_id.len() == 64 && run_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{tool}: run -d printed {run_id:?}"
    );
    assert_eq!(
        s.run(&["run", "--name", "c2", "bb:1", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3),
        "{tool}"
    );
    assert!(s.ps_row(&["ps"], "c1").is_some(), "{tool}: c1 not in ps");
    assert!(s.ps_row(&["ps"], "c2").is_none(), "{tool}: exited c2 in ps");
    let c2 = s.ps_row(&["ps", "-a"], "c2").expect("c2 in ps -a");
    assert!(c2.contains("Exited (3)"), "{tool}: {c2}");
    let quiet = s.ok(&["ps", "-q"]);
    let ids: Vec<&str> = quiet.lines().collect();
    assert!(
        ids.iter()
            .all(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{tool}: ps -q printed more than ids: {quiet}"
    );
    assert!(ids.contains(&&run_id[..12]), "{tool}: {quiet}");
    let quiet_all = s.ok(&["ps", "-a", "-q"]);
    assert!(
        quiet_all.lines().count() > ids.len(),
        "{tool}: ps -a -q lacks the exited ones: {quiet_all}"
    );

    // inspect of a container: JSON with the env it was given
    let c1 = s.json(&["inspect", "c1"]);
    assert!(
        env_of(&c1[0]["Config"]).iter().any(|e| e == "SURFACE=1"),
        "{tool}: {}",
        c1[0]["Config"]
    );

    // --- pause / unpause ----------------------------------------------------------------
    s.ok(&["pause", "c1"]);
    // docker lists a paused container in plain `ps`, podman only with -a
    let row = s.ps_row(&["ps", "-a"], "c1").expect("paused c1 in ps -a");
    assert!(row.contains("Paused"), "{tool}: {row}");
    s.ok(&["unpause", "c1"]);
    let row = s.ps_row(&["ps"], "c1").expect("c1 in ps");
    assert!(!row.contains("Paused"), "{tool}: {row}");
    assert_eq!(
        s.ok(&["exec", "c1", "echo", "alive"]),
        "alive\n",
        "{tool}: unpaused"
    );

    // --- stop / start / restart / kill --------------------------------------------------
    s.ok(&["stop", "-t", "1", "c1"]);
    assert_eq!(s.field("{{.State.Running}}", "c1"), "false", "{tool}: stop");
    assert!(
        s.ps_row(&["ps"], "c1").is_none(),
        "{tool}: stopped c1 in ps"
    );
    s.ok(&["start", "c1"]);
    assert_eq!(s.field("{{.State.Running}}", "c1"), "true", "{tool}: start");
    let started = s.field("{{.State.StartedAt}}", "c1");
    s.ok(&["restart", "-t", "1", "c1"]);
    assert_eq!(s.field("{{.State.Running}}", "c1"), "true", "{tool}");
    let restarted = s.field("{{.State.StartedAt}}", "c1");
    assert_ne!(started, restarted, "{tool}: restart did not restart");
    s.ok(&["kill", "c1"]);
    assert_eq!(s.field("{{.State.Running}}", "c1"), "false", "{tool}: kill");
    assert_eq!(
        s.field("{{.State.ExitCode}}", "c1"),
        "137",
        "{tool}: SIGKILL"
    );

    // --- rm [-f] ------------------------------------------------------------------------
    s.ok(&["rm", "c2"]);
    assert!(s.ps_row(&["ps", "-a"], "c2").is_none(), "{tool}: rm c2");
    s.ok(&["run", "-d", "--name", "c4", "bb:1", "sleep", "600"]);
    s.fails(&["rm", "c4"]);
    assert!(
        s.ps_row(&["ps"], "c4").is_some(),
        "{tool}: rm removed a running one"
    );
    s.ok(&["rm", "-f", "c4"]);
    assert!(s.ps_row(&["ps", "-a"], "c4").is_none(), "{tool}: rm -f c4");

    // --- rmi -f of an image a container uses; image prune -f of a dangling image -----------
    let user = s.run(&["run", "--name", "c6", "bb:ep"]);
    assert_eq!(user.status.code(), Some(0), "{tool}: {}", stderr(&user));
    s.fails(&["rmi", "bb:ep"]);
    assert!(has_image(&s.image_rows(&["images"]), "bb", "ep"), "{tool}");
    s.ok(&["rmi", "-f", "bb:ep"]);
    assert!(
        !has_image(&s.image_rows(&["images"]), "bb", "ep"),
        "{tool}: rmi -f kept bb:ep"
    );
    // a dangling image: `commit` without a name
    let commit_dangling = || {
        let out = s.ok(&["commit", "src"]);
        let id = out
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .trim_start_matches("sha256:")
            .to_string();
        assert!(id.len() >= 12, "{tool}: commit printed {out:?}");
        s.ok(&["inspect", &id]);
        id
    };
    // without -f the runtime asks; the user's answer reaches it: "n" keeps, "y" prunes
    let dangling = commit_dangling();
    let o = s.with_stdin(&["image", "prune"], "n\n");
    assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
    assert!(
        stdout(&o).contains("Are you sure"),
        "{tool}: no prompt: {}",
        stdout(&o)
    );
    s.ok(&["inspect", &dangling]);
    let o = s.with_stdin(&["image", "prune"], "y\n");
    assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
    assert!(
        stdout(&o).contains(&dangling),
        "{tool}: image prune (answered y) did not report {dangling}: {}",
        stdout(&o)
    );
    s.fails(&["inspect", &dangling]);
    let dangling = commit_dangling();
    let pruned = s.ok(&["image", "prune", "-f"]);
    assert!(
        pruned.contains(&dangling),
        "{tool}: image prune -f did not report {dangling}: {pruned}"
    );
    s.fails(&["inspect", &dangling]);
    assert!(has_image(&s.image_rows(&["images"]), "bb", "1"), "{tool}");

    // --- podman's own commands: pod, kube play FILE / kube down FILE, generate kube ---------
    if docker {
        let said = s.fails(&["pod", "ls"]);
        assert!(said.contains("unknown command 'pod'"), "{tool}: {said}");
    } else {
        s.ok(&["pod", "create", "--name", "surfpod"]);
        let yaml = s.w.home.path().join("kpod.yaml");
        std::fs::write(
            &yaml,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kpod\nspec:\n  containers:\n  \
             - name: c1\n    image: localhost/bb:1\n    command: [\"sleep\", \"60\"]\n",
        )
        .expect("kube yaml");
        let yaml = yaml.to_str().expect("utf-8 path");
        // the YAML is a host file: it travels into the VM as a run's inputs do
        s.ok(&["kube", "play", "--start=false", yaml]);
        let pods = s.ok(&["pod", "ls", "--format", "{{.Name}}"]);
        let mut names: Vec<&str> = pods.lines().map(str::trim).collect();
        names.sort_unstable();
        assert_eq!(names, ["kpod", "surfpod"], "{tool}: pod ls");
        // (podman refuses a pod with only its infra container)
        let generated = s.ok(&["generate", "kube", "kpod"]);
        assert!(
            generated.contains("kind: Pod") && generated.contains("localhost/bb:1"),
            "{tool}: generate kube: {generated}"
        );
        s.ok(&["kube", "down", yaml]);
        s.ok(&["pod", "rm", "surfpod"]);
        assert_eq!(s.ok(&["pod", "ls", "-q"]).trim(), "", "{tool}: pods left");
    }

    // --- system df | info | prune, info, version ---------------------------------------------
    let df = s.ok(&["system", "df"]);
    let header = df.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("TYPE") && header.contains("TOTAL"),
        "{tool}: system df: {df}"
    );
    assert!(df.lines().any(|l| l.starts_with("Images")), "{tool}: {df}");
    for args in [&["system", "info"][..], &["info"][..]] {
        let info = s.ok(args);
        if docker {
            assert!(info.contains("Server Version:"), "{tool} {args:?}: {info}");
            assert!(
                info.contains("Docker Root Dir: /var/lib/docker"),
                "{tool}: {info}"
            );
        } else {
            assert!(
                info.contains("graphRoot: /var/lib/containers/storage"),
                "{tool} {args:?}: {info}"
            );
        }
    }
    let version = s.ok(&["version"]);
    assert!(version.contains("Version:"), "{tool}: {version}");
    if docker {
        // the client on the guest and dockerd behind it
        assert!(
            version.contains("Client:") && version.contains("Server:"),
            "{tool}: {version}"
        );
    }
    // system prune -f: the stopped containers go, the running one and tagged images stay
    s.ok(&["run", "-d", "--name", "keep", "bb:1", "sleep", "600"]);
    s.ok(&["system", "prune", "-f"]);
    let left = s.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let left: Vec<&str> = left.lines().collect();
    assert_eq!(left, ["keep"], "{tool}: system prune -f left {left:?}");
    assert!(has_image(&s.image_rows(&["images"]), "bb", "1"), "{tool}");

    // --- logout: what login stored is gone, the registry refuses the next push --------------
    if LocalRegistry::available() {
        let reg = LocalRegistry::with_htpasswd("surface", "pw").expect("registry");
        let addr = reg.guest_address();
        let remote = format!("{addr}/surface/bb:1");
        s.ok(&["tag", "bb:1", &remote]);
        let login = [
            "--insecure-registry",
            &addr,
            "login",
            "-u",
            "surface",
            "--password-stdin",
            &addr,
        ];
        let o = s.with_stdin(&login, "pw\n");
        assert_eq!(o.status.code(), Some(0), "{tool} login: {}", stderr(&o));
        s.ok(&["--insecure-registry", &addr, "push", &remote]);
        assert!(reg.has_repository("surface/bb"), "{tool}: {}", reg.log());
        s.ok(&["logout", &addr]);
        let again = format!("{addr}/surface/after-logout:1");
        s.ok(&["tag", "bb:1", &again]);
        let out = s
            .fails(&["--insecure-registry", &addr, "push", &again])
            .to_lowercase();
        assert!(
            out.contains("unauthorized")
                || out.contains("authentication required")
                || out.contains("no basic auth credentials"),
            "{tool}: push after logout: {out}"
        );
        assert!(!reg.has_repository("surface/after-logout"), "{tool}");
        // a second logout: nothing is stored any more (docker says so and succeeds,
        // podman reports it as an error)
        let o = s.run(&["logout", &addr]);
        let said = format!("{}{}", stdout(&o), stderr(&o)).to_lowercase();
        if docker {
            assert_eq!(o.status.code(), Some(0), "{tool}: {said}");
        } else {
            assert!(said.contains("not logged in"), "{tool}: {said}");
            assert_ne!(o.status.code(), Some(0), "{tool}: {said}");
        }
    } else {
        vcontainer_tests::skip("logout: /usr/bin/docker-registry is not installed");
    }

    s.ok(&["memres", "stop"]);
    assert_no_vm_processes(s.w.home.path());

    // with no VM running, the command starts one (auto-daemon): whatever that says stays off
    // stdout, which is the runtime's JSON alone, so `inspect | jq` works (docs/old-bugs.md §16)
    let cold = s.json(&["inspect", "bb:1"]);
    assert_eq!(
        cold[0]["Id"],
        id.as_str(),
        "{tool}: state kept across the restart"
    );
    s.ok(&["memres", "stop"]);
    assert_no_vm_processes(s.w.home.path());
}

#[test]
fn vpdmn_command_surface() {
    vm_or_skip!("podman");
    command_surface("vpdmn");
}

#[test]
fn vdkr_command_surface() {
    vm_or_skip!("docker");
    command_surface("vdkr");
}
