//! Host port forwards for `run -d -p H:C` on a running memres VM.
//!
//! QEMU forwards host H to guest H (hostfwd through QMP); docker/podman's own `-p H:C` in
//! the guest then maps guest H to the container's C. Each forward is recorded in
//! `port-forwards.json` with the container's name and id, so `stop`/`rm` by either removes
//! it (the old tool keyed by name only and leaked forwards on `stop <id>`, spec/cli.md §8.12).
//! The file stays readable as the VM layer's plain forward list (extra fields are ignored).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use vcontainer_abi::runtime::{CommandPlan, PortProtocol};

use crate::vm::instance::{write_atomic, PORT_FORWARDS_JSON};
use crate::vm::qmp::Qmp;
use crate::vm::{Instance, PortForward, Protocol};

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
}

impl ForwardRecord {
    fn forward(&self) -> PortForward {
        PortForward {
            host: self.host,
            guest: self.guest,
            protocol: self.protocol,
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

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn qmp(instance: &Instance) -> anyhow::Result<Qmp> {
    Qmp::connect(&instance.record.paths.qmp_socket, Duration::from_secs(5))
        .map_err(|e| anyhow!("connecting to QEMU's monitor: {e}"))
}

/// Adds the forwards to the running VM; all or none (a failure removes those added). QEMU's
/// refusal (port in use) is an error, never recorded as a success (spec/cli.md §8.12).
pub fn add(instance: &Instance, wanted: &[Wanted]) -> anyhow::Result<()> {
    let mut q = qmp(instance)?;
    for (k, w) in wanted.iter().enumerate() {
        let f = &w.forward;
        let cmd = format!(
            "hostfwd_add net0 {}::{}-:{}",
            proto(f.protocol),
            f.host,
            f.guest
        );
        if let Err(e) = q.hmp(&cmd) {
            for done in &wanted[..k] {
                let _ = q.hmp(&remove_cmd(&done.forward));
            }
            return Err(anyhow!(
                "cannot forward host port {}/{}: {e}",
                f.host,
                proto(f.protocol)
            ));
        }
    }
    Ok(())
}

fn remove_cmd(f: &PortForward) -> String {
    format!("hostfwd_remove net0 {}::{}", proto(f.protocol), f.host)
}

/// Removes forwards from the running VM (failures are reported, not fatal).
pub fn remove(instance: &Instance, forwards: &[PortForward]) -> Vec<String> {
    let mut errors = Vec::new();
    match qmp(instance) {
        Ok(mut q) => {
            for f in forwards {
                if let Err(e) = q.hmp(&remove_cmd(f)) {
                    errors.push(format!("removing forward {f}: {e}"));
                }
            }
        }
        Err(e) => errors.push(format!("{e:#}")),
    }
    errors
}

/// Records the forwards of a started container.
pub fn record(
    state: &Path,
    wanted: &[Wanted],
    name: Option<String>,
    id: Option<String>,
) -> anyhow::Result<()> {
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
        });
    }
    save(state, &all)
}

/// Removes (from QEMU and the registry) the forwards of the containers named by `operands`
/// (names or id prefixes). Returns how many were removed and any problems.
pub fn release(instance: &Instance, operands: &[String]) -> (usize, Vec<String>) {
    let state = &instance.state_dir;
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
            format!("0.0.0.0:{}", r.host),
            guest,
            proto(r.protocol)
        ));
    }
    s
}

/// The operands of `stop`/`rm`/`kill` (container names or ids), skipping options and their
/// values (`-t 5`, `--time=5`, `-f`).
pub fn container_operands(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            out.extend(args[i + 1..].iter().cloned());
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            // options of stop/rm that take a separate value
            if matches!(
                a.as_str(),
                "-t" | "--time" | "--timeout" | "-s" | "--signal"
            ) {
                i += 1;
            }
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontainer_abi::plan_kit::{plan, Dialect};

    fn planned(args: &[&str]) -> CommandPlan {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        plan(&Dialect { binary: "docker" }, &args).expect("plan")
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
        let got: Vec<(u16, u16, Protocol, u16)> = w
            .iter()
            .map(|w| {
                (
                    w.forward.host,
                    w.forward.guest,
                    w.forward.protocol,
                    w.container_port,
                )
            })
            .collect();
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
        assert_eq!(
            plain,
            [PortForward {
                host: 8080,
                guest: 8080,
                protocol: Protocol::Tcp
            }]
        );
        assert!(table(&load(t.path())).contains("0.0.0.0:8080"));
    }

    #[test]
    fn operands_skip_options_and_their_values() {
        let args: Vec<String> = ["-t", "5", "web", "-f", "--time=3", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(container_operands(&args), ["web", "abc"]);
    }
}
