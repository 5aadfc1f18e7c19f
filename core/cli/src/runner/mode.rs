//! Where a command runs: the memres VM of the state dir, or a VM booted for this command.

/// What the options and the state dir say, gathered before anything is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeInputs {
    /// `--no-daemon`.
    pub no_daemon: bool,
    /// Config `auto-daemon`.
    pub auto_daemon: bool,
    /// `--stateless`: the state dir is a temp dir deleted when the command ends.
    pub stateless: bool,
    /// `--input-storage`: the command starts from a storage tar, not from the state disk.
    pub input_storage: bool,
    /// A memres VM is running for the state dir.
    pub memres_running: bool,
}

/// The choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Use the running memres VM.
    Memres,
    /// Start the memres VM (auto-daemon), then use it.
    StartMemres,
    /// Boot a VM for this command and shut it down after. `state_disk` false: the runtime
    /// storage lives in guest RAM (stateless, or seeded from `--input-storage`), so the
    /// persistent state disk is never opened.
    Batch { state_disk: bool },
}

/// The rules: `--stateless` and `--input-storage` never touch the persistent instance (its
/// VM or its disk; docs/old-bugs.md §8); `--no-daemon` boots a batch VM on the state disk; else
/// a running memres VM is used, or started when `auto-daemon` is on.
pub fn choose(i: ModeInputs) -> Mode {
    if i.stateless || i.input_storage {
        return Mode::Batch { state_disk: false };
    }
    if i.no_daemon {
        return Mode::Batch { state_disk: true };
    }
    if i.memres_running {
        return Mode::Memres;
    }
    if i.auto_daemon {
        Mode::StartMemres
    } else {
        Mode::Batch { state_disk: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ModeInputs {
        ModeInputs {
            auto_daemon: true,
            ..ModeInputs::default()
        }
    }

    #[test]
    fn default_auto_starts_and_then_reuses() {
        assert_eq!(choose(inputs()), Mode::StartMemres);
        let running = ModeInputs {
            memres_running: true,
            ..inputs()
        };
        assert_eq!(choose(running), Mode::Memres);
    }

    #[test]
    fn no_daemon_and_auto_daemon_off_boot_a_batch_vm_on_the_state_disk() {
        let no_daemon = ModeInputs {
            no_daemon: true,
            ..inputs()
        };
        assert_eq!(choose(no_daemon), Mode::Batch { state_disk: true });
        let off = ModeInputs {
            auto_daemon: false,
            ..ModeInputs::default()
        };
        assert_eq!(choose(off), Mode::Batch { state_disk: true });
    }

    #[test]
    fn stateless_and_input_storage_never_use_the_persistent_instance() {
        for i in [
            ModeInputs {
                stateless: true,
                memres_running: true,
                ..inputs()
            },
            ModeInputs {
                input_storage: true,
                memres_running: true,
                ..inputs()
            },
            ModeInputs {
                input_storage: true,
                no_daemon: true,
                ..inputs()
            },
        ] {
            assert_eq!(choose(i), Mode::Batch { state_disk: false }, "{i:?}");
        }
    }
}
