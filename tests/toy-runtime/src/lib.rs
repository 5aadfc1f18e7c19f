//! `toy`: a third runtime plugin, for tests and as the worked example of docs/plugins.md.
//!
//! Why it exists: it proves that a runtime is added without any change under `core/`. It
//! has its own tool name (`vtoy`), state dir (`~/.vtoy`), environment prefix (`VTOY_`),
//! state disk, registry files and its own tiny grammar (not the docker/podman one of
//! `vcontainer-runtime-kit`); in the guest it drives podman, so the podman guest image
//! serves as its blobs (the e2e test `tests/tests/third_runtime.rs` links them under
//! `<blobs>/<arch>/toy/`). Nothing in the core knows the word "toy".
//!
//! Its grammar: `run IMAGE [CMD...]` (always `--rm`) and `images`; anything else is a usage
//! error. Core commands (`vimport`, `memres`, `vshell`, ...) never reach a plugin.

use abi_stable::std_types::{ROption, RString, RVec};
use vcontainer_abi::runtime::{
    CommandInfo, CommandPlan, EngineApi, ImageOperand, ImageUse, RegistrySetup, RuntimeSpec,
    StorageDrivers, StorageExport,
};
use vcontainer_abi::PluginError;

/// The engine binary in the guest.
const BINARY: &str = "podman";
/// Where the state disk is mounted: podman's graph root lives under it.
const STORAGE: &str = "/var/lib/containers";

/// The fixed facts about the toy runtime.
pub fn spec() -> RuntimeSpec {
    RuntimeSpec {
        runtime_binary: BINARY.into(),
        tool_name: "vtoy".into(),
        state_dir_name: ".vtoy".into(),
        env_prefix: "VTOY".into(),
        state_image_name: "toy-state.img".into(),
        guest_storage_path: STORAGE.into(),
        // the guest image builder would install these for a `toy` blob set
        guest_packages: vec![RString::from("podman"), RString::from("skopeo")].into(),
        guest_files: RVec::new(),
        // daemonless: nothing to start
        services: RVec::new(),
        import_transport: "containers-storage:".into(),
        storage_export: StorageExport {
            source_dir: format!("{STORAGE}/storage").into(),
            archive_prefix: ".".into(),
            stop_services_first: false,
            description: "the toy runtime's graph root, entries relative to it".into(),
            // it drives podman: containers/storage's drivers and override
            drivers: StorageDrivers {
                supported: vec!["vfs".into(), "overlay".into()].into(),
                override_env: "STORAGE_DRIVER".into(),
                batch_default: "vfs".into(),
                images_dir_suffix: "-images".into(),
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
            certs_dir: "/etc/containers/certs.d".into(),
            daemon_json: "".into(),
            daemon_json_apply: "".into(),
            registries_dropin: "/etc/containers/registries.conf.d/60-toy.conf".into(),
            auth_file_name: "auth.json".into(),
            auth_env: "REGISTRY_AUTH_FILE".into(),
            auth_env_names_dir: false,
        },
        commands: CommandInfo::table(&[
            (
                "run",
                "Run IMAGE [CMD...] in a new container, removed afterwards",
            ),
            ("images", "List the images"),
        ]),
    }
}

/// Plans one toy command for the guest.
pub fn plan(args: &[String]) -> Result<CommandPlan, PluginError> {
    let Some((command, rest)) = args.split_first() else {
        return Err(PluginError::usage("no command given"));
    };
    match command.as_str() {
        "images" if rest.is_empty() => Ok(CommandPlan::pass_through(words(&[
            BINARY,
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]))),
        "images" => Err(PluginError::usage("toy images (no options)")),
        "run" => {
            let Some(image) = rest.first().filter(|i| !i.starts_with('-')) else {
                return Err(PluginError::usage("toy run IMAGE [CMD...] (no options)"));
            };
            let mut argv = words(&[BINARY, "run", "--rm"]);
            let index = u32::try_from(argv.len())
                .map_err(|_| PluginError::usage("command line too long"))?;
            argv.push(image.clone());
            argv.extend(rest[1..].iter().cloned());
            let mut plan = CommandPlan::pass_through(argv);
            plan.image = ROption::RSome(ImageOperand {
                index,
                usage: ImageUse::Run,
            });
            Ok(plan)
        }
        other => Err(PluginError::usage(format!(
            "toy knows 'run IMAGE [CMD...]' and 'images', not '{other}'"
        ))),
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

vcontainer_abi::export_runtime_plugin! {
    name: "toy",
    aliases: ["toy", "vtoy"],
    description: "test-only runtime: podman in the guest under its own grammar; vtoy",
    spec: spec,
    plan: plan,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontainer_abi::runtime::CommandClass;

    fn args(w: &[&str]) -> Vec<String> {
        words(w)
    }

    #[test]
    fn run_names_its_image_and_removes_the_container() {
        let p = plan(&args(&["run", "bb:1", "uname", "-m"])).expect("plan");
        assert_eq!(
            p.argv_strings(),
            ["podman", "run", "--rm", "bb:1", "uname", "-m"]
        );
        assert_eq!(p.image_ref(), Some(("bb:1", ImageUse::Run)));
        assert_eq!(p.class, CommandClass::PassThrough);
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        for bad in [
            &[][..],
            &["ps"],
            &["run"],
            &["run", "-it", "x"],
            &["images", "-a"],
        ] {
            let e = plan(&args(bad)).expect_err("usage");
            assert_eq!(e.kind, vcontainer_abi::PluginErrorKind::Usage, "{bad:?}");
        }
    }
}
