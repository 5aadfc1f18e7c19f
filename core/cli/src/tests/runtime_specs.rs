//! Runtime specs for the core's unit tests: what the docker and podman plugins declare, for
//! the facts the tested code reads (the plugins cannot be linked into one test binary: each
//! exports the same root-module symbol). The e2e suites load the real plugins.

use vcontainer_abi::abi_stable::std_types::RVec;
use vcontainer_abi::runtime::{
    CommandInfo, EngineApi, RegistrySetup, RuntimeSpec, StorageDrivers, StorageExport,
};

fn base(binary: &str, tool: &str, transport: &str, storage: &str) -> RuntimeSpec {
    RuntimeSpec {
        runtime_binary: binary.into(),
        tool_name: tool.into(),
        state_dir_name: format!(".{tool}").into(),
        env_prefix: tool.to_uppercase().into(),
        state_image_name: format!("{binary}-state.img").into(),
        guest_storage_path: storage.into(),
        guest_packages: RVec::new(),
        guest_files: RVec::new(),
        services: RVec::new(),
        import_transport: transport.into(),
        storage_export: StorageExport {
            source_dir: storage.into(),
            archive_prefix: ".".into(),
            stop_services_first: false,
            description: "".into(),
            drivers: StorageDrivers {
                supported: RVec::new(),
                override_env: "".into(),
                batch_default: "".into(),
                images_dir_suffix: "".into(),
            },
        },
        engine_api: EngineApi {
            guest_socket: "".into(),
            host_socket_name: "".into(),
            client_env: "".into(),
            client_hint: "".into(),
            services: RVec::new(),
            context_create: "".into(),
            docker_api_events: false,
        },
        registry: RegistrySetup {
            hub: "docker.io".into(),
            certs_dir: "".into(),
            daemon_json: "".into(),
            daemon_json_apply: "".into(),
            registries_dropin: "".into(),
            auth_file_name: "".into(),
            auth_env: "".into(),
            auth_env_names_dir: false,
        },
        commands: CommandInfo::table(&[("run", "Run a container"), ("images", "List images")]),
    }
}

/// runtimes/docker's facts: daemon.json applied by a reload, `$DOCKER_CONFIG` dir.
pub fn docker() -> RuntimeSpec {
    let mut s = base("docker", "vdkr", "docker-daemon:", "/var/lib/docker");
    s.guest_files = vec![vcontainer_abi::runtime::GuestFile {
        path: "/etc/docker/daemon.json".into(),
        contents: r#"{"storage-driver": "overlay2"}"#.into(),
        mode: 0o644,
    }]
    .into();
    s.registry.certs_dir = "/etc/docker/certs.d".into();
    s.registry.daemon_json = "/etc/docker/daemon.json".into();
    s.registry.daemon_json_apply = "apply-daemon-json".into();
    s.registry.auth_file_name = "config.json".into();
    s.registry.auth_env = "DOCKER_CONFIG".into();
    s.registry.auth_env_names_dir = true;
    s.storage_export.drivers.supported = vec!["overlay2".into()].into();
    s
}

/// runtimes/podman's facts: a registries.conf drop-in, `$REGISTRY_AUTH_FILE` file.
pub fn podman() -> RuntimeSpec {
    let mut s = base(
        "podman",
        "vpdmn",
        "containers-storage:",
        "/var/lib/containers",
    );
    s.storage_export.source_dir = "/var/lib/containers/storage".into();
    s.registry.certs_dir = "/etc/containers/certs.d".into();
    s.registry.registries_dropin = "/etc/containers/registries.conf.d/50-vcontainer.conf".into();
    s.registry.auth_file_name = "auth.json".into();
    s.registry.auth_env = "REGISTRY_AUTH_FILE".into();
    s.storage_export.drivers = StorageDrivers {
        supported: vec!["vfs".into(), "overlay".into()].into(),
        override_env: "STORAGE_DRIVER".into(),
        batch_default: "vfs".into(),
        images_dir_suffix: "-images".into(),
    };
    s
}
