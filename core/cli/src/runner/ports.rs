//! Host port forwards for `run -d -p H:C` on a running memres VM.
//!
//! QEMU forwards host H to guest H (hostfwd through QMP); docker/podman's own `-p H:C` in
//! the guest then maps guest H to the container's C. Each forward is recorded in
//! `port-forwards.json` with the container's name and id, so `stop`/`rm` by either removes
//! it (the old tool keyed by name only and leaked forwards on `stop <id>`, docs/old-bugs.md §12).
//! The file stays readable as the VM layer's plain forward list (extra fields are ignored).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use vcontainer_abi::runtime::{CommandPlan, PortProtocol};

use crate::vm::instance::{write_atomic, PORT_FORWARDS_JSON};
use crate::vm::{Instance, PortForward, Protocol};

use super::target::Target;
use crate::vm::records;

/// One forward: static (`memres start -p`, no container) or for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRecord {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// The host address QEMU listens on (records of older tools: every address).
    #[serde(default = "any_address")]
    pub host_addr: Ipv4Addr,
}

fn any_address() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

impl ForwardRecord {
    fn forward(&self) -> PortForward {
        PortForward {
            host: self.host,
            guest: self.guest,
            protocol: self.protocol,
            host_addr: self.host_addr,
        }
    }

    /// `stop web`, `rm 3f2a...` (any prefix of the id, as docker accepts).
    fn matches(&self, operand: &str) -> bool {
        !operand.is_empty()
            && (self.container.as_deref() == Some(operand)
                || self
                    .container_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(operand)))
    }
}

/// A forward wanted by the plan: QEMU host->guest, and the container port it ends at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub forward: PortForward,
    pub container_port: u16,
}

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

pub fn load(state: &Path) -> Vec<ForwardRecord> {
    std::fs::read(state.join(PORT_FORWARDS_JSON))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(state: &Path, all: &[ForwardRecord]) -> anyhow::Result<()> {
    write_atomic(
        &state.join(PORT_FORWARDS_JSON),
        &serde_json::to_vec_pretty(all).context("encoding port-forwards.json")?,
    )?;
    Ok(())
}

/// Adds the forwards to the running VM; all or none ([`crate::vm::forwards::add`]).
pub fn add(instance: &Instance, wanted: &[Wanted]) -> anyhow::Result<()> {
    let forwards: Vec<PortForward> = wanted.iter().map(|w| w.forward.clone()).collect();
    crate::vm::forwards::add(instance, &forwards)
}

/// Removes forwards from the running VM (failures are reported, not fatal).
pub fn remove(instance: &Instance, forwards: &[PortForward]) -> Vec<String> {
    crate::vm::forwards::remove(instance, forwards)
}

/// Records the forwards of a started container.
pub fn record(
    state: &Path,
    wanted: &[Wanted],
    name: Option<String>,
    id: Option<String>,
) -> anyhow::Result<()> {
    let _lock = records::lock(state, PORT_FORWARDS_JSON)?;
    let mut all = load(state);
    for w in wanted {
        all.retain(|r| !(r.host == w.forward.host && r.protocol == w.forward.protocol));
        all.push(ForwardRecord {
            host: w.forward.host,
            guest: w.forward.guest,
            protocol: w.forward.protocol,
            container: name.clone(),
            container_id: id.clone(),
            container_port: Some(w.container_port),
            host_addr: w.forward.host_addr,
        });
    }
    save(state, &all)
}

/// The `inspect --format` template giving a container's id, name and published ports on one
/// line; docker and podman both answer it.
const PUBLISHED_FORMAT: &str = "{{.Id}} {{.Name}} {{json .HostConfig.PortBindings}}";

/// A container's published ports, as `inspect` with [`PUBLISHED_FORMAT`] tells them.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub name: String,
    pub wanted: Vec<Wanted>,
}

/// One binding of `HostConfig.PortBindings` (`{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}`).
#[derive(Deserialize)]
struct Binding {
    #[serde(rename = "HostPort", default)]
    host_port: String,
    /// "" when the user named no address (then the forward stays on loopback).
    #[serde(rename = "HostIp", default)]
    host_ip: String,
}

/// Reads one `inspect` line; None when it is not one (an error text, a changed format).
/// Bindings without a host port (the runtime picks one) and sctp cannot be forwarded from
/// the host and are left out, as `run -p` leaves them out.
pub fn parse_published(line: &str) -> Option<Published> {
    let mut parts = line.trim().splitn(3, ' ');
    let id = parts.next().filter(|id| !id.is_empty())?.to_string();
    let name = parts.next()?.trim_start_matches('/').to_string();
    let bindings: Option<BTreeMap<String, Option<Vec<Binding>>>> =
        serde_json::from_str(parts.next()?).ok()?;
    let mut wanted = Vec::new();
    for (port, hosts) in bindings.unwrap_or_default() {
        let (number, protocol) = port.split_once('/').unwrap_or((port.as_str(), "tcp"));
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => continue,
        };
        let Ok(container_port) = number.parse::<u16>() else {
            continue;
        };
        for binding in hosts.unwrap_or_default() {
            // an address the host cannot use (IPv6) keeps the forward on loopback
            let host_addr = PortForward::parse_addr(&binding.host_ip)
                .unwrap_or(crate::vm::config::DEFAULT_FORWARD_ADDR);
            if let Ok(host) = binding.host_port.parse::<u16>() {
                wanted.push(Wanted {
                    forward: PortForward {
                        host,
                        guest: host,
                        protocol,
                        host_addr,
                    },
                    container_port,
                });
            }
        }
    }
    Some(Published { id, name, wanted })
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
        let taken = load(&instance.state_dir);
        let missing: Vec<Wanted> = published
            .wanted
            .into_iter()
            .filter(|w| {
                !taken
                    .iter()
                    .any(|r| r.host == w.forward.host && r.protocol == w.forward.protocol)
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        if let Err(e) = add(&instance, &missing) {
            problems.push(format!("{operand}: {e:#}"));
            continue;
        }
        if let Err(e) = record(
            &instance.state_dir,
            &missing,
            Some(published.name),
            Some(published.id),
        ) {
            problems.push(format!("recording port forwards: {e:#}"));
        }
    }
    problems
}

/// Removes (from QEMU and the registry) the forwards of the containers named by `operands`
/// (names or id prefixes). Returns how many were removed and any problems.
pub fn release(instance: &Instance, operands: &[String]) -> (usize, Vec<String>) {
    let state = &instance.state_dir;
    let _lock = match records::lock(state, PORT_FORWARDS_JSON) {
        Ok(l) => l,
        Err(e) => return (0, vec![format!("{e:#}")]),
    };
    let all = load(state);
    let (gone, kept): (Vec<ForwardRecord>, Vec<ForwardRecord>) = all
        .into_iter()
        .partition(|r| r.container.is_some() && operands.iter().any(|o| r.matches(o)));
    if gone.is_empty() {
        return (0, Vec::new());
    }
    let forwards: Vec<PortForward> = gone.iter().map(ForwardRecord::forward).collect();
    let mut problems = remove(instance, &forwards);
    if let Err(e) = save(state, &kept) {
        problems.push(format!("{e:#}"));
    }
    (gone.len(), problems)
}

/// Removes every container forward (`memres clean-ports`); static ones stay.
pub fn clean(state: &Path, instance: Option<&Instance>) -> anyhow::Result<(usize, Vec<String>)> {
    let _lock = records::lock(state, PORT_FORWARDS_JSON)?;
    let (gone, kept): (Vec<ForwardRecord>, Vec<ForwardRecord>) =
        load(state).into_iter().partition(|r| r.container.is_some());
    if gone.is_empty() {
        return Ok((0, Vec::new()));
    }
    let problems = match instance {
        Some(i) => remove(
            i,
            &gone.iter().map(ForwardRecord::forward).collect::<Vec<_>>(),
        ),
        None => Vec::new(),
    };
    save(state, &kept)?;
    Ok((gone.len(), problems))
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
    use vcontainer_runtime_kit::{plan, Dialect};

    fn planned(args: &[&str]) -> CommandPlan {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        plan(&Dialect { binary: "docker" }, &args).expect("plan")
    }

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
