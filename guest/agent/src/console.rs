//! Progress and error lines for the guest console.
//!
//! As PID 1 the agent's stderr is /dev/console, which QEMU writes to the host's console.log:
//! that file is how a user (or the host's error message) finds out why a guest failed. In
//! unit tests logging stays off so test output is not flooded.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);

/// `vcontainer.debug=1`: also log per-request details such as exec argv (off by default:
/// argv can hold secrets and console.log is a plain file on the host).
pub fn enable_debug() {
    DEBUG.store(true, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Turn console logging on (the binary does this at start).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Seconds since boot, as the kernel stamps its own console lines, so agent lines (service
/// readiness, state disk checks) can be timed against the kernel's in console.log.
fn uptime() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if status != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// Write one line prefixed `[uptime] vcontainer-agent:` if logging is on.
pub fn line(args: std::fmt::Arguments<'_>) {
    if ENABLED.load(Ordering::Relaxed) {
        let text = format!("[{:12.6}] vcontainer-agent: {args}\n", uptime());
        // One write call per line keeps lines from different threads whole.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// `log!("fmt", args..)`: one console line.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}

/// `debug_log!(...)`: a console line only with `vcontainer.debug=1`.
#[macro_export]
macro_rules! debug_log {
    ($($arg:tt)*) => {
        if $crate::console::debug_enabled() {
            $crate::console::line(format_args!($($arg)*))
        }
    };
}
