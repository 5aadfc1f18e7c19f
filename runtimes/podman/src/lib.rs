//! Runtime plugin for vpdmn: daemonless podman in the guest.
//!
//! Podman needs no services, but its distribution defaults assume systemd and journald, which
//! the guest lacks; the configuration files below switch those off. Command classification is
//! shared with docker ([`vcontainer_runtime_kit`]).

use vcontainer_abi::runtime::{
    CommandInfo, CommandPlan, EngineApi, GuestFile, RegistrySetup, RuntimeSpec, ServiceSpec,
    StorageDrivers, StorageExport,
};
use vcontainer_abi::PluginError;
use vcontainer_runtime_kit::{self as plan_kit, Dialect};

/// The podman CLI in the guest.
pub const DIALECT: Dialect = Dialect {
    binary: "podman",
    remove_after_exit: true,
};

/// Guest mount point of the state disk.
pub const STORAGE_PATH: &str = "/var/lib/containers";

/// podman's graph root inside the state disk.
pub const GRAPH_ROOT: &str = "/var/lib/containers/storage";
/// Where `podman system service` serves the libpod (and Docker-compatible) API: directly
/// in /run, which exists (podman does not create the parent of the socket it binds).
const API_SOCKET: &str = "/run/podman.sock";

/// overlay on the ext4 state disk (the old guest used the much slower vfs driver).
const STORAGE_CONF: &str = r#"[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"

[storage.options.overlay]
mountopt = "nodev"
"#;

/// Short names like `alpine` resolve on Docker Hub, as with docker.
const REGISTRIES_CONF: &str = r#"unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
"#;

/// cgroupfs and file events: the defaults (systemd, journald) do not exist in the guest.
const CONTAINERS_CONF: &str = r#"[containers]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"

[network]
network_backend = "netavark"
"#;

fn strings(words: &[&str]) -> abi_stable::std_types::RVec<abi_stable::std_types::RString> {
    words.iter().map(|w| (*w).into()).collect()
}

fn file(path: &str, contents: &str) -> GuestFile {
    GuestFile {
        path: path.into(),
        contents: contents.into(),
        mode: 0o644,
    }
}

/// The fixed facts about podman in the guest.
pub fn spec() -> RuntimeSpec {
    RuntimeSpec {
        runtime_binary: "podman".into(),
        tool_name: "vpdmn".into(),
        state_dir_name: ".vpdmn".into(),
        env_prefix: "VPDMN".into(),
        state_image_name: "podman-state.img".into(),
        guest_storage_path: STORAGE_PATH.into(),
        guest_packages: strings(&[
            "podman",
            "crun",
            "conmon",
            "netavark",
            "aardvark-dns",
            "skopeo",
            "fuse-overlayfs",
            "nftables",
            "iptables",
            "catatonit",
            "ca-certificates",
            "e2fsprogs",
        ]),
        guest_files: vec![
            file("/etc/containers/storage.conf", STORAGE_CONF),
            file("/etc/containers/registries.conf", REGISTRIES_CONF),
            file("/etc/containers/containers.conf", CONTAINERS_CONF),
        ]
        .into(),
        services: Default::default(),
        import_transport: "containers-storage:".into(),
        storage_export: StorageExport {
            source_dir: GRAPH_ROOT.into(),
            archive_prefix: ".".into(),
            stop_services_first: false,
            description: "podman's graph root as ./...; deploy with `tar -xf F -C /var/lib/containers/storage`"
                .into(),
            // containers/storage reads STORAGE_DRIVER over storage.conf and keeps each
            // driver's images in `<driver>-images/`; meta-virtualization's target podman is
            // configured with vfs (container-host-config's storage.conf), while the guest's
            // own podman uses overlay on its state disk (docs/yocto.md)
            drivers: StorageDrivers {
                supported: vec!["vfs".into(), "overlay".into()].into(),
                override_env: "STORAGE_DRIVER".into(),
                batch_default: "vfs".into(),
                images_dir_suffix: "-images".into(),
            },
        },
        // podman is daemonless: its API server runs only when the API is exposed, for the
        // VM's life (`--time=0`: no idle exit)
        engine_api: EngineApi {
            guest_socket: API_SOCKET.into(),
            host_socket_name: "podman.sock".into(),
            client_env: "CONTAINER_HOST".into(),
            client_hint: "podman --url unix://{socket}".into(),
            services: vec![ServiceSpec {
                name: "podman-api".into(),
                argv: strings(&[
                    "podman",
                    "system",
                    "service",
                    "--time=0",
                    &format!("unix://{API_SOCKET}"),
                ]),
                env: Default::default(),
                readiness_probe: strings(&["test", "-S", API_SOCKET]),
                readiness_socket: API_SOCKET.into(),
                readiness_http_path: "/_ping".into(),
                timeout_secs: 120,
            }]
            .into(),
            context_create: "podman system connection add {name} unix://{socket}".into(),
            // the service's Docker-compatible API has /events and /containers/{id}/json
            docker_api_events: true,
        },
        // podman reads registries.conf drop-ins and certs.d at each invocation, and the
        // credentials file $REGISTRY_AUTH_FILE names
        registry: RegistrySetup {
            hub: "docker.io".into(),
            certs_dir: "/etc/containers/certs.d".into(),
            daemon_json: "".into(),
            daemon_json_apply: "".into(),
            registries_dropin: "/etc/containers/registries.conf.d/50-vcontainer.conf".into(),
            auth_file_name: "auth.json".into(),
            auth_env: "REGISTRY_AUTH_FILE".into(),
            auth_env_names_dir: false,
        },
        commands: CommandInfo::table(
            &plan_kit::COMMANDS
                .iter()
                .chain(plan_kit::PODMAN_COMMANDS)
                .copied()
                .collect::<Vec<_>>(),
        ),
    }
}

/// Classifies one podman command for the guest.
pub fn plan(args: &[String]) -> Result<CommandPlan, PluginError> {
    let mut plan = plan_kit::plan(&DIALECT, args)?;
    without_tty_sig_proxy(&mut plan);
    Ok(plan)
}

/// `run -t` gets `--sig-proxy=false` unless the user chose: what docker does (it proxies
/// signals in non-TTY mode only; keys, Ctrl-C included, reach a TTY container through its
/// terminal). Why: podman 4.3 proxies SIGWINCH too, and one arriving as a `run --rm -t`
/// container exits (a window resize, or the size the host re-sends after start) makes it
/// lose the race with its cleanup process: 'container has already been removed', exit 127
/// instead of the container's status. Resizing does not need the proxy.
fn without_tty_sig_proxy(plan: &mut CommandPlan) {
    if !plan.tty
        || plan
            .argv
            .iter()
            .any(|a| a.as_str().starts_with("--sig-proxy"))
    {
        return;
    }
    let words: Vec<&str> = plan.argv.iter().map(|a| a.as_str()).collect();
    let at = match words.get(1..3) {
        Some(["run", _]) => 2,
        Some(["container", "run"]) => 3,
        _ => return,
    };
    plan.argv.insert(at, "--sig-proxy=false".into());
    if let Some(image) = plan.image.as_mut().into_option() {
        if image.index as usize >= at {
            image.index += 1;
        }
    }
}

vcontainer_abi::export_runtime_plugin! {
    name: "podman",
    aliases: ["podman", "vpdmn"],
    description: "daemonless podman in the guest; vpdmn",
    spec: spec,
    plan: plan,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontainer_abi::runtime::CommandClass;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_match_the_old_tool() {
        let s = spec();
        assert_eq!(s.runtime_binary.as_str(), "podman");
        assert_eq!(s.tool_name.as_str(), "vpdmn");
        assert_eq!(s.state_dir_name.as_str(), ".vpdmn");
        assert_eq!(s.env_prefix.as_str(), "VPDMN");
        assert_eq!(s.state_image_name.as_str(), "podman-state.img");
        assert_eq!(s.import_transport.as_str(), "containers-storage:");
        assert_eq!(s.guest_storage_path.as_str(), "/var/lib/containers");
    }

    #[test]
    fn daemonless_with_systemd_free_config() {
        let s = spec();
        assert!(s.services.is_empty());
        let conf = s
            .guest_files
            .iter()
            .find(|f| f.path.as_str() == "/etc/containers/containers.conf")
            .expect("containers.conf");
        assert!(conf.contents.contains("cgroup_manager = \"cgroupfs\""));
        assert!(conf.contents.contains("events_logger = \"file\""));
        let storage = s
            .guest_files
            .iter()
            .find(|f| f.path.as_str() == "/etc/containers/storage.conf")
            .expect("storage.conf");
        assert!(storage.contents.contains(GRAPH_ROOT));
        assert!(GRAPH_ROOT.starts_with(s.guest_storage_path.as_str()));
    }

    #[test]
    fn packages_include_the_runtime_stack() {
        let s = spec();
        for p in [
            "podman",
            "crun",
            "conmon",
            "netavark",
            "aardvark-dns",
            "skopeo",
            "fuse-overlayfs",
            "nftables",
            "iptables",
        ] {
            assert!(s.guest_packages.iter().any(|x| x.as_str() == p), "{p}");
        }
    }

    #[test]
    fn storage_export_is_relative() {
        let s = spec();
        assert_eq!(s.storage_export.archive_prefix.as_str(), ".");
        assert_eq!(s.storage_export.source_dir.as_str(), GRAPH_ROOT);
    }

    #[test]
    fn tty_runs_do_not_proxy_signals_and_the_image_operand_follows() {
        for words in [
            &["run", "-it", "--rm", "bb:1", "sh"][..],
            &["container", "run", "-t", "bb:1", "sh"],
            &["vrun", "-it", "bb:1", "sh"],
        ] {
            let p = plan(&args(words)).unwrap();
            let argv: Vec<&str> = p.argv.iter().map(|a| a.as_str()).collect();
            assert_eq!(
                argv.iter().filter(|a| **a == "--sig-proxy=false").count(),
                1,
                "{argv:?}"
            );
            let image = p.image.as_ref().into_option().expect("image operand");
            assert_eq!(argv[image.index as usize], "bb:1", "{argv:?}");
        }
        // without a terminal signals are proxied (Ctrl-C reaches the container), and the
        // user's own choice stands
        for words in [
            &["run", "--rm", "bb:1", "sh"][..],
            &["run", "-it", "--sig-proxy=true", "bb:1", "sh"],
            &["exec", "-it", "c", "sh"],
        ] {
            let p = plan(&args(words)).unwrap();
            assert!(
                !p.argv.iter().any(|a| a.as_str() == "--sig-proxy=false"),
                "{words:?}"
            );
        }
    }

    #[test]
    fn plan_uses_the_podman_binary() {
        let p = plan(&args(&["run", "--rm", "-v", "./src:/src", "alpine", "ls"])).unwrap();
        assert_eq!(p.argv[0].as_str(), "podman");
        assert_eq!(p.class, CommandClass::FileIn);
        let p = plan(&args(&["kube", "play", "pod.yaml"])).unwrap();
        assert_eq!(p.inputs[0].host_path.as_str(), "pod.yaml");
        let p = plan(&args(&["exec", "-l", "-it", "sh"])).unwrap();
        assert!(p.tty && p.stdin);
    }
}
