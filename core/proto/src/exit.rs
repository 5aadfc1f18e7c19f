//! Every exit status vcontainer gives a meaning to, in one table, so that no two places give
//! one number two meanings and a reader finds them all at once.
//!
//! It lives in the protocol crate because the crate is what the host and the guest agent
//! share: a status crosses the wire as an [`ExitStatus`](crate::ExitStatus), the agent
//! promises 126/127 for a program it cannot start (the `Exec` conversation in the crate
//! docs), and the 128 + signal rule is [`ExitStatus::shell_code`](crate::ExitStatus::shell_code)'s.
//! The host-only statuses (the tool's own failures, the timeout, vrunner's) sit beside them
//! for the same reason. Everything else a command exits with is the container's own status,
//! passed through unchanged.

/// Success (also `--help`, `--version`: the front prints and stops).
pub const OK: i32 = 0;

/// Any failure of `vrunner` (upstream vrunner.sh's single failure status).
pub const FAILURE: i32 = 1;

/// A `vrunner` usage error (as clap and upstream's getopt loop).
pub const USAGE: i32 = 2;

/// A command stopped by the `timeout` setting (as GNU timeout(1)).
pub const TIMEOUT: i32 = 124;

/// The tool itself failed: bad usage, no VM, a plugin error (docker's convention).
pub const TOOL_ERROR: i32 = 125;

/// The program exists but cannot be executed (a shell's and docker's convention); the agent
/// answers an `Exec` with it.
pub const CANNOT_EXECUTE: i32 = 126;

/// The program was not found (a shell's and docker's convention); the agent answers an
/// `Exec` with it.
pub const NOT_FOUND: i32 = 127;

/// The agent lost the status of a program it started (its reaper stopped first), as
/// ssh(1) reports a lost connection; never a container's own status in practice.
pub const STATUS_LOST: i32 = 255;

/// A process killed by a signal exits with this plus the signal's number, as a shell reports it.
pub const SIGNAL_BASE: i32 = 128;

/// The status of a process killed by `signal` (Linux numbering).
pub const fn killed_by(signal: i32) -> i32 {
    SIGNAL_BASE + signal
}

/// SIGPIPE's number on Linux (every arch vcontainer runs on).
const SIGPIPE: i32 = 13;

/// A command whose reader went away (`vdkr vstorage list | head -1`), as if killed by
/// SIGPIPE, which Rust ignores so that socket errors stay errors.
pub const STDOUT_CLOSED: i32 = killed_by(SIGPIPE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_signals_start_after_them() {
        let all = [
            OK,
            FAILURE,
            USAGE,
            TIMEOUT,
            TOOL_ERROR,
            CANNOT_EXECUTE,
            NOT_FOUND,
            STATUS_LOST,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b), "{a} twice");
        }
        assert!(all.iter().filter(|c| **c >= SIGNAL_BASE).eq([&STATUS_LOST]));
        assert_eq!(STDOUT_CLOSED, 141);
        assert_eq!(crate::ExitStatus::Signal(9).shell_code(), killed_by(9));
    }
}
