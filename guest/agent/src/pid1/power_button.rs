//! The ACPI power button (QMP `system_powerdown`) as a clean shutdown request.
//!
//! The host's normal way to stop the guest is the `Shutdown` request; the power button is
//! the fallback when the agent connection is unusable (e.g. the vsock proxy died), so that
//! even then the state disk is unmounted cleanly instead of the VM being killed. Needs the
//! `button` and `evdev` modules (or built-in drivers).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crate::{log, Agent};

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: timeval (16) + type (2) + code (2) + value (4).
const EVENT_SIZE: usize = 24;

/// Watch every input device named "Power Button"; a press shuts the guest down cleanly.
pub fn watch(agent: Arc<Agent>) {
    let Ok(entries) = fs::read_dir("/sys/class/input") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let device_name = fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if !device_name.contains("Power Button") {
            continue;
        }
        let node = Path::new("/dev/input").join(&name);
        let Ok(file) = File::open(&node) else {
            log!(
                "power button {}: cannot open {}",
                device_name.trim(),
                node.display()
            );
            continue;
        };
        log!("watching {} ({})", device_name.trim(), node.display());
        let agent = Arc::clone(&agent);
        let _ = thread::Builder::new()
            .name(format!("power-{name}"))
            .spawn(move || wait_for_press(file, &agent));
    }
}

fn wait_for_press(mut device: File, agent: &Agent) {
    let mut event = [0u8; EVENT_SIZE];
    while device.read_exact(&mut event).is_ok() {
        if is_power_press(&event) {
            log!("power button pressed: shutting down");
            agent.shut_down();
        }
    }
}

fn is_power_press(event: &[u8; EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&event(EV_KEY, 30, 1)));
        assert!(!is_power_press(&event(0, 0, 0)));
    }
}
