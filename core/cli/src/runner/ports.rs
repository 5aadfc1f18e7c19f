//! Host port forwards for `run -d -p H:C` on a running memres VM.
//!
//! QEMU forwards host H to guest H (hostfwd through QMP); docker/podman's own `-p H:C` in
//! the guest then maps guest H to the container's C. Each forward is recorded in
//! `port-forwards.json` with the container's name and id, so `stop`/`rm` by either removes
//! it (the old tool keyed by name only and leaked forwards on `stop <id>`, docs/old-bugs.md §12).
//! The file stays readable as the VM layer's plain forward list (extra fields are ignored).

use vcontainer_abi::runtime::{CommandPlan, PortProtocol};

use crate::vm::{Instance, PortForward, Protocol};

use super::target::Target;
use crate::vm::forwards::PublishError;
pub use crate::vm::forwards::{
    clean, load, parse_published, record, release, ForwardRecord, Wanted, PUBLISHED_FORMAT,
};

/// The QEMU forwards for a plan's `-p` values: `H:C` -> host H to guest H; ranges pairwise.
/// `-p C` (runtime picks the host port) and sctp cannot be forwarded and are reported.
pub fn wanted(plan: &CommandPlan) -> (Vec<Wanted>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for m in plan.ports.iter() {
        let protocol = match m.protocol {
            PortProtocol::Tcp => Protocol::Tcp,
            PortProtocol::Udp => Protocol::Udp,
            PortProtocol::Sctp => {
                skipped.push(format!(
                    "port {}/sctp: QEMU user networking forwards only tcp and udp",
                    m.container_ports.start
                ));
                continue;
            }
        };
        let Some(hosts) = m.host_ports.into_option() else {
            skipped.push(format!(
                "port {}: no host port given, so it is not forwarded from the host",
                m.container_ports.start
            ));
            continue;
        };
        // the host side listens on loopback unless the user named an address
        let host_addr = match PortForward::parse_addr(m.host_ip.as_str()) {
            Ok(a) => a,
            Err(e) => {
                skipped.push(format!("port {}: {e}", m.container_ports.start));
                continue;
            }
        };
        let c = m.container_ports;
        for (k, h) in (hosts.start..=hosts.end).enumerate() {
            let cport = if c.start == c.end {
                c.start
            } else {
                c.start.saturating_add(k as u16)
            };
            out.push(Wanted {
                forward: PortForward {
                    host: h,
                    guest: h,
                    protocol,
                    host_addr,
                },
                container_port: cport,
            });
        }
    }
    (out, skipped)
}

/// Adds the forwards to the running VM; all or none ([`crate::vm::forwards::add`]).
pub fn add(instance: &Instance, wanted: &[Wanted]) -> anyhow::Result<()> {
    crate::vm::forwards::add_wanted(instance, wanted)
}

/// After `start`/`restart` of containers on a memres VM: forwards the host ports they publish
/// (`create -p`, or a `run -d -p` container whose forward went with its `stop`), as docker
/// restores a stopped container's ports. Ports already forwarded are left as they are.
/// Returns the problems, for warnings: the container runs either way.
pub fn restore_started(target: &mut Target, binary: &str, operands: &[String]) -> Vec<String> {
    let Some(instance) = target.instance().cloned() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for operand in operands {
        let inspected =
            target.exec_capture(&[binary, "inspect", "--format", PUBLISHED_FORMAT, operand]);
        let published = match inspected {
            Ok((status, out, _)) if status.success() => {
                parse_published(&String::from_utf8_lossy(&out))
            }
            _ => None,
        };
        let Some(published) = published else {
            problems.push(format!(
                "{operand}: cannot read its published ports; none forwarded"
            ));
            continue;
        };
        match crate::vm::forwards::forward_published(&instance, published) {
            Ok(()) => {}
            Err(PublishError::Add(e)) => problems.push(format!("{operand}: {e:#}")),
            Err(PublishError::Record(e)) => {
                problems.push(format!("recording port forwards: {e:#}"))
            }
        }
    }
    problems
}

/// The table `ps` prints after the runtime's output.
pub fn table(records: &[ForwardRecord]) -> String {
    let mut s = String::from("\nHost Port Forwards (QEMU):\n");
    s.push_str(&format!(
        "{:<20} {:<15} {:<15} {:<8}\n",
        "CONTAINER", "HOST PORT", "GUEST PORT", "PROTO"
    ));
    for r in records {
        let name = r
            .container
            .clone()
            .or_else(|| {
                r.container_id
                    .as_ref()
                    .map(|i| i.chars().take(12).collect())
            })
            .unwrap_or_else(|| "(memres -p)".into());
        let guest = match r.container_port {
            Some(c) => format!("{} -> {c}", r.guest),
            None => r.guest.to_string(),
        };
        s.push_str(&format!(
            "{:<20} {:<15} {:<15} {:<8}\n",
            name,
            format!("{}:{}", r.host_addr, r.host),
            guest,
            r.protocol.as_str()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::test_plans::docker as planned;
    use std::net::Ipv4Addr;

    /// (host, guest, protocol, container port) of each wanted forward.
    fn tuples(wanted: &[Wanted]) -> Vec<(u16, u16, Protocol, u16)> {
        wanted
            .iter()
            .map(|w| {
                (
                    w.forward.host,
                    w.forward.guest,
                    w.forward.protocol,
                    w.container_port,
                )
            })
            .collect()
    }

    #[test]
    fn parallel_records_are_all_kept() {
        let t = tempfile::tempdir().expect("tmp");
        let threads: Vec<_> = (0..6u16)
            .map(|i| {
                let state = t.path().to_path_buf();
                std::thread::spawn(move || {
                    for round in 0..5u16 {
                        let port = 10_000 + i * 100 + round;
                        let wanted = [Wanted {
                            forward: PortForward::local(port, port, Protocol::Tcp),
                            container_port: 80,
                        }];
                        record(&state, &wanted, Some(format!("c{port}")), None).expect("record");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        assert_eq!(load(t.path()).len(), 30);
    }

    #[test]
    fn published_ports_of_docker_and_podman_inspect() {
        // docker: name with a leading slash, null for a container without bindings
        let docker = parse_published(
            "3f2a9c /web {\"80/tcp\":[{\"HostIp\":\"\",\"HostPort\":\"8080\"}],\"53/udp\":[{\"HostIp\":\"\",\"HostPort\":\"5353\"}],\"90/tcp\":[{\"HostIp\":\"\",\"HostPort\":\"\"}],\"7/sctp\":[{\"HostPort\":\"7\"}]}\n",
        )
        .expect("docker line");
        assert_eq!(docker.id, "3f2a9c");
        assert_eq!(docker.name, "web");
        let got = tuples(&docker.wanted);
        assert_eq!(
            got,
            [
                (5353, 5353, Protocol::Udp, 53),
                (8080, 8080, Protocol::Tcp, 80)
            ]
        );
        let none = parse_published("3f2a9c /quiet null").expect("no bindings");
        assert!(none.wanted.is_empty());
        // podman: no slash, empty map
        let podman = parse_published("abc123 db {}").expect("podman line");
        assert_eq!((podman.name.as_str(), podman.wanted.len()), ("db", 0));
        // an error text instead of the line forwards nothing
        assert!(parse_published("Error: no such container x").is_none());
        assert!(parse_published("").is_none());
    }

    #[test]
    fn host_port_is_forwarded_to_the_same_guest_port() {
        let (w, skipped) = wanted(&planned(&[
            "run",
            "-d",
            "-p",
            "8080:80",
            "-p",
            "5353:53/udp",
            "-p",
            "90",
            "-p",
            "7000-7001:8000-8001",
            "img",
        ]));
        let got = tuples(&w);
        assert_eq!(
            got,
            [
                (8080, 8080, Protocol::Tcp, 80),
                (5353, 5353, Protocol::Udp, 53),
                (7000, 7000, Protocol::Tcp, 8000),
                (7001, 7001, Protocol::Tcp, 8001),
            ]
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    }

    #[test]
    fn records_match_by_name_or_id_prefix_and_stay_vm_readable() {
        let t = tempfile::tempdir().expect("tmp");
        let w = wanted(&planned(&["run", "-d", "-p", "8080:80", "img"])).0;
        record(t.path(), &w, Some("web".into()), Some("3f2a9c0d11".into())).expect("record");
        let r = &load(t.path())[0];
        assert!(r.matches("web") && r.matches("3f2a") && !r.matches("we") && !r.matches(""));
        // the VM layer's reader still sees a plain forward list
        let plain = crate::vm::instance::read_port_forwards(t.path());
        assert_eq!(plain, [PortForward::local(8080, 8080, Protocol::Tcp)]);
        assert!(table(&load(t.path())).contains("127.0.0.1:8080"));
    }

    #[test]
    fn forwards_listen_on_loopback_unless_an_address_is_named() {
        let (w, skipped) = wanted(&planned(&[
            "run",
            "-d",
            "-p",
            "8080:80",
            "-p",
            "0.0.0.0:8081:81",
            "-p",
            "10.1.2.3:8082:82/udp",
            "-p",
            "[::1]:8083:83",
            "img",
        ]));
        let addrs: Vec<(u16, Ipv4Addr)> = w
            .iter()
            .map(|w| (w.forward.host, w.forward.host_addr))
            .collect();
        assert_eq!(
            addrs,
            [
                (8080, Ipv4Addr::LOCALHOST),
                (8081, Ipv4Addr::UNSPECIFIED),
                (8082, Ipv4Addr::new(10, 1, 2, 3)),
            ]
        );
        assert_eq!(skipped.len(), 1, "IPv6 is reported: {skipped:?}");
        // what QEMU is told, to add and to remove
        let f = &w[1].forward;
        assert_eq!(
            crate::vm::forwards::remove_cmd(f),
            "hostfwd_remove net0 tcp:0.0.0.0:8081"
        );
        assert_eq!(
            crate::vm::forwards::remove_cmd(&w[0].forward),
            "hostfwd_remove net0 tcp:127.0.0.1:8080"
        );
        // published ports read back from inspect keep their address the same way
        let p = parse_published(
            r#"abc /web {"80/tcp":[{"HostIp":"","HostPort":"8080"}],"81/tcp":[{"HostIp":"0.0.0.0","HostPort":"8081"}]}"#,
        )
        .expect("parsed");
        let addrs: Vec<Ipv4Addr> = p.wanted.iter().map(|w| w.forward.host_addr).collect();
        assert_eq!(addrs, [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]);
    }
}
