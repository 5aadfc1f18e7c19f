//! `--no-network` and the `timeout` setting end to end, for both runtimes:
//! - `--no-network` gives the container no interface but loopback (`--network none`, on a
//!   running memres VM too), also as vrun's own option, and refuses commands that only
//!   talk to a registry;
//! - with the network, a container reaches a server on the host (at 10.0.2.2, QEMU's user
//!   network), a docker one from a user network too, and not with `--network none`; dockerd
//!   runs without its own iptables rules and the guest's MASQUERADE rule carries this
//!   (docs/differences.md, "Container networking in the docker guest");
//! - the `timeout` setting (`$VDKR_TIMEOUT` / config key `timeout`) stops a one-shot VM
//!   command that runs longer, exit 124 with a message saying so, and the state disk is
//!   fine for the next command (the old tool's silent exit 0 on long commands,
//!   docs/old-bugs.md §5a, cannot happen).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use vcontainer_tests::fixtures::MemresGuard;
use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip, World,
};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

fn ok(w: &World, tool: &str, args: &[&str]) -> String {
    w.run_ok(tool, args)
}

/// Imports the busybox test image as `bb:1` into the running memres VM.
fn import_busybox(w: &World, tool: &str) {
    let tar = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    ok(w, tool, &["vimport", tar.to_str().expect("utf-8"), "bb:1"]);
}

/// The interface names in a `/proc/net/dev` listing.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// What the host-side server answers; a container that prints it reached the host.
const HOST_REPLY: &str = "reached-the-host";

/// An HTTP server on the host's loopback (the guest reaches it at 10.0.2.2:<port>) that
/// answers every request with [`HOST_REPLY`], for as long as the test runs.
fn host_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a host port");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{HOST_REPLY}",
                HOST_REPLY.len()
            );
        }
    });
    port
}

/// A container of `run_args` (image and network options) fetching from the host server
/// (`busybox nc`: the fixture's static busybox `wget` crashes resolving, even an address).
fn fetch_from_host(w: &World, tool: &str, port: u16, run_args: &[&str]) -> std::process::Output {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc 10.0.2.2 {port}");
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(run_args);
    args.extend_from_slice(&["bb:1", "busybox", "sh", "-c", &script]);
    w.run(tool, args)
}

#[test]
fn no_network_leaves_the_container_only_loopback() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = World::new();
        ok(&w, tool, &["memres", "start"]);
        let _stop = MemresGuard::new(&w, tool);
        import_busybox(&w, tool);

        let with = interfaces(&ok(&w, tool, &["vrun", "bb:1", "cat", "/proc/net/dev"]));
        assert!(with.iter().any(|i| i == "eth0"), "{tool}: {with:?}");
        for args in [
            &["--no-network", "vrun", "bb:1", "cat", "/proc/net/dev"][..],
            &[
                "--no-network",
                "run",
                "--rm",
                "bb:1",
                "cat",
                "/proc/net/dev",
            ],
            &["vrun", "--no-network", "bb:1", "cat", "/proc/net/dev"],
        ] {
            let without = interfaces(&ok(&w, tool, args));
            assert_eq!(without, ["lo"], "{tool} {args:?}");
        }
        // outbound to the host, from the default network and (docker, whose NAT rule is the
        // guest's own) from a user network; not with --network none
        let port = host_server();
        let o = fetch_from_host(&w, tool, port, &[]);
        assert!(stdout(&o).contains(HOST_REPLY), "{tool}: {}", stderr(&o));
        if tool == "vdkr" {
            ok(&w, tool, &["network", "create", "egress-net"]);
            let o = fetch_from_host(&w, tool, port, &["--network", "egress-net"]);
            assert!(stdout(&o).contains(HOST_REPLY), "{tool}: {}", stderr(&o));
        }
        let o = fetch_from_host(&w, tool, port, &["--network", "none"]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "{tool}: fetched without a network"
        );
        assert!(!stdout(&o).contains(HOST_REPLY), "{tool}");
        // a command that only talks to a registry is refused before it runs
        let o = w.run(tool, ["--no-network", "pull", "bb:1"]);
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("'pull' needs the network"),
            "{tool}: {}",
            stderr(&o)
        );
        ok(&w, tool, &["memres", "stop"]);
    }
}

#[test]
fn timeout_stops_a_long_one_shot_command_and_the_state_stays_usable() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = World::new();
        ok(&w, tool, &["memres", "start"]);
        {
            let _stop = MemresGuard::new(&w, tool);
            import_busybox(&w, tool);
            ok(&w, tool, &["memres", "stop"]);
        }
        // vdkr through the environment, vpdmn through the config key
        let mut cmd = w.cmd(tool);
        if tool == "vdkr" {
            cmd.env("VDKR_TIMEOUT", "5");
        } else {
            ok(&w, tool, &["vconfig", "timeout", "5"]);
        }
        let started = Instant::now();
        let o = cmd
            .args(["--no-daemon", "vrun", "bb:1", "sleep", "600"])
            .output()
            .expect("run");
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(124), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("ran longer than the timeout (5 s)"),
            "{tool}: {}",
            stderr(&o)
        );
        assert!(took < Duration::from_secs(400), "{tool}: took {took:?}");
        // the VM went down cleanly: the image is still there and the next command runs
        if tool == "vpdmn" {
            ok(&w, tool, &["vconfig", "timeout", "--reset"]);
        }
        let out = ok(&w, tool, &["--no-daemon", "vrun", "bb:1", "echo", "after"]);
        assert_eq!(out.trim(), "after", "{tool}");
        assert_no_vm_processes(w.home.path());
    }
}
