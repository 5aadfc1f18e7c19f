//! Host port forwards on a running VM and their record.
//!
//! QEMU's user network `net0` forwards host H to guest H (`hostfwd_add`/`hostfwd_remove`
//! over the QMP socket); docker/podman's own `-p H:C` in the guest then maps guest H to the
//! container's C. Each container forward is recorded in `port-forwards.json` with the
//! container's name and id, so `stop`/`rm` by either removes it (the old tool keyed by name
//! only and leaked forwards on `stop <id>`, docs/old-bugs.md §12). The runner decides which
//! forwards a command wants (`runner::ports`); the memres supervisor's engine-events watcher
//! adds and removes them too, which is why they live in the VM layer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

use super::instance::{write_atomic, PORT_FORWARDS_JSON};
use super::qmp::Qmp;
use super::records;
use super::{Instance, PortForward, Protocol};

fn qmp(instance: &Instance) -> anyhow::Result<Qmp> {
    Qmp::connect(&instance.record.paths.qmp_socket, Duration::from_secs(5))
        .map_err(|e| anyhow!("connecting to QEMU's monitor: {e}"))
}

/// Adds the forwards to the running VM; all or none (a failure removes those added). QEMU's
/// refusal (port in use) is an error, never recorded as a success (docs/old-bugs.md §12).
pub fn add(instance: &Instance, forwards: &[PortForward]) -> anyhow::Result<()> {
    let mut q = qmp(instance)?;
    for (k, f) in forwards.iter().enumerate() {
        let cmd = format!(
            "hostfwd_add net0 {}:{}:{}-:{}",
            f.protocol.as_str(),
            f.host_addr,
            f.host,
            f.guest
        );
        if let Err(e) = q.hmp(&cmd) {
            for done in &forwards[..k] {
                let _ = q.hmp(&remove_cmd(done));
            }
            return Err(anyhow!(
                "cannot forward host port {}/{}: {e}",
                f.host,
                f.protocol.as_str()
            ));
        }
    }
    Ok(())
}

/// [`add`] for wanted forwards.
pub fn add_wanted(instance: &Instance, wanted: &[Wanted]) -> anyhow::Result<()> {
    let forwards: Vec<PortForward> = wanted.iter().map(|w| w.forward.clone()).collect();
    add(instance, &forwards)
}

/// The monitor command that removes one forward.
pub fn remove_cmd(f: &PortForward) -> String {
    format!(
        "hostfwd_remove net0 {}:{}:{}",
        f.protocol.as_str(),
        f.host_addr,
        f.host
    )
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
    pub fn forward(&self) -> PortForward {
        PortForward {
            host: self.host,
            guest: self.guest,
            protocol: self.protocol,
            host_addr: self.host_addr,
        }
    }

    /// `stop web`, `rm 3f2a...` (any prefix of the id, as docker accepts).
    pub fn matches(&self, operand: &str) -> bool {
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

pub fn load(state: &Path) -> Vec<ForwardRecord> {
    records::load(state, PORT_FORWARDS_JSON)
}

fn save(state: &Path, all: &[ForwardRecord]) -> anyhow::Result<()> {
    write_atomic(
        &state.join(PORT_FORWARDS_JSON),
        &serde_json::to_vec_pretty(all).context("encoding port-forwards.json")?,
    )?;
    Ok(())
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
pub const PUBLISHED_FORMAT: &str = "{{.Id}} {{.Name}} {{json .HostConfig.PortBindings}}";

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
                .unwrap_or(super::config::DEFAULT_FORWARD_ADDR);
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

/// Why [`forward_published`] stopped.
#[derive(Debug)]
pub enum PublishError {
    /// QEMU refused a forward (a port in use): none of them was added.
    Add(anyhow::Error),
    /// The forwards run but could not be recorded.
    Record(anyhow::Error),
}

/// Forwards the host ports a started container publishes that are not forwarded yet, and
/// records them under its name and id (`vdkr start` of a stopped container, or a container
/// started through the exposed engine API).
pub fn forward_published(instance: &Instance, published: Published) -> Result<(), PublishError> {
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
        return Ok(());
    }
    add_wanted(instance, &missing).map_err(PublishError::Add)?;
    record(
        &instance.state_dir,
        &missing,
        Some(published.name),
        Some(published.id),
    )
    .map_err(PublishError::Record)
}
