//! Files written into every guest rootfs to make it work as a VM guest with no init system
//! and no systemd: the agent is PID 1 and DNS comes from the agent. Runtime-specific files
//! (daemon.json, storage.conf, ...) are declared by the runtime plugin, never here, so a
//! runtime's configuration lives in one place. Their contents are part of the rootfs cache key.

/// One file (or empty directory) to create inside the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsFile {
    /// Absolute path inside the guest, e.g. `/etc/hosts`.
    pub path: String,
    pub mode: u32,
    /// None: a directory.
    pub contents: Option<String>,
}

fn file(path: &str, mode: u32, contents: &str) -> RootfsFile {
    RootfsFile {
        path: path.to_string(),
        mode,
        contents: Some(contents.to_string()),
    }
}

fn dir(path: &str) -> RootfsFile {
    RootfsFile {
        path: path.to_string(),
        mode: 0o755,
        contents: None,
    }
}

const HOSTS: &str = "127.0.0.1\tlocalhost vcontainer\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Files only: there is no nscd/systemd-resolved, and libnss_systemd crashed the old guest.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\ngshadow: files\n\
hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nethers: files\nrpc: files\n";

/// skopeo and podman refuse to pull without a policy; the guest trusts what the host asks for.
const POLICY_JSON: &str = r#"{
    "default": [{ "type": "insecureAcceptAnything" }],
    "transports": { "docker-daemon": { "": [{ "type": "insecureAcceptAnything" }] } }
}
"#;

/// Files every guest gets, whatever the runtime.
pub fn common_files() -> Vec<RootfsFile> {
    vec![
        file("/etc/hostname", 0o644, "vcontainer\n"),
        file("/etc/hosts", 0o644, HOSTS),
        file("/etc/nsswitch.conf", 0o644, NSSWITCH),
        // the agent writes the QEMU user-net resolver here at boot
        file("/etc/resolv.conf", 0o644, ""),
        file("/etc/fstab", 0o644, ""),
        file("/etc/machine-id", 0o444, ""),
        file("/etc/containers/policy.json", 0o644, POLICY_JSON),
        dir("/mnt"),
        dir("/var/lib/vcontainer"),
    ]
}

/// Debian packages every guest needs besides the runtime's own: fsck and mkfs for the state
/// disk, `ip`, `modprobe`, CA roots for registries, `mount`/`umount`, `ps`.
pub fn common_packages() -> &'static [&'static str] {
    &[
        "e2fsprogs",
        "iproute2",
        "kmod",
        "ca-certificates",
        "util-linux",
        "procps",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_json_parses_and_accepts_what_the_host_asks_for() {
        let policy = common_files()
            .into_iter()
            .find(|f| f.path == "/etc/containers/policy.json")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&policy.contents.unwrap()).unwrap();
        assert_eq!(v["default"][0]["type"], "insecureAcceptAnything");
    }
}
