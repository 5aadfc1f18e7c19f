//! The old tool's command-line habits that scripts and its users' test suites rely on
//! (issue 12 item 7), checked without a VM: global options after `memres start`,
//! `memres stop -f`, group commands without a subcommand. `vstorage clean`'s stdout is
//! checked in cli_front.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        std::fs::create_dir(dir.path().join("bin")).expect("bin");
        for name in ["vdkr", "vpdmn"] {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_vcontainer"),
                dir.path().join("bin").join(name),
            )
            .expect("link");
        }
        Fixture { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(self.dir.path().join("bin").join(tool))
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // a build tree names its plugins: they are never taken from beside the binary
            .env(
                "VCONTAINER_PLUGIN_PATH",
                Path::new(env!("CARGO_BIN_EXE_vcontainer"))
                    .parent()
                    .expect("<target>/<profile>/vcontainer"),
            )
            .args(args)
            .output()
            .expect("spawn")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn group_commands_without_a_subcommand_fail_saying_so() {
    let f = Fixture::new();
    for tool in ["vdkr", "vpdmn"] {
        for group in ["system", "image", "network", "container", "volume"] {
            let started = std::time::Instant::now();
            let o = f.run(tool, &["--blob-dir", "/nonexistent-blobs", group]);
            assert_ne!(o.status.code(), Some(0), "{tool} {group}");
            assert!(
                stderr(&o).contains("requires a subcommand"),
                "{tool} {group}: {}",
                stderr(&o)
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }
}

#[test]
fn memres_stop_takes_force() {
    let f = Fixture::new();
    for flag in ["-f", "--force"] {
        let o = f.run("vdkr", &["memres", "stop", flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
    }
    let o = f.run("vdkr", &["memres", "stop", "--now"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--now"), "{}", stderr(&o));
}

#[test]
fn global_options_after_memres_start_apply() {
    let f = Fixture::new();
    // the blob dir given after `start` is the one used: the start fails naming it
    for sub in ["start", "restart"] {
        let o = f.run(
            "vpdmn",
            &[
                "memres",
                sub,
                "--no-registry",
                "-p",
                "18080:80",
                "--blob-dir",
                "/nonexistent-blobs",
            ],
        );
        assert_ne!(o.status.code(), Some(0));
        assert!(
            stderr(&o).contains("/nonexistent-blobs"),
            "{sub}: {}",
            stderr(&o)
        );
    }
    // what is not a global option is still an error
    let o = f.run("vpdmn", &["memres", "start", "--bogus"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--bogus"), "{}", stderr(&o));
}
