//! Runtime plugin for vdkr: dockerd + containerd in the guest, docker CLI semantics.
//!
//! The plugin only describes; the core and the guest agent act. It says which Debian packages
//! the guest needs, which daemons to start and how to tell they are up, where docker keeps its
//! state, and how each user command is rewritten for the guest (shared docker/podman rules in
//! [`vcontainer_runtime_kit`]).

use vcontainer_abi::runtime::{
    CommandInfo, CommandPlan, EngineApi, GuestFile, RegistrySetup, RuntimeSpec, ServiceSpec,
    StorageDrivers, StorageExport,
};
use vcontainer_abi::PluginError;
use vcontainer_runtime_kit::{self as plan_kit, Dialect};

/// The docker CLI in the guest.
pub const DIALECT: Dialect = Dialect {
    binary: "docker",
    remove_after_exit: false,
};

/// Guest mount point of the state disk; dockerd's data root.
pub const STORAGE_PATH: &str = "/var/lib/docker";

const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

const DAEMON_JSON_PATH: &str = "/etc/docker/daemon.json";

/// Installs a staged daemon.json (`$1`) when it differs (temp + rename), reloads dockerd
/// (SIGHUP re-reads insecure-registries) and waits until `docker info` lists every insecure
/// host (`$2...`). Fixed text; the values arrive as positional parameters.
const DAEMON_JSON_APPLY: &str = r#"new="$1"; shift
cmp -s "$new" /etc/docker/daemon.json && exit 0
cp "$new" /etc/docker/daemon.json.vc-new || exit 1
mv -f /etc/docker/daemon.json.vc-new /etc/docker/daemon.json || exit 1
kill -HUP "$(cat /var/run/docker.pid)" || { echo "cannot signal dockerd to reload $new" >&2; exit 1; }
for h in "$@"; do
  i=0
  until docker info --format '{{json .RegistryConfig.IndexConfigs}}' 2>/dev/null | grep -qF "\"Name\":\"$h\""; do
    i=$((i+1))
    if [ "$i" -ge 150 ]; then echo "dockerd did not reload insecure registry $h" >&2; exit 1; fi
    sleep 0.2
  done
done
exit 0"#;

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// dockerd settings that must hold in a systemd-less VM. They live in daemon.json rather than
/// on the command line: dockerd refuses to start when a setting is given in both places.
/// overlay2 on the ext4 state disk; cgroupfs (no systemd). `iptables: false` because dockerd
/// 20.10 tears down and rebuilds its chains with ~100 execs of iptables at each start, 8-9 s
/// under TCG (docs/differences.md, "Container networking"); published ports then go through
/// docker-proxy (`userland-proxy`) and container egress through [`DOCKERD_START`]'s rule.
const DAEMON_JSON: &str = r#"{
    "storage-driver": "overlay2",
    "data-root": "/var/lib/docker",
    "exec-opts": ["native.cgroupdriver=cgroupfs"],
    "iptables": false,
    "userland-proxy": true
}
"#;

/// Runs as `sh -c` before dockerd (its arguments follow): the one NAT rule containers need
/// to reach past the guest (QEMU's user network answers only the guest's own address), in
/// place of dockerd's own chains (`iptables: false` in [`DAEMON_JSON`]). `-C` first: a
/// restarted dockerd in the same VM finds the rule already there. eth0 is the uplink the agent
/// configures (guest/agent/src/pid1/net.rs). Fixed text; dockerd's argv are `$@`.
const DOCKERD_START: &str = "iptables -w -t nat -C POSTROUTING -o eth0 -j MASQUERADE 2>/dev/null \
  || iptables -w -t nat -A POSTROUTING -o eth0 -j MASQUERADE \
  || echo 'cannot add the MASQUERADE rule: containers will not reach the network' >&2
exec dockerd \"$@\"";

fn strings(words: &[&str]) -> abi_stable::std_types::RVec<abi_stable::std_types::RString> {
    words.iter().map(|w| (*w).into()).collect()
}

/// The fixed facts about docker in the guest.
pub fn spec() -> RuntimeSpec {
    RuntimeSpec {
        runtime_binary: "docker".into(),
        tool_name: "vdkr".into(),
        state_dir_name: ".vdkr".into(),
        env_prefix: "VDKR".into(),
        state_image_name: "docker-state.img".into(),
        guest_storage_path: STORAGE_PATH.into(),
        guest_packages: strings(&[
            "docker.io",
            "containerd",
            "runc",
            "tini",
            "skopeo",
            "iptables",
            "ca-certificates",
            "e2fsprogs",
        ]),
        guest_files: vec![GuestFile {
            path: DAEMON_JSON_PATH.into(),
            contents: DAEMON_JSON.into(),
            mode: 0o644,
        }]
        .into(),
        services: vec![
            ServiceSpec {
                name: "containerd".into(),
                // Its root sits on the state disk next to docker's data (where dockerd would
                // put a containerd it manages itself), not on the guest's tmpfs overlay.
                argv: strings(&[
                    "containerd",
                    "--address",
                    CONTAINERD_SOCKET,
                    "--root",
                    "/var/lib/docker/containerd/daemon",
                    "--state",
                    "/run/containerd",
                ]),
                env: strings(&[PATH_ENV]),
                // "Ready once started", so that dockerd starts alongside: dockerd dials
                // containerd itself and waits for it (grpc WithBlock, 60 s), and under TCG
                // both spend seconds in Go start-up that is better overlapped. dockerd's
                // readiness implies containerd's; the agent ends dockerd's wait at once if
                // containerd dies, naming containerd's log.
                readiness_probe: strings(&[]),
                readiness_socket: "".into(),
                readiness_http_path: "".into(),
                timeout_secs: 60,
            },
            ServiceSpec {
                name: "dockerd".into(),
                argv: strings(&[
                    "sh",
                    "-c",
                    DOCKERD_START,
                    "dockerd",
                    "--containerd",
                    CONTAINERD_SOCKET,
                    "--host",
                    &format!("unix://{DOCKER_SOCKET}"),
                ]),
                env: strings(&[PATH_ENV]),
                readiness_probe: strings(&["docker", "version", "--format", "{{.Server.Version}}"]),
                // dockerd listens before it has initialised: wait for its API to answer.
                readiness_socket: DOCKER_SOCKET.into(),
                readiness_http_path: "/_ping".into(),
                // dockerd initialises the overlay2 driver and the bridge: slow under TCG.
                timeout_secs: 120,
            },
        ]
        .into(),
        import_transport: "docker-daemon:".into(),
        storage_export: StorageExport {
            source_dir: STORAGE_PATH.into(),
            archive_prefix: "docker".into(),
            stop_services_first: true,
            description: "docker's data root as docker/...; deploy with `tar -xf F -C /var/lib/`"
                .into(),
            // dockerd's driver is its configuration's, in the guest as on the target
            drivers: StorageDrivers {
                supported: vec!["overlay2".into()].into(),
                override_env: "".into(),
                batch_default: "".into(),
                images_dir_suffix: "".into(),
            },
        },
        // dockerd serves the Docker API on its socket anyway
        engine_api: EngineApi {
            guest_socket: DOCKER_SOCKET.into(),
            host_socket_name: "docker.sock".into(),
            client_env: "DOCKER_HOST".into(),
            client_hint: "docker -H unix://{socket}".into(),
            services: Default::default(),
            context_create: "docker context create {name} --docker host=unix://{socket}".into(),
            docker_api_events: true,
        },
        // dockerd reads insecure-registries from daemon.json (reloaded on SIGHUP) and
        // certs.d at each connection; the client reads $DOCKER_CONFIG/config.json
        registry: RegistrySetup {
            hub: "docker.io".into(),
            certs_dir: "/etc/docker/certs.d".into(),
            daemon_json: DAEMON_JSON_PATH.into(),
            daemon_json_apply: DAEMON_JSON_APPLY.into(),
            registries_dropin: "".into(),
            auth_file_name: "config.json".into(),
            auth_env: "DOCKER_CONFIG".into(),
            auth_env_names_dir: true,
        },
        commands: CommandInfo::table(plan_kit::COMMANDS),
    }
}

/// Classifies one docker command for the guest.
pub fn plan(args: &[String]) -> Result<CommandPlan, PluginError> {
    plan_kit::plan(&DIALECT, args)
}

vcontainer_abi::export_runtime_plugin! {
    name: "docker",
    aliases: ["docker", "vdkr"],
    description: "docker (dockerd + containerd) in the guest; vdkr",
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
        assert_eq!(s.runtime_binary.as_str(), "docker");
        assert_eq!(s.tool_name.as_str(), "vdkr");
        assert_eq!(s.state_dir_name.as_str(), ".vdkr");
        assert_eq!(s.env_prefix.as_str(), "VDKR");
        assert_eq!(s.state_image_name.as_str(), "docker-state.img");
        assert_eq!(s.import_transport.as_str(), "docker-daemon:");
        assert_eq!(s.guest_storage_path.as_str(), "/var/lib/docker");
    }

    #[test]
    fn registry_settings_go_to_daemon_json_applied_by_rename_and_reload() {
        let r = spec().registry;
        // the file the core rewrites is the one baked into the guest
        assert!(spec().guest_files.iter().any(|f| f.path == r.daemon_json));
        // replaced by rename, never written in place; values are positional parameters
        let script = r.daemon_json_apply.as_str();
        assert!(script.contains("mv -f /etc/docker/daemon.json.vc-new /etc/docker/daemon.json"));
        assert!(script.contains("kill -HUP") && script.contains("for h in \"$@\""));
        assert!(r.registries_dropin.is_empty());
        assert_eq!(r.auth_env.as_str(), "DOCKER_CONFIG");
        assert!(r.auth_env_names_dir);
    }

    #[test]
    fn packages_include_the_runtime_stack() {
        let s = spec();
        for p in [
            "docker.io",
            "containerd",
            "runc",
            "tini",
            "skopeo",
            "iptables",
        ] {
            assert!(s.guest_packages.iter().any(|x| x.as_str() == p), "{p}");
        }
    }

    #[test]
    fn containerd_starts_before_dockerd_and_dockerd_uses_it() {
        let s = spec();
        let names: Vec<&str> = s.services.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["containerd", "dockerd"]);
        let dockerd: Vec<&str> = s.services[1].argv.iter().map(|a| a.as_str()).collect();
        let at = dockerd
            .iter()
            .position(|a| *a == "--containerd")
            .expect("--containerd");
        assert_eq!(dockerd[at + 1], CONTAINERD_SOCKET);
        for svc in s.services.iter() {
            assert!(svc.timeout_secs >= 30);
        }
        // the last service's readiness stands for all of them
        let dockerd = &s.services[1];
        assert!(!dockerd.readiness_probe.is_empty());
        assert!(!dockerd.readiness_socket.is_empty());
    }

    #[test]
    fn readiness_sockets_are_the_ones_the_services_listen_on() {
        let s = spec();
        for svc in s
            .services
            .iter()
            .filter(|svc| !svc.readiness_socket.is_empty())
        {
            let argv: Vec<&str> = svc.argv.iter().map(|a| a.as_str()).collect();
            let flag = if svc.name.as_str() == "containerd" {
                "--address"
            } else {
                "--host"
            };
            let at = argv.iter().position(|a| *a == flag).expect("listen flag");
            let socket = svc.readiness_socket.as_str();
            assert!(socket.starts_with('/'), "{}: {socket:?}", svc.name);
            assert!(
                argv[at + 1].trim_start_matches("unix://") == socket,
                "{}: listens on {}, probed on {socket}",
                svc.name,
                argv[at + 1]
            );
        }
        assert_eq!(s.services[1].readiness_http_path.as_str(), "/_ping");
    }

    #[test]
    fn dockerd_flags_do_not_repeat_daemon_json() {
        // dockerd exits when a setting is both a flag and in daemon.json.
        let s = spec();
        let argv: Vec<&str> = s.services[1].argv.iter().map(|a| a.as_str()).collect();
        for key in [
            "storage-driver",
            "data-root",
            "exec-opt",
            "userland-proxy",
            "iptables",
        ] {
            let flags = argv.iter().filter(|a| a.starts_with("--"));
            assert!(!flags.clone().any(|a| a.contains(key)), "{key}");
            assert!(DAEMON_JSON.contains(key.trim_end_matches("-opt")));
        }
    }

    #[test]
    fn dockerd_runs_without_its_iptables_and_with_our_nat_rule() {
        // docs/differences.md, "Container networking"
        assert!(DAEMON_JSON.contains(r#""iptables": false"#));
        assert!(DAEMON_JSON.contains(r#""userland-proxy": true"#));
        let s = spec();
        let argv: Vec<&str> = s.services[1].argv.iter().map(|a| a.as_str()).collect();
        assert_eq!(argv[..4], ["sh", "-c", DOCKERD_START, "dockerd"]);
        assert!(DOCKERD_START.contains("-t nat -A POSTROUTING -o eth0 -j MASQUERADE"));
        assert!(DOCKERD_START.ends_with(r#"exec dockerd "$@""#));
    }

    #[test]
    fn storage_export_is_prefixed_docker() {
        let s = spec();
        assert_eq!(s.storage_export.archive_prefix.as_str(), "docker");
        assert!(s.storage_export.stop_services_first);
    }

    #[test]
    fn plan_uses_the_docker_binary() {
        let p = plan(&args(&["run", "-it", "alpine", "sh"])).unwrap();
        assert_eq!(p.argv[0].as_str(), "docker");
        assert_eq!(p.class, CommandClass::Interactive);
        let p = plan(&args(&["vrun", "alpine", "echo", "hi"])).unwrap();
        assert_eq!(
            p.argv_strings(),
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "",
                "alpine",
                "echo",
                "hi"
            ]
        );
    }
}
