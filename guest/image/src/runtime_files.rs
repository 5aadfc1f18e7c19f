//! Files written into the rootfs to make it work as a VM guest with no init system and no
//! systemd: the agent is PID 1, the runtime runs with cgroupfs, DNS comes from the agent.
//! Their contents are part of the rootfs cache key.

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

/// No systemd in the guest: cgroupfs. overlay2 on the ext4 state disk (or on the tmpfs
/// fallback). No userland proxy: port forwards reach the guest through QEMU's hostfwd.
const DOCKER_DAEMON_JSON: &str = r#"{
    "storage-driver": "overlay2",
    "data-root": "/var/lib/docker",
    "exec-opts": ["native.cgroupdriver=cgroupfs"],
    "userland-proxy": false
}
"#;

const PODMAN_STORAGE_CONF: &str = r#"[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"

[storage.options.overlay]
mountopt = "nodev"
"#;

const PODMAN_REGISTRIES_CONF: &str = r#"unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
"#;

/// cgroupfs and file events: both defaults assume systemd/journald, which the guest lacks.
const PODMAN_CONTAINERS_CONF: &str = r#"[containers]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"

[network]
network_backend = "netavark"
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

/// Files specific to a runtime (by the runtime plugin's name). Unknown runtimes get none.
pub fn runtime_files(runtime: &str) -> Vec<RootfsFile> {
    match runtime {
        "docker" => vec![
            file("/etc/docker/daemon.json", 0o644, DOCKER_DAEMON_JSON),
            dir("/var/lib/docker"),
            dir("/var/lib/containerd"),
        ],
        "podman" => vec![
            file("/etc/containers/storage.conf", 0o644, PODMAN_STORAGE_CONF),
            file(
                "/etc/containers/registries.conf",
                0o644,
                PODMAN_REGISTRIES_CONF,
            ),
            file(
                "/etc/containers/containers.conf",
                0o644,
                PODMAN_CONTAINERS_CONF,
            ),
            dir("/var/lib/containers/storage"),
        ],
        _ => Vec::new(),
    }
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
    fn podman_gets_overlay_docker_search_and_cgroupfs() {
        let files = runtime_files("podman");
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.path == p)
                .and_then(|f| f.contents.clone())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        let storage: toml::Value = toml::from_str(&get("/etc/containers/storage.conf")).unwrap();
        assert_eq!(storage["storage"]["driver"].as_str(), Some("overlay"));
        assert_eq!(
            storage["storage"]["graphroot"].as_str(),
            Some("/var/lib/containers/storage")
        );
        let conf: toml::Value = toml::from_str(&get("/etc/containers/containers.conf")).unwrap();
        assert_eq!(conf["engine"]["cgroup_manager"].as_str(), Some("cgroupfs"));
        assert_eq!(conf["engine"]["events_logger"].as_str(), Some("file"));
        assert_eq!(
            conf["network"]["network_backend"].as_str(),
            Some("netavark")
        );
        let reg: toml::Value = toml::from_str(&get("/etc/containers/registries.conf")).unwrap();
        assert_eq!(
            reg["unqualified-search-registries"].as_array().unwrap()[0].as_str(),
            Some("docker.io")
        );
    }

    #[test]
    fn json_files_parse() {
        let docker = runtime_files("docker");
        let daemon = docker
            .iter()
            .find(|f| f.path == "/etc/docker/daemon.json")
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(daemon.contents.as_deref().unwrap()).unwrap();
        assert_eq!(v["storage-driver"], "overlay2");
        let policy = common_files()
            .into_iter()
            .find(|f| f.path == "/etc/containers/policy.json")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&policy.contents.unwrap()).unwrap();
        assert_eq!(v["default"][0]["type"], "insecureAcceptAnything");
    }
}
