//! Networking for QEMU user networking (slirp): fixed address, gateway and DNS.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::tools::run_ok;
use crate::log;
use crate::reaper::Reaper;

pub const GUEST_ADDRESS: &str = "10.0.2.15/24";
pub const GATEWAY: &str = "10.0.2.2";
pub const NAMESERVER: &str = "10.0.2.3";

/// Bring up lo and the first ethernet interface; write resolv.conf, hostname and hosts.
pub fn configure(reaper: &Reaper, hostname: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut step = |result: Result<(), String>| {
        if let Err(e) = result {
            log!("network: {e}");
            warnings.push(format!("network: {e}"));
        }
    };
    step(run_ok(reaper, &["ip", "link", "set", "lo", "up"]));
    match find_interface(Duration::from_secs(5)) {
        Some(ifname) => {
            step(run_ok(
                reaper,
                &["ip", "addr", "add", GUEST_ADDRESS, "dev", &ifname],
            ));
            step(run_ok(reaper, &["ip", "link", "set", &ifname, "up"]));
            step(run_ok(
                reaper,
                &["ip", "route", "add", "default", "via", GATEWAY],
            ));
            log!("network: {ifname} {GUEST_ADDRESS} via {GATEWAY}");
        }
        None => step(Err("no network interface found".into())),
    }
    step(write_resolv_conf());
    step(nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {}", e.desc())));
    step(fs::write("/etc/hostname", format!("{hostname}\n")).map_err(|e| e.to_string()));
    step(write_hosts(hostname));
    let _ = fs::write("/proc/sys/net/ipv4/ip_forward", "1\n");
    warnings
}

/// eth0 if present, else the first non-loopback interface.
fn find_interface(limit: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        if Path::new("/sys/class/net/eth0").exists() {
            return Some("eth0".into());
        }
        if let Ok(entries) = fs::read_dir("/sys/class/net") {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .collect();
            names.sort();
            if let Some(first) = names.into_iter().next() {
                return Some(first);
            }
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn write_resolv_conf() -> Result<(), String> {
    let path = Path::new("/etc/resolv.conf");
    // It may be a dangling symlink to a resolver daemon's file; replace it.
    if path.symlink_metadata().is_ok() {
        fs::remove_file(path).map_err(|e| format!("remove /etc/resolv.conf: {e}"))?;
    }
    fs::write(path, format!("nameserver {NAMESERVER}\n"))
        .map_err(|e| format!("write /etc/resolv.conf: {e}"))
}

fn write_hosts(hostname: &str) -> Result<(), String> {
    let path = Path::new("/etc/hosts");
    let current = fs::read_to_string(path).unwrap_or_default();
    let mut text = current.clone();
    if !current
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("localhost"))
    {
        text.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    }
    if !current.split_whitespace().any(|w| w == hostname) {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    if text != current {
        fs::write(path, text).map_err(|e| format!("write /etc/hosts: {e}"))?;
    }
    Ok(())
}
