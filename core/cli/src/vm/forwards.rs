//! Host port forwards on a running VM: QEMU's user network `net0` forwards host H to guest
//! H (`hostfwd_add`/`hostfwd_remove` over the QMP socket). The runner decides which
//! (`runner::ports`); this module only talks to QEMU, so the runner's guard (`Target`) can
//! release a command's forwards without depending on the runner's bookkeeping.

use std::time::Duration;

use anyhow::anyhow;

use super::qmp::Qmp;
use super::{Instance, PortForward};

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
