//! Runtime plugins: what a container runtime needs in the guest, and how its commands are
//! classified and rewritten for the guest.

use abi_stable::{
    std_types::{ROption, RResult, RSlice, RString, RVec},
    StableAbi,
};

use crate::PluginError;

/// Guest directory where the core places command inputs and collects outputs (on the guest's
/// /tmp tmpfs, so nothing lands on the state disk). A plan's [`FileInput::guest_path`] and
/// [`FileOutput::guest_path`] lie under it; the core moves them to a per-run subdirectory.
pub const GUEST_IO_DIR: &str = "/tmp/vcontainer-io";

/// The functions of a runtime plugin (interface v1).
///
/// A prefix type: functions may be appended in later interface versions without breaking
/// plugins built against this one.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = RuntimeModuleRef)))]
#[sabi(missing_field(panic))]
pub struct RuntimeModule {
    /// The fixed facts about this runtime (names, guest packages, services, storage).
    pub spec: extern "C" fn() -> RuntimeSpec,
    /// Classifies one user command (argv after the global options, e.g.
    /// `["run", "--rm", "-v", "./src:/src", "alpine", "ls"]`) and rewrites it for the guest.
    #[sabi(last_prefix_field)]
    pub plan: extern "C" fn(args: RSlice<'_, RString>) -> RResult<CommandPlan, PluginError>,
}

/// Everything the core and the guest-image builder need to know about a runtime.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// The runtime's CLI binary in the guest (the first word of every planned argv).
    pub runtime_binary: RString,
    /// The user-facing tool name: "vdkr" / "vpdmn" (used in messages and `[vdkr]` prefixes).
    pub tool_name: RString,
    /// Directory name under $HOME for state: ".vdkr" / ".vpdmn".
    pub state_dir_name: RString,
    /// Environment variable prefix: "VDKR" / "VPDMN" (VDKR_ARCH, VDKR_BLOB_DIR, ...).
    pub env_prefix: RString,
    /// File name of the state disk inside the state dir: "docker-state.img" / "podman-state.img".
    pub state_image_name: RString,
    /// Where the state disk is mounted in the guest: "/var/lib/docker" / "/var/lib/containers".
    pub guest_storage_path: RString,
    /// Debian package names the guest rootfs needs for this runtime.
    pub guest_packages: RVec<RString>,
    /// Files the guest-image builder writes into the rootfs (runtime configuration that must
    /// differ from the distribution default in a systemd-less VM).
    pub guest_files: RVec<GuestFile>,
    /// Long-running services the host asks the agent to start, in order, before the first
    /// runtime command. Empty for daemonless runtimes.
    pub services: RVec<ServiceSpec>,
    /// skopeo destination transport for imports: "docker-daemon:" / "containers-storage:".
    pub import_transport: RString,
    /// How `--storage`/state export produces a tar of the runtime's storage.
    pub storage_export: StorageExport,
    /// The engine's API socket, relayed to the host by `memres start --expose`.
    pub engine_api: EngineApi,
    /// How the runtime is told about registries (`--registry`, `--insecure-registry`,
    /// `--ca-cert`, per-command credentials).
    pub registry: RegistrySetup,
    /// The commands [`RuntimeModule::plan`] accepts, for help, completion and the front's
    /// "unknown command" check; the core's own VM commands (vimport, memres, vshell, ...) are
    /// never here.
    pub commands: RVec<CommandInfo>,
}

/// One command of the runtime's grammar, as `--help` lists it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: RString,
    /// One line for `--help`.
    pub about: RString,
}

impl CommandInfo {
    /// Rows of a `(name, about)` table, as a spec's `commands`.
    pub fn table(rows: &[(&str, &str)]) -> RVec<CommandInfo> {
        rows.iter()
            .map(|(name, about)| CommandInfo {
                name: (*name).into(),
                about: (*about).into(),
            })
            .collect()
    }
}

/// Where and how the runtime reads its registry settings. The core writes the files named
/// here (in the formats the field names say) and never switches on the runtime's name.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RegistrySetup {
    /// The registry unqualified image names resolve to ("docker.io"): the fallback after
    /// `--registry R`.
    pub hub: RString,
    /// Directory of per-registry CA certificates, read as `<dir>/<host:port>/ca.crt`
    /// ("/etc/docker/certs.d", "/etc/containers/certs.d").
    pub certs_dir: RString,
    /// A JSON daemon configuration whose `insecure-registries` array the core sets, keeping
    /// the rest of the baked file of the same path in [`RuntimeSpec::guest_files`]
    /// ("/etc/docker/daemon.json"; "" = none).
    pub daemon_json: RString,
    /// With `daemon_json`: a POSIX sh script that installs the staged file `$1` over
    /// `daemon_json` when it differs and makes the running daemon apply it, waiting until
    /// every insecure host in `$2...` is in effect; exit 0 on success.
    pub daemon_json_apply: RString,
    /// A containers-registries.conf(5) drop-in the core writes with
    /// `unqualified-search-registries` and `[[registry]] insecure` entries
    /// ("/etc/containers/registries.conf.d/50-vcontainer.conf"; "" = none). A runtime with
    /// one searches the default registry itself, so a plain `--registry HOST` needs no
    /// pull-and-tag by the core.
    pub registries_dropin: RString,
    /// The per-command credentials file's name in its private dir ("config.json",
    /// "auth.json").
    pub auth_file_name: RString,
    /// The environment variable that points the runtime at the credentials
    /// ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE").
    pub auth_env: RString,
    /// `auth_env` names the directory holding the file (true) or the file itself (false).
    pub auth_env_names_dir: bool,
}

/// One file baked into the guest rootfs.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: RString,
    /// Full contents (text).
    pub contents: RString,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
}

/// A daemon the agent starts (ServiceStart) and waits for.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Short name for logs and errors ("containerd", "dockerd").
    pub name: RString,
    /// Program and arguments (never a shell string).
    pub argv: RVec<RString>,
    /// Extra environment as `KEY=VALUE`.
    pub env: RVec<RString>,
    /// A command that exits 0 once the service is ready; retried until `timeout_secs`.
    pub readiness_probe: RVec<RString>,
    /// A Unix socket that accepts connections once the service is ready ("" = none). The
    /// agent checks it without starting a process (a probe program costs about a second
    /// per try under TCG); `readiness_probe` stays the fallback for agents that predate it.
    pub readiness_socket: RString,
    /// With `readiness_socket`: also `GET` this path over it and wait for a 2xx answer
    /// ("" = connecting is enough), for daemons that listen before they serve.
    pub readiness_http_path: RString,
    /// How long to wait for readiness. Generous, because guests may run under TCG emulation.
    pub timeout_secs: u32,
}

/// The runtime engine's API (Docker API, libpod API) as the host's own clients reach it
/// through `memres start --expose`: the core relays the host socket to the guest one and
/// knows nothing else of the runtime.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct EngineApi {
    /// The API's Unix socket in the guest ("" = the runtime has none to expose).
    pub guest_socket: RString,
    /// File name of the relayed socket in the state dir: "docker.sock" / "podman.sock".
    pub host_socket_name: RString,
    /// The environment variable the runtime's own client reads for the API address:
    /// "DOCKER_HOST" / "CONTAINER_HOST".
    pub client_env: RString,
    /// The client command that talks to it, with `{socket}` for the host socket path
    /// (printed for the user): "docker -H unix://{socket}" / "podman --url unix://{socket}".
    pub client_hint: RString,
    /// Services started (after `services`) only when the API is exposed: a daemonless
    /// runtime's API server (podman's `system service`).
    pub services: RVec<ServiceSpec>,
    /// The client command that saves the socket as a named connection, with `{name}` and
    /// `{socket}` (`vdkr context` prints it and, with `--create`, runs it when the program
    /// is on PATH): "docker context create {name} --docker host=unix://{socket}" /
    /// "podman system connection add {name} unix://{socket}". "" = none.
    pub context_create: RString,
    /// The socket also serves the Docker Engine API's `GET /events` and
    /// `GET /containers/{id}/json` (dockerd; podman's service has them too): the core then
    /// watches container starts and stops there and forwards published ports from the host.
    pub docker_api_events: bool,
}

/// How the runtime's storage is exported as a tar (for `--storage`, Yocto deploy).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct StorageExport {
    /// Guest directory whose contents are archived.
    pub source_dir: RString,
    /// Path prefix of the entries in the tar: the storage dir's own name (deploy with
    /// `tar -xf F -C` its parent, e.g. `/var/lib/`) or "." (entries relative to the storage
    /// dir).
    pub archive_prefix: RString,
    /// Stop the runtime's services before archiving, so the files are consistent.
    pub stop_services_first: bool,
    /// One line for humans: what the tar holds and how to deploy it.
    pub description: RString,
    /// The storage drivers the export can be written in, and how the runtime is told.
    pub drivers: StorageDrivers,
}

/// The storage drivers a runtime's store can be written in (`--storage-driver`). An exported
/// store is deployed into a target rootfs, so it must be in the driver the *target's* runtime
/// reads (docs/yocto.md, "Storage driver").
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct StorageDrivers {
    /// The drivers `--storage-driver` may name ("vfs", "overlay"; docker: "overlay2").
    pub supported: RVec<RString>,
    /// The environment variable the guest runtime reads as an override of its configured
    /// driver, set on every guest command of the invocation ("STORAGE_DRIVER" for
    /// containers/storage); "" = the driver is fixed by the daemon's configuration, which the
    /// target shares.
    pub override_env: RString,
    /// The driver of a batch export when none is asked for: what the target's runtime is
    /// configured with ("vfs" for meta-virtualization's podman); "" = the guest's own.
    pub batch_default: RString,
    /// A store's tar keeps each driver's images under `<driver><suffix>/` at its top
    /// ("-images" for containers/storage), so an `--input-storage` tar names its driver;
    /// "" = the tar does not tell.
    pub images_dir_suffix: RString,
}

/// How the core has to run a planned command.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    /// Run `argv` in the guest, stream stdout/stderr, return its exit code.
    PassThrough,
    /// Copy `inputs` into the guest first (and rw volumes back afterwards).
    FileIn,
    /// Copy `outputs` from the guest to the host afterwards (may also have inputs).
    FileOut,
    /// stdin and/or a terminal must be connected (`stdin`/`tty`); inputs/outputs still apply.
    Interactive,
    /// Not a runtime command: the core implements it itself (vimport, vshell, vconfig,
    /// vstorage, memres, clean, ...). `argv` is empty.
    Own,
}

/// The result of [`RuntimeModule::plan`]. The fields are authoritative; `class` is the summary
/// the core dispatches on (priority: Own > Interactive > FileOut > FileIn > PassThrough).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CommandPlan {
    /// The command to run in the guest, starting with the runtime binary. Host paths of
    /// `inputs`/`outputs` are already replaced by their guest paths.
    pub argv: RVec<RString>,
    /// See [`CommandClass`].
    pub class: CommandClass,
    /// Host files/dirs to place in the guest before running.
    pub inputs: RVec<FileInput>,
    /// Guest files/dirs to bring back to the host after running.
    pub outputs: RVec<FileOutput>,
    /// The runtime command asked for a terminal (`-t`, `--tty`).
    pub tty: bool,
    /// The runtime command reads the user's stdin (`-i`, `--interactive`, `login` prompt,
    /// `load` without `-i`, `--password-stdin`).
    pub stdin: bool,
    /// The container runs detached (`run -d`): volumes cannot be synced back on exit.
    pub detach: bool,
    /// Ports the container publishes (`-p`); the core forwards host ports to the guest.
    pub ports: RVec<PortMapping>,
    /// The command needs the guest network (pull, push, login, run of a possibly missing image).
    pub needs_network: bool,
    /// `--name` of the container created, if any (to key port forwards).
    pub container_name: ROption<RString>,
    /// The image the command names and what it does with it, so the core can apply the
    /// default registry (`--registry`) and per-registry options (`--ca-cert`, credentials).
    pub image: ROption<ImageOperand>,
    /// What the command does to existing containers: the core keeps its per-container
    /// state (host port forwards, live volumes) in step with it.
    pub effect: ContainerEffect,
    /// For a command that creates a container or builds: where `--no-network` puts the
    /// runtime's "no network" arguments (empty when the command names a network itself).
    /// None for any other command: `--no-network` then refuses one that needs the network.
    pub offline: ROption<ArgsInsert>,
    /// Guest commands the core runs, in order, after `argv` once it was started, whatever
    /// its status (also when the wait for it was interrupted or timed out; not when it
    /// could not be started). The exit status the user gets stays `argv`'s. Each runs on
    /// the same VM before it is released, with the same environment, its output kept from
    /// the user unless it fails (then a warning on stderr). Empty for most commands; the
    /// podman plugin removes a foreground `run --rm`'s container here, after its status was
    /// read (docs/plugins.md, "Follow-up steps").
    pub after: RVec<FollowUp>,
}

/// A guest command run after a plan's main one (see [`CommandPlan::after`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// A guest program and its arguments (never a shell string of the user's words).
    pub argv: RVec<RString>,
    /// What it does to containers; applied to the core's records when it succeeds, as a
    /// planned command's (a removal drops the containers' forwards and live volumes).
    pub effect: ContainerEffect,
}

/// What a command does to containers that exist already.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectKind {
    /// Nothing the core tracks.
    None,
    /// Starts stopped containers in the background (`start`): their volumes are refreshed
    /// from the host first and their published ports forwarded again afterwards.
    Start,
    /// Starts a container attached to the terminal (`start -a`/`-i`): volumes refreshed; it
    /// ends with the command, so nothing is forwarded.
    AttachedStart,
    /// `restart`: published ports forwarded again.
    Restart,
    /// `stop`, `kill`: forwards dropped, live volumes synced back.
    Stop,
    /// `rm`: as `Stop`, and the container's records go.
    Remove,
    /// Lists containers in a table (`ps` without `-q`): the core adds its forwards table.
    List,
}

/// A command's [`EffectKind`] and the containers it names (names or ids, as written).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ContainerEffect {
    pub kind: EffectKind,
    pub containers: RVec<RString>,
}

impl ContainerEffect {
    /// No effect the core tracks.
    pub fn none() -> Self {
        ContainerEffect {
            kind: EffectKind::None,
            containers: RVec::new(),
        }
    }
}

/// Arguments to insert into [`CommandPlan::argv`] at `index`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ArgsInsert {
    pub index: u32,
    pub args: RVec<RString>,
}

/// What a command does with the image it names.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUse {
    /// `pull IMAGE`: fetched from a registry.
    Pull,
    /// `run`/`create`/`vrun IMAGE`: used locally, pulled by the runtime when missing.
    Run,
    /// `push IMAGE`: sent to the registry its name says.
    Push,
}

/// The image operand of a command.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageOperand {
    /// Index of the image reference in [`CommandPlan::argv`].
    pub index: u32,
    pub usage: ImageUse,
}

/// What kind of host object a [`FileInput`] is.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Must be a regular file (`load -i`, `import`, `build -f`).
    File,
    /// Must be a directory (`build` context).
    Dir,
    /// A file or a directory, whichever the host path is (`cp` source).
    Path,
    /// A bind-mount source (`-v`, `--mount type=bind`): file or directory, copied back to the
    /// host after the container exits unless `read_only`.
    Volume,
}

/// A host path the command reads.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// As the user wrote it; relative paths stay relative (the core resolves them against
    /// its working directory).
    pub host_path: RString,
    /// Where the content must be in the guest: the file itself, or the directory whose
    /// contents mirror the host directory.
    pub guest_path: RString,
    /// See [`InputKind`].
    pub kind: InputKind,
    /// The container may not change it, so nothing is copied back.
    pub read_only: bool,
}

/// A guest path the command writes, to be copied to the host afterwards.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    /// File or directory written in the guest.
    pub guest_path: RString,
    /// Destination on the host, as the user wrote it (relative stays relative).
    pub host_path: RString,
    /// `docker cp` semantics: if `host_path` is an existing directory, the output goes inside
    /// it under the guest path's file name instead of replacing it.
    pub into_existing_dir: bool,
}

/// Transport protocol of a published port.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

impl PortProtocol {
    /// "tcp" / "udp" / "sctp".
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
        }
    }
}

/// An inclusive port range; a single port has `start == end`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// One `-p [ip:][host:]container[/proto]` value.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Host address to bind, empty for all.
    pub host_ip: RString,
    /// Host port(s); None means "runtime picks one" (`-p 80`).
    pub host_ports: ROption<PortRange>,
    /// Container port(s).
    pub container_ports: PortRange,
    pub protocol: PortProtocol,
}

impl CommandPlan {
    /// A plan that just runs `argv` in the guest.
    pub fn pass_through(argv: Vec<String>) -> Self {
        CommandPlan {
            argv: argv.into_iter().map(RString::from).collect(),
            class: CommandClass::PassThrough,
            inputs: RVec::new(),
            outputs: RVec::new(),
            tty: false,
            stdin: false,
            detach: false,
            ports: RVec::new(),
            needs_network: false,
            container_name: ROption::RNone,
            image: ROption::RNone,
            effect: ContainerEffect::none(),
            offline: ROption::RNone,
            after: RVec::new(),
        }
    }

    /// A plan for a command the core implements itself.
    pub fn own() -> Self {
        CommandPlan {
            class: CommandClass::Own,
            ..Self::pass_through(Vec::new())
        }
    }

    /// Recomputes `class` from the other fields (see the priority on [`CommandPlan`]).
    pub fn with_derived_class(mut self) -> Self {
        self.class = if self.class == CommandClass::Own {
            CommandClass::Own
        } else if self.stdin || self.tty {
            CommandClass::Interactive
        } else if !self.outputs.is_empty() {
            CommandClass::FileOut
        } else if !self.inputs.is_empty() {
            CommandClass::FileIn
        } else {
            CommandClass::PassThrough
        };
        self
    }

    /// `argv` as plain strings.
    pub fn argv_strings(&self) -> Vec<String> {
        self.argv.iter().map(|s| s.to_string()).collect()
    }

    /// The image reference the command names (see [`CommandPlan::image`]), as written.
    pub fn image_ref(&self) -> Option<(&str, ImageUse)> {
        let op = self.image.as_ref().into_option()?;
        let arg = self.argv.get(usize::try_from(op.index).ok()?)?;
        Some((arg.as_str(), op.usage))
    }
}
