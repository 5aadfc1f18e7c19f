//! Batch mode (`--no-daemon`): boot, run, shut down cleanly, leave no process behind.
//!
//! The VM's processes are children of the calling thread with PR_SET_PDEATHSIG, so a CLI
//! killed mid-run takes QEMU with it; dropping the `BatchVm` shuts the guest down through the
//! agent and waits for QEMU to exit. vm.lock is held for the VM's whole life: a memres start
//! or another batch run on the same state dir waits instead of opening the same state disk.
//! A VM whose state dir outlives it may instead be suspended (`vm::suspend`): saved with its
//! disk, so the next command's VM comes back with its engine running.

use std::time::Duration;

use super::boot::{self, RunningVm, StopOutcome};
use super::config::VmConfig;
use super::error::{Result, VmError};
use super::instance::Instance;
use super::lock::{self, VmLock};
use super::suspend::{self, Suspended};
use super::transport::AgentStream;

pub struct BatchVm {
    vm: Option<RunningVm>,
    _lock: VmLock,
}

/// Boot a throw-away VM for one command. Fails when a memres VM runs on the same state dir
/// (use `Instance::find` first and run the command there instead).
pub fn boot_batch(cfg: &VmConfig) -> Result<BatchVm> {
    let lock = lock::exclusive(&cfg.state_dir)?;
    if Instance::find(&cfg.state_dir).is_some() {
        return Err(VmError::Other(format!(
            "a memres VM is running for {}; run the command through it, or `memres stop` first",
            cfg.state_dir.display()
        )));
    }
    let vm = suspend::boot(cfg)?;
    Ok(BatchVm {
        vm: Some(vm),
        _lock: lock,
    })
}

impl BatchVm {
    fn vm(&self) -> &RunningVm {
        // Some until shutdown(self) consumes it
        self.vm
            .as_ref()
            .unwrap_or_else(|| unreachable!("BatchVm used after shutdown"))
    }

    /// One new connection to the agent.
    pub fn connect(&self) -> Result<AgentStream> {
        let vm = self.vm();
        vm.endpoint.connect(
            vcontainer_proto::AGENT_VSOCK_PORT,
            Duration::from_secs(10),
            &vm.secret,
        )
    }

    /// When a connection broke: the error naming the console log if QEMU is gone.
    pub fn explain_disconnect(&mut self) -> Option<VmError> {
        let vm = self.vm.as_mut()?;
        if vm.qemu.is_running() {
            return None;
        }
        Some(VmError::VmGone {
            detail: "QEMU exited while the command ran".into(),
            console_log: vm.paths.console_log.clone(),
        })
    }

    pub fn boot_time(&self) -> Duration {
        self.vm().boot_time
    }

    pub fn running(&self) -> &RunningVm {
        self.vm()
    }

    /// Shut the guest down cleanly and wait for QEMU to exit (QMP quit, then SIGKILL, when it
    /// does not within the shutdown timeout).
    pub fn shutdown(mut self) -> StopOutcome {
        self.stop()
    }

    /// End the VM as a command on a lasting state dir does: suspended when it may be (see
    /// `vm::suspend`, which says why not at `-v`), else shut down as [`Self::shutdown`].
    pub fn suspend_or_shutdown(mut self) -> StopOutcome {
        let Some(vm) = self.vm.as_mut() else {
            return StopOutcome::AlreadyGone;
        };
        match suspend::suspend(vm) {
            Suspended::Saved(took) => {
                tracing::info!(
                    "suspended the VM into {} in {:.2} s: the next command on it restores it",
                    vm.cfg.state_dir.display(),
                    took.as_secs_f64()
                );
                self.vm = None;
                StopOutcome::Clean
            }
            Suspended::Failed(why) => {
                // the guest had frozen its disk: ending the VM lost nothing
                tracing::info!("suspending the VM failed, it was ended instead: {why}");
                self.vm = None;
                StopOutcome::Clean
            }
            Suspended::Declined(why) => {
                tracing::info!("not suspending the VM: {why}");
                self.stop()
            }
        }
    }

    fn stop(&mut self) -> StopOutcome {
        let Some(mut vm) = self.vm.take() else {
            return StopOutcome::AlreadyGone;
        };
        let timeout = vm.cfg.shutdown_timeout();
        boot::stop(
            &mut vm.qemu,
            vm.vhost.as_mut(),
            &vm.endpoint,
            &vm.paths,
            timeout,
        )
    }
}

impl Drop for BatchVm {
    fn drop(&mut self) {
        self.stop();
    }
}
