//! The docker/podman command grammar shared by the runtime plugins.
//!
//! It lives on the runtime side of the plugin boundary (as youki keeps the OCI CLI grammar
//! in `liboci-cli`): the core never parses a runtime's command line, it acts on the
//! [`CommandPlan`] a plugin returns; `vcontainer-abi` holds only the stable types.
//! Docker and podman have nearly the same CLI, so both plugins call [`plan`] with their own
//! [`Dialect`]; a runtime with another grammar writes its own planner. The classifier only looks at the runtime command's *own* option area (the
//! options before the image/container operand): `vdkr run alpine ls -t` passes `-t` to `ls`
//! and does not ask for a terminal.
//!
//! Host paths are rewritten to guest paths under [`GUEST_IO_DIR`] and reported as
//! [`FileInput`]/[`FileOutput`]; relative host paths are kept as written (the core resolves
//! them against its working directory).
//!
//! Known limits: an unknown long option without `=` is assumed to take a value (docker and
//! podman have far more value options than flags; the flags are listed here).

use abi_stable::std_types::{RString, RVec};

use vcontainer_abi::runtime::GUEST_IO_DIR;
use vcontainer_abi::runtime::{
    ArgsInsert, CommandClass, CommandPlan, ContainerEffect, EffectKind, FileInput, FileOutput,
    FollowUp, ImageOperand, ImageUse, InputKind, PortMapping, PortProtocol, PortRange,
};
use vcontainer_abi::PluginError;

/// The per-runtime facts the classifier needs.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// The runtime CLI binary in the guest ("docker" / "podman"); first word of every argv.
    pub binary: &'static str,
    /// A foreground `run --rm` (and `vrun`) is run without `--rm` and its container removed
    /// by a follow-up step once its exit status was read ([`CommandPlan::after`]): podman
    /// can lose the status when its cleanup process removes the container first
    /// (docs/plugins.md, "Follow-up steps"). Docker's daemon reports the status before it
    /// removes the container, so docker keeps `--rm`.
    pub remove_after_exit: bool,
}

/// Long options that never take a separate value, in any docker/podman command we classify.
const BOOL_LONG: &[&str] = &[
    "--rm",
    "--detach",
    "--interactive",
    "--tty",
    "--init",
    "--privileged",
    "--read-only",
    "--read-only-tmpfs",
    "--publish-all",
    "--no-healthcheck",
    "--oom-kill-disable",
    "--disable-content-trust",
    "--quiet",
    "--help",
    "--sig-proxy",
    "--use-api-socket",
    "--replace",
    "--rmi",
    "--no-hosts",
    "--http-proxy",
    "--env-host",
    "--passwd",
    "--rootfs",
    "--tls-verify",
    "--unsetenv-all",
    "--latest",
    "--attach",
    "--archive",
    "--follow-link",
    "--overwrite",
    "--password-stdin",
    "--no-cache",
    "--pull",
    "--force-rm",
    "--squash",
    "--squash-all",
    "--compress",
    "--layers",
    "--no-stdin",
    "--multi-image-archive",
    "--uncompressed",
    "--all",
    "--force",
    "--no-trunc",
    "--digests",
    "--no-network",
    "--all-tags",
    "--remove-signatures",
];

/// Short options that take a value, per command family; every other short option is a flag.
const RUN_SHORT_VALUES: &[char] = &['a', 'c', 'e', 'h', 'l', 'm', 'p', 'u', 'v', 'w'];
const EXEC_SHORT_VALUES: &[char] = &['e', 'u', 'w'];
const BUILD_SHORT_VALUES: &[char] = &['f', 't', 'o', 'm'];
const IO_SHORT_VALUES: &[char] = &['i', 'o', 'c', 'm', 'u', 'p'];

/// The commands docker and podman share that [`plan`] accepts, with their `--help` lines:
/// the plugins' `RuntimeSpec::commands` (the core lists and checks them, and knows none of
/// them itself).
pub const COMMANDS: &[(&str, &str)] = &[
    ("run", "Run a command in a new container"),
    (
        "vrun",
        "Run a container with its entrypoint cleared (run --rm [-it] IMAGE CMD)",
    ),
    ("exec", "Run a command in a running container"),
    ("images", "List images"),
    (
        "image",
        "Manage images (ls, rm, ...); plain vcontainer: build|unpack|index",
    ),
    ("pull", "Pull an image from a registry"),
    ("push", "Push an image to a registry"),
    ("load", "Load an image from a tar archive (-i FILE)"),
    ("save", "Save an image to a tar archive (-o FILE)"),
    ("import", "Import a tarball as an image"),
    ("tag", "Tag an image"),
    ("rmi", "Remove images"),
    ("build", "Build an image"),
    ("history", "Show the history of an image"),
    ("commit", "Create an image from a container"),
    ("ps", "List containers"),
    ("create", "Create a container"),
    ("start", "Start containers"),
    ("stop", "Stop containers"),
    ("restart", "Restart containers"),
    ("kill", "Kill containers"),
    ("pause", "Pause containers"),
    ("unpause", "Unpause containers"),
    ("rm", "Remove containers"),
    ("logs", "Show a container's logs"),
    ("inspect", "Show low-level information on objects"),
    ("top", "Show the processes of a container"),
    ("stats", "Show container resource usage"),
    ("port", "List a container's port mappings"),
    (
        "wait",
        "Wait for containers to stop and print their exit codes",
    ),
    ("cp", "Copy files between a container and the host"),
    ("container", "Manage containers"),
    ("volume", "Manage volumes"),
    ("network", "Manage networks"),
    ("system", "Manage the runtime (df, prune, events, info)"),
    ("info", "Show runtime information"),
    ("version", "Show the runtime's version"),
    ("search", "Search a registry for images"),
    ("login", "Log in to a registry"),
    ("logout", "Log out from a registry"),
];

/// The commands podman has and docker does not, planned here as well (`kube play FILE` and
/// `play kube FILE` carry their YAML file into the VM as a run's inputs do; `pod` and
/// `generate` pass through: a pod's `-p` publishes inside the VM, reached from the host
/// through `memres start -p`).
pub const PODMAN_COMMANDS: &[(&str, &str)] = &[
    ("pod", "Manage pods"),
    (
        "kube",
        "Play, generate or take down Kubernetes YAML (kube play FILE)",
    ),
    ("play", "Play Kubernetes YAML (play kube FILE)"),
    ("generate", "Generate Kubernetes YAML or systemd units"),
];

/// Commands that only group subcommands (`docker image ls`, `podman pod ps`). Without a
/// subcommand docker prints its help and exits 0, which a script cannot tell from success;
/// the old tool refused them, exit 1, saying a subcommand is required, and so do we (before
/// any VM work).
pub const GROUP_COMMANDS: &[&str] = &[
    "builder",
    "container",
    "context",
    "generate",
    "healthcheck",
    "image",
    "kube",
    "machine",
    "manifest",
    "network",
    "play",
    "plugin",
    "pod",
    "secret",
    "system",
    "trust",
    "volume",
];

/// Classifies `args` (the user's command after the global options) for the runtime `dialect`.
pub fn plan(dialect: &Dialect, args: &[String]) -> Result<CommandPlan, PluginError> {
    plan_with(dialect, args, &fresh_token)
}

/// A token no other command of this VM uses (names the cidfile of a run that is removed
/// after it exits).
fn fresh_token() -> String {
    // the OS's random source, as the agent secret's; should it fail, time and pid still
    // differ between the commands of one VM
    let n = getrandom::u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id()).rotate_left(48)
    });
    format!("{n:016x}")
}

/// [`plan`] with the source of fresh tokens given (fixed in tests).
fn plan_with(
    dialect: &Dialect,
    args: &[String],
    token: &dyn Fn() -> String,
) -> Result<CommandPlan, PluginError> {
    let Some(command) = args.first() else {
        return Err(PluginError::usage("no command given"));
    };
    let rest = &args[1..];
    if rest.is_empty() && GROUP_COMMANDS.contains(&command.as_str()) {
        return Err(PluginError::usage(format!(
            "requires a subcommand; `{command} --help` lists them"
        )));
    }
    let mut b = Builder::new(dialect, token);
    match command.as_str() {
        "vrun" => vrun(&mut b, rest)?,
        "container" | "image" => {
            let sub = rest.first().map(String::as_str).unwrap_or("");
            let prefix = [command.as_str(), sub];
            subcommand(&mut b, &prefix, sub, rest.get(1..).unwrap_or(&[]))?;
        }
        "kube" | "play" => {
            // podman kube play FILE / podman play kube FILE / podman kube down FILE
            let sub = rest.first().map(String::as_str).unwrap_or("");
            b.push_all(&[command.as_str(), sub]);
            let is_play =
                (command == "kube" && sub == "play") || (command == "play" && sub == "kube");
            let tail = rest.get(1..).unwrap_or(&[]);
            if is_play {
                file_operand_command(&mut b, tail, RUN_SHORT_VALUES)?;
                b.needs_network = true;
            } else if command == "kube" && sub == "down" {
                // `--force` is its only option, and takes no value
                file_operand_command(&mut b, tail, &[])?;
            } else {
                b.push_strings(tail);
            }
        }
        "system" | "volume" | "network" | "builder" | "pod"
            if rest.first().map(String::as_str) == Some("prune") =>
        {
            subcommand(&mut b, &[command.as_str(), "prune"], "prune", &rest[1..])?;
        }
        other => subcommand(&mut b, &[other], other, rest)?,
    }
    let mut plan = b.finish();
    plan.effect = effect_of(args);
    plan.offline = offline_of(args, &plan).into();
    Ok(plan)
}

/// `start` options that attach it to the terminal: `-a`, `--attach`, `-i`, `--interactive`,
/// or a short-option group holding a or i.
fn is_attach_flag(arg: &str) -> bool {
    match arg.strip_prefix("--") {
        Some(long) => matches!(long, "attach" | "interactive"),
        None => {
            arg.len() > 1 && arg.starts_with('-') && arg[1..].chars().any(|c| c == 'a' || c == 'i')
        }
    }
}

/// What the command (`args`, the `container` group included) does to existing containers.
fn effect_of(args: &[String]) -> ContainerEffect {
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some("container") => (
            args.get(1).map(String::as_str).unwrap_or(""),
            args.get(2..).unwrap_or(&[]),
        ),
        Some(c) => (c, args.get(1..).unwrap_or(&[])),
        None => ("", &[][..]),
    };
    let kind = match cmd {
        "stop" | "kill" => EffectKind::Stop,
        "rm" => EffectKind::Remove,
        // an attached start ends with its container: nothing to forward afterwards
        "start" if rest.iter().any(|a| is_attach_flag(a)) => EffectKind::AttachedStart,
        "start" => EffectKind::Start,
        "restart" => EffectKind::Restart,
        "ps" | "ls" | "list" => {
            let quiet = rest.iter().any(|a| {
                a == "-q"
                    || a == "--quiet"
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains('q'))
            });
            if quiet {
                EffectKind::None
            } else {
                EffectKind::List
            }
        }
        _ => EffectKind::None,
    };
    let containers = match kind {
        EffectKind::None | EffectKind::List => RVec::new(),
        _ => container_operands(rest)
            .into_iter()
            .map(RString::from)
            .collect(),
    };
    ContainerEffect { kind, containers }
}

/// The operands of `start`/`stop`/`rm`/`kill`/`restart` (container names or ids), skipping
/// options and their values (`-t 5`, `--time=5`, `-f`).
fn container_operands(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            out.extend(args[i + 1..].iter().cloned());
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            // options that take a separate value
            if matches!(
                a.as_str(),
                "-t" | "--time" | "--timeout" | "-s" | "--signal" | "--detach-keys"
            ) {
                i += 1;
            }
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}

/// Where `--network none` goes for a command that creates a container (before its image)
/// or builds (before its context, the last operand); nothing to insert when the command
/// names a network itself.
fn offline_of(args: &[String], plan: &CommandPlan) -> Option<ArgsInsert> {
    let command = args.first().map(String::as_str).unwrap_or("");
    let is_build =
        command == "build" || (command == "image" && args.get(1).is_some_and(|a| a == "build"));
    let at = match plan.image_ref() {
        Some((_, ImageUse::Run)) => plan
            .image
            .as_ref()
            .into_option()
            .and_then(|i| usize::try_from(i.index).ok()),
        _ if is_build => plan.argv.len().checked_sub(1),
        _ => None,
    }?;
    let sets_network = plan.argv[..at].iter().any(|a| {
        let a = a.as_str();
        a == "--network" || a == "--net" || a.starts_with("--network=") || a.starts_with("--net=")
    });
    let args: RVec<RString> = if sets_network {
        RVec::new()
    } else {
        vec![RString::from("--network"), RString::from("none")].into()
    };
    Some(ArgsInsert {
        index: u32::try_from(at).ok()?,
        args,
    })
}

/// Dispatches one (possibly nested, e.g. `image load`) runtime command. `prefix` is what is
/// emitted before the arguments; `name` is the command that decides the handling.
fn subcommand(
    b: &mut Builder<'_>,
    prefix: &[&str],
    name: &str,
    args: &[String],
) -> Result<(), PluginError> {
    b.push_all(prefix);
    match name {
        "run" | "create" => run_like(b, args, false),
        "exec" => exec(b, args),
        "start" => start(b, args),
        "attach" => attach(b, args),
        "load" => load(b, args),
        "save" => save_or_export(b, args, IO_SHORT_VALUES),
        "export" => save_or_export(b, args, IO_SHORT_VALUES),
        "import" => import(b, args),
        "cp" => cp(b, args),
        "build" => build(b, args),
        "login" => login(b, args),
        "pull" => pull_or_push(b, args, ImageUse::Pull),
        "push" => pull_or_push(b, args, ImageUse::Push),
        "prune" => {
            prune(b, args);
            Ok(())
        }
        "search" | "logout" => {
            b.needs_network = true;
            b.push_strings(args);
            Ok(())
        }
        _ => {
            b.push_strings(args);
            Ok(())
        }
    }
}

/// Accumulates the plan while the arguments are walked.
struct Builder<'d> {
    dialect: &'d Dialect,
    token: &'d dyn Fn() -> String,
    argv: Vec<String>,
    inputs: Vec<FileInput>,
    outputs: Vec<FileOutput>,
    tty: bool,
    stdin: bool,
    detach: bool,
    ports: Vec<PortMapping>,
    needs_network: bool,
    name: Option<String>,
    image: Option<ImageOperand>,
    after: Vec<FollowUp>,
}

impl<'d> Builder<'d> {
    fn new(dialect: &'d Dialect, token: &'d dyn Fn() -> String) -> Self {
        Builder {
            dialect,
            token,
            argv: vec![dialect.binary.to_string()],
            inputs: Vec::new(),
            outputs: Vec::new(),
            tty: false,
            stdin: false,
            detach: false,
            ports: Vec::new(),
            needs_network: false,
            name: None,
            image: None,
            after: Vec::new(),
        }
    }

    /// Appends the image operand and remembers where it is.
    fn push_image(&mut self, image: &str, usage: ImageUse) {
        self.image = u32::try_from(self.argv.len())
            .ok()
            .map(|index| ImageOperand { index, usage });
        self.argv.push(image.to_string());
    }

    fn push_all(&mut self, words: &[&str]) {
        self.argv.extend(
            words
                .iter()
                .filter(|w| !w.is_empty())
                .map(|w| w.to_string()),
        );
    }

    fn push_strings(&mut self, words: &[String]) {
        self.argv.extend(words.iter().cloned());
    }

    /// Registers a host input and returns the guest path that replaces it in argv.
    fn input(&mut self, host: &str, kind: InputKind, read_only: bool) -> String {
        let n = self.inputs.len();
        let guest = match kind {
            InputKind::Volume => format!("{GUEST_IO_DIR}/vol{n}"),
            InputKind::Dir => format!("{GUEST_IO_DIR}/in{n}"),
            InputKind::File | InputKind::Path => {
                format!("{GUEST_IO_DIR}/in{n}/{}", file_name_of(host, "input"))
            }
        };
        self.inputs.push(FileInput {
            host_path: host.into(),
            guest_path: guest.as_str().into(),
            kind,
            read_only,
        });
        guest
    }

    /// Registers a host output named `name` in the guest and returns its guest path.
    fn output(&mut self, host: &str, name: &str, into_existing_dir: bool) -> String {
        let guest = format!("{GUEST_IO_DIR}/out{}/{name}", self.outputs.len());
        self.outputs.push(FileOutput {
            guest_path: guest.as_str().into(),
            host_path: host.into(),
            into_existing_dir,
        });
        guest
    }

    fn finish(self) -> CommandPlan {
        let _ = self.dialect;
        CommandPlan {
            argv: self.argv.into_iter().map(RString::from).collect(),
            class: CommandClass::PassThrough,
            inputs: RVec::from(self.inputs),
            outputs: RVec::from(self.outputs),
            tty: self.tty,
            stdin: self.stdin,
            detach: self.detach,
            ports: RVec::from(self.ports),
            needs_network: self.needs_network,
            container_name: self.name.map(RString::from).into(),
            image: self.image.into(),
            effect: ContainerEffect::none(),
            offline: None.into(),
            after: RVec::from(self.after),
        }
        .with_derived_class()
    }
}

/// Last path component without trailing `/` or `/.`, or `fallback` when there is none.
fn file_name_of(path: &str, fallback: &str) -> String {
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_string(),
        _ => fallback.to_string(),
    }
}

/// One parsed option (or a cluster of short options) with its original tokens, so a value
/// can be rewritten without disturbing the user's spelling of everything else.
#[derive(Debug)]
struct OptGroup {
    tokens: Vec<String>,
    opts: Vec<Opt>,
}

#[derive(Debug)]
struct Opt {
    /// "-v" or "--volume".
    name: String,
    value: Option<String>,
    /// (token index, byte offset) where the value starts, to rewrite it.
    value_at: Option<(usize, usize)>,
}

impl Opt {
    fn is(&self, names: &[&str]) -> bool {
        names.contains(&self.name.as_str())
    }

    /// A flag's truth: `--tty` / `-t` is true, `--tty=false` is false.
    fn flag(&self) -> bool {
        !matches!(self.value.as_deref(), Some("false") | Some("0"))
    }
}

impl OptGroup {
    fn set_value(&mut self, opt_index: usize, new_value: &str) {
        if let Some((tok, off)) = self.opts[opt_index].value_at {
            let token = &mut self.tokens[tok];
            token.truncate(off);
            token.push_str(new_value);
            self.opts[opt_index].value = Some(new_value.to_string());
        }
    }
}

/// Splits `args` into option groups and the operands after them. Parsing stops at the first
/// operand (docker/podman do not intersperse options) or after `--` (kept in the groups).
fn parse_options(args: &[String], short_values: &[char]) -> (Vec<OptGroup>, usize) {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            groups.push(OptGroup {
                tokens: vec![arg.clone()],
                opts: Vec::new(),
            });
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if let Some((name, _)) = long.split_once('=') {
                let off = 2 + name.len() + 1;
                groups.push(OptGroup {
                    tokens: vec![arg.clone()],
                    opts: vec![Opt {
                        name: format!("--{name}"),
                        value: Some(arg[off..].to_string()),
                        value_at: Some((0, off)),
                    }],
                });
                i += 1;
            } else if BOOL_LONG.contains(&arg.as_str()) || i + 1 >= args.len() {
                groups.push(OptGroup {
                    tokens: vec![arg.clone()],
                    opts: vec![Opt {
                        name: arg.clone(),
                        value: None,
                        value_at: None,
                    }],
                });
                i += 1;
            } else {
                groups.push(OptGroup {
                    tokens: vec![arg.clone(), args[i + 1].clone()],
                    opts: vec![Opt {
                        name: arg.clone(),
                        value: Some(args[i + 1].clone()),
                        value_at: Some((1, 0)),
                    }],
                });
                i += 2;
            }
            continue;
        }
        // A cluster of short options: flags until one that takes a value.
        let mut group = OptGroup {
            tokens: vec![arg.clone()],
            opts: Vec::new(),
        };
        let mut consumed_next = false;
        for (pos, c) in arg.char_indices().skip(1) {
            let name = format!("-{c}");
            if short_values.contains(&c) {
                let off = pos + c.len_utf8();
                if off < arg.len() {
                    group.opts.push(Opt {
                        name,
                        value: Some(arg[off..].to_string()),
                        value_at: Some((0, off)),
                    });
                } else if let Some(next) = args.get(i + 1) {
                    group.tokens.push(next.clone());
                    group.opts.push(Opt {
                        name,
                        value: Some(next.clone()),
                        value_at: Some((1, 0)),
                    });
                    consumed_next = true;
                } else {
                    group.opts.push(Opt {
                        name,
                        value: None,
                        value_at: None,
                    });
                }
                break;
            }
            group.opts.push(Opt {
                name,
                value: None,
                value_at: None,
            });
        }
        i += if consumed_next { 2 } else { 1 };
        groups.push(group);
    }
    (groups, i)
}

fn emit_groups(b: &mut Builder<'_>, groups: &[OptGroup]) {
    for g in groups {
        b.argv.extend(g.tokens.iter().cloned());
    }
}

/// A bind source is a host path: absolute or explicitly relative. Anything else
/// (`mydata:/data`) is a named volume and stays in the guest.
fn is_host_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

/// Rewrites `-v SRC:DST[:OPTS]` when SRC is a host path.
fn rewrite_volume(b: &mut Builder<'_>, spec: &str) -> Option<String> {
    let mut parts = spec.splitn(3, ':');
    let source = parts.next()?;
    let target = parts.next()?;
    let options = parts.next();
    if !is_host_path(source) {
        return None;
    }
    let read_only = options
        .map(|o| o.split(',').any(|x| x == "ro" || x == "readonly"))
        .unwrap_or(false);
    let guest = b.input(source, InputKind::Volume, read_only);
    Some(match options {
        Some(o) => format!("{guest}:{target}:{o}"),
        None => format!("{guest}:{target}"),
    })
}

/// Rewrites `--mount type=bind,source=SRC,...` when SRC is a host path.
fn rewrite_mount(b: &mut Builder<'_>, spec: &str) -> Option<String> {
    let fields: Vec<&str> = spec.split(',').collect();
    let value_of = |keys: &[&str]| {
        fields.iter().find_map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            keys.contains(&k).then_some(v)
        })
    };
    if value_of(&["type"]) != Some("bind") {
        return None;
    }
    let source = value_of(&["source", "src"])?;
    if !is_host_path(source) {
        return None;
    }
    let read_only = fields.iter().any(|f| {
        let (k, v) = f.split_once('=').unwrap_or((f, "true"));
        (k == "readonly" || k == "ro") && v != "false" && v != "0"
    });
    let guest = b.input(source, InputKind::Volume, read_only);
    Some(
        fields
            .iter()
            .map(|f| match f.split_once('=') {
                Some((k, _)) if k == "source" || k == "src" => format!("{k}={guest}"),
                _ => f.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn parse_port_number(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_port_range(s: &str) -> Option<PortRange> {
    match s.split_once('-') {
        Some((a, z)) => {
            let (start, end) = (parse_port_number(a)?, parse_port_number(z)?);
            (start <= end).then_some(PortRange { start, end })
        }
        None => parse_port_number(s).map(|p| PortRange { start: p, end: p }),
    }
}

/// Parses `[ip:][host:]container[/proto]` (ranges `8000-8010` allowed, IPv6 in brackets).
pub fn parse_port(spec: &str) -> Result<PortMapping, PluginError> {
    let bad = || PluginError::usage(format!("invalid port specification: '{spec}'"));
    let (addr, protocol) = match spec.rsplit_once('/') {
        Some((a, "tcp")) => (a, PortProtocol::Tcp),
        Some((a, "udp")) => (a, PortProtocol::Udp),
        Some((a, "sctp")) => (a, PortProtocol::Sctp),
        Some(_) => return Err(bad()),
        None => (spec, PortProtocol::Tcp),
    };
    let (host_ip, ports) = if let Some(rest) = addr.strip_prefix('[') {
        let (ip, after) = rest.split_once("]:").ok_or_else(bad)?;
        (ip.to_string(), after)
    } else {
        match addr.matches(':').count() {
            2 => {
                let (ip, after) = addr.split_once(':').ok_or_else(bad)?;
                (ip.to_string(), after)
            }
            0 | 1 => (String::new(), addr),
            _ => return Err(bad()),
        }
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, ports),
    };
    let container_ports = parse_port_range(container).ok_or_else(bad)?;
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => Some(parse_port_range(h).ok_or_else(bad)?),
    };
    Ok(PortMapping {
        host_ip: host_ip.into(),
        host_ports: host_ports.into(),
        container_ports,
        protocol,
    })
}

/// The `-p` value the runtime in the guest gets for `spec` when it differs: without the host
/// address of `127.0.0.1:8080:80`.
///
/// The host address is for the host side: the core forwards `127.0.0.1:8080` on the host to
/// the guest's port 8080, which arrives at the guest's network address, not at its loopback.
/// A runtime told `127.0.0.1:8080:80` in the guest would listen on the guest's loopback only
/// and the forward would reach nothing. So the guest gets `8080:80` (every guest address;
/// the guest is reachable only through the forwards). `0.0.0.0` is kept (it means the same
/// in the guest, and `start` reads it back to restore the forward on every host address);
/// mappings with no host port or an IPv6 address are not forwarded and are left alone.
fn guest_publish(spec: &str, mapping: &PortMapping) -> Option<String> {
    let ip = mapping.host_ip.as_str();
    if ip.is_empty() || ip == "0.0.0.0" || ip.contains(':') || mapping.host_ports.is_none() {
        return None;
    }
    spec.strip_prefix(ip)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
}

/// What `run_like` learned from the option area.
#[derive(Default)]
struct RunOptions {
    has_entrypoint: bool,
    has_rm: bool,
    /// `--rm` was given and true (`--rm=false` keeps the container).
    rm: bool,
    /// The user named a `--cidfile`: podman takes the last one, so a follow-up cannot name
    /// the container by its own.
    cidfile: bool,
    no_network: bool,
}

/// Handles the option area of `run`/`create` (shared with `vrun`): volumes, mounts, env
/// files, ports, name, tty/stdin/detach. Returns the groups (rewritten) and what was seen.
fn scan_run_options(
    b: &mut Builder<'_>,
    groups: &mut [OptGroup],
    vrun: bool,
) -> Result<RunOptions, PluginError> {
    let mut seen = RunOptions::default();
    for g in groups.iter_mut() {
        for k in 0..g.opts.len() {
            let opt = &g.opts[k];
            let value = opt.value.clone().unwrap_or_default();
            if opt.is(&["-v", "--volume"]) {
                if let Some(new) = rewrite_volume(b, &value) {
                    g.set_value(k, &new);
                }
            } else if opt.is(&["--mount"]) {
                if let Some(new) = rewrite_mount(b, &value) {
                    g.set_value(k, &new);
                }
            } else if opt.is(&["--env-file", "--label-file"]) && value != "-" && opt.value.is_some()
            {
                let guest = b.input(&value, InputKind::File, true);
                g.set_value(k, &guest);
            } else if opt.is(&["-p", "--publish"]) {
                let mapping = parse_port(&value)?;
                if let Some(guest) = guest_publish(&value, &mapping) {
                    g.set_value(k, &guest);
                }
                b.ports.push(mapping);
            } else if opt.is(&["--name"]) {
                b.name = opt.value.clone();
            } else if opt.is(&["-i", "--interactive"]) {
                b.stdin = opt.flag();
            } else if opt.is(&["-t", "--tty"]) {
                b.tty = opt.flag();
            } else if opt.is(&["-d", "--detach"]) {
                b.detach = opt.flag();
            } else if opt.is(&["--entrypoint"]) {
                seen.has_entrypoint = true;
            } else if opt.is(&["--rm"]) {
                seen.has_rm = true;
                seen.rm = opt.flag();
            } else if opt.is(&["--cidfile"]) {
                seen.cidfile = true;
            } else if vrun && opt.is(&["--no-network"]) {
                seen.no_network = true;
            }
        }
    }
    Ok(seen)
}

/// `run`/`create` (and `vrun` when `vrun` is true).
fn run_like(b: &mut Builder<'_>, args: &[String], vrun: bool) -> Result<(), PluginError> {
    let (mut groups, operands_at) = parse_options(args, RUN_SHORT_VALUES);
    let seen = scan_run_options(b, &mut groups, vrun)?;
    let operands = &args[operands_at..];
    b.needs_network = !seen.no_network;
    // `create --rm` removes the container when it later exits: the runtime's to do
    let runs = vrun || b.argv.last().is_some_and(|w| w == "run");
    let removes = seen.rm || (vrun && !seen.has_rm);
    let remove_after = runs && removes && b.dialect.remove_after_exit && !b.detach && !seen.cidfile;
    if remove_after {
        groups.retain(|g| !(g.opts.len() == 1 && g.opts[0].is(&["--rm"])));
        remove_after_exit(b);
    }
    if vrun {
        let Some((image, command)) = operands.split_first() else {
            return Err(PluginError::usage(
                "vrun requires an image: vrun [options] <image> [command...]",
            ));
        };
        if !seen.has_rm && !remove_after {
            b.push_all(&["--rm"]);
        }
        for g in &groups {
            if g.opts.len() == 1 && g.opts[0].is(&["--no-network"]) {
                // vrun's own option (docs/old-tool-cli.md, vrun): the container gets no network
                b.push_all(&["--network", "none"]);
                continue;
            }
            b.argv.extend(g.tokens.iter().cloned());
        }
        // vrun runs the given command itself, not through the image's entrypoint
        // (docs/old-tool-cli.md, vrun); without a command the image's default runs.
        if !command.is_empty() && !seen.has_entrypoint {
            b.push_all(&["--entrypoint"]);
            b.argv.push(String::new());
        }
        b.push_image(image, ImageUse::Run);
        b.push_strings(command);
    } else {
        emit_groups(b, &groups);
        if let Some((image, command)) = operands.split_first() {
            b.push_image(image, ImageUse::Run);
            b.push_strings(command);
        }
    }
    Ok(())
}

/// A foreground `run --rm` on a runtime that can lose its exit status to the removal
/// ([`Dialect::remove_after_exit`]): the container's id goes to a cidfile in the guest's
/// /tmp, and the follow-up step removes the container it names (at once, with its anonymous
/// volumes, as `--rm` would) and then the cidfile; with no cidfile (the container was never
/// created) it does nothing, where podman 4.3's `rm --ignore --cidfile` fails. A cidfile,
/// not the `--name`: when that name is taken, the run fails and the container of that name
/// is someone else's. The container has no records of the core (a foreground run's
/// forwards last as long as the command; only detached containers keep live volumes), so
/// the step's effect is none. The cidfile reaches the script as `$1`, never inside it.
fn remove_after_exit(b: &mut Builder<'_>) {
    let cidfile = format!("/tmp/vcontainer-run-{}.cid", (b.token)());
    b.push_all(&["--cidfile", &cidfile]);
    let script = format!(
        r#"[ ! -e "$1" ] || {} rm --force --time 0 --volumes --ignore --cidfile "$1" && rm -f "$1""#,
        b.dialect.binary
    );
    let argv = ["sh", "-c", script.as_str(), "sh", cidfile.as_str()];
    b.after.push(FollowUp {
        argv: argv.into_iter().map(RString::from).collect(),
        effect: ContainerEffect::none(),
    });
}

/// `system|image|container|volume|network|builder|pod prune`: unless forced, the runtime asks
/// "Are you sure?" and reads the answer from stdin, so the user's stdin must reach it
/// (without it the runtime reads end-of-file, takes it as "no" and prunes nothing).
fn prune(b: &mut Builder<'_>, args: &[String]) {
    let forced = args.iter().take_while(|a| *a != "--").any(|a| {
        if let Some(long) = a.strip_prefix("--") {
            long == "force" || long == "force=true" || long == "force=1"
        } else {
            a.strip_prefix('-')
                .is_some_and(|shorts| shorts.contains('f'))
        }
    });
    b.stdin = !forced;
    b.push_strings(args);
}

/// `pull IMAGE` / `push IMAGE [DEST]`: the first operand is the image.
fn pull_or_push(b: &mut Builder<'_>, args: &[String], usage: ImageUse) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, &[]);
    b.needs_network = true;
    emit_groups(b, &groups);
    if let Some((image, rest)) = args[at..].split_first() {
        b.push_image(image, usage);
        b.push_strings(rest);
    }
    Ok(())
}

fn vrun(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    b.push_all(&["run"]);
    run_like(b, args, true)
}

fn exec(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, EXEC_SHORT_VALUES);
    for g in &groups {
        for opt in &g.opts {
            if opt.is(&["-i", "--interactive"]) {
                b.stdin = opt.flag();
            } else if opt.is(&["-t", "--tty"]) {
                b.tty = opt.flag();
            } else if opt.is(&["-d", "--detach"]) {
                b.detach = opt.flag();
            }
        }
    }
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

/// `start -a -i`: the container's own tty setting is unknown here, so a terminal is asked
/// for whenever stdin is attached (the core only allocates one if the user has one).
fn start(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, &[]);
    for g in &groups {
        for opt in &g.opts {
            if opt.is(&["-i", "--interactive"]) {
                b.stdin = opt.flag();
                b.tty = b.stdin;
            }
        }
    }
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

fn attach(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, &[]);
    let no_stdin = groups
        .iter()
        .flat_map(|g| &g.opts)
        .any(|o| o.is(&["--no-stdin"]) && o.flag());
    b.stdin = !no_stdin;
    b.tty = !no_stdin;
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

fn load(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (mut groups, at) = parse_options(args, IO_SHORT_VALUES);
    let mut has_input = false;
    for g in groups.iter_mut() {
        for k in 0..g.opts.len() {
            if g.opts[k].is(&["-i", "--input"]) {
                if let Some(value) = g.opts[k].value.clone() {
                    let guest = b.input(&value, InputKind::File, true);
                    g.set_value(k, &guest);
                    has_input = true;
                }
            }
        }
    }
    // Without -i the runtime reads the archive from stdin.
    b.stdin = !has_input;
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

/// `save -o FILE` / `export -o FILE`: the file is written in the guest and copied back.
fn save_or_export(
    b: &mut Builder<'_>,
    args: &[String],
    short_values: &[char],
) -> Result<(), PluginError> {
    let (mut groups, at) = parse_options(args, short_values);
    for g in groups.iter_mut() {
        for k in 0..g.opts.len() {
            if g.opts[k].is(&["-o", "--output"]) {
                if let Some(value) = g.opts[k].value.clone() {
                    if value == "-" {
                        continue;
                    }
                    let name = file_name_of(&value, "output.tar");
                    let guest = b.output(&value, &name, false);
                    g.set_value(k, &guest);
                }
            }
        }
    }
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

fn is_url(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

/// Commands whose first operand is a file the runtime reads: `import FILE`, `kube play FILE`,
/// `kube down FILE`.
fn file_operand_command(
    b: &mut Builder<'_>,
    args: &[String],
    short_values: &[char],
) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, short_values);
    emit_groups(b, &groups);
    let operands = &args[at..];
    match operands.split_first() {
        Some((file, rest)) => {
            if file == "-" {
                b.stdin = true;
                b.argv.push(file.clone());
            } else if is_url(file) {
                b.needs_network = true;
                b.argv.push(file.clone());
            } else {
                let guest = b.input(file, InputKind::File, true);
                b.argv.push(guest);
            }
            b.push_strings(rest);
        }
        None => b.push_strings(operands),
    }
    Ok(())
}

/// The name `import FILE` gives the image when none is given: the old tool's default (and
/// `vimport`'s), because an untagged import is only reachable by its id.
pub const DEFAULT_IMPORT_NAME: &str = "imported:latest";

fn import(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (_, at) = parse_options(args, IO_SHORT_VALUES);
    file_operand_command(b, args, IO_SHORT_VALUES)?;
    if args.len() == at + 1 {
        b.push_all(&[DEFAULT_IMPORT_NAME]);
    }
    Ok(())
}

/// docker's rule: a `cp` argument is local when it starts with `/` or `.`, or has no `:`.
fn is_container_path(arg: &str) -> bool {
    !(arg.starts_with('/') || arg.starts_with('.'))
        && arg.split_once(':').is_some_and(|(c, _)| !c.is_empty())
}

fn cp(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, &[]);
    emit_groups(b, &groups);
    let operands = &args[at..];
    let (Some(src), Some(dst)) = (operands.first(), operands.get(1)) else {
        b.push_strings(operands);
        return Ok(());
    };
    let (src_in_ctr, dst_in_ctr) = (is_container_path(src), is_container_path(dst));
    if src_in_ctr == dst_in_ctr {
        // Both local or both in containers: let the runtime report it.
        b.push_strings(operands);
        return Ok(());
    }
    if dst_in_ctr {
        if src == "-" {
            b.stdin = true;
            b.argv.push(src.clone());
        } else {
            let mut guest = b.input(src, InputKind::Path, true);
            if src.ends_with("/.") {
                guest.push_str("/.");
            }
            b.argv.push(guest);
        }
        b.argv.push(dst.clone());
    } else {
        b.argv.push(src.clone());
        if dst == "-" {
            b.argv.push(dst.clone());
        } else {
            let ctr_path = src.split_once(':').map(|(_, p)| p).unwrap_or("");
            let name = file_name_of(ctr_path, "root");
            let guest = b.output(dst, &name, true);
            b.argv.push(guest);
        }
    }
    b.push_strings(&operands[2..]);
    Ok(())
}

fn build(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (mut groups, at) = parse_options(args, BUILD_SHORT_VALUES);
    b.needs_network = true;
    for g in groups.iter_mut() {
        for k in 0..g.opts.len() {
            if g.opts[k].is(&["-f", "--file"]) {
                if let Some(value) = g.opts[k].value.clone() {
                    if value != "-" && !is_url(&value) {
                        let guest = b.input(&value, InputKind::File, true);
                        g.set_value(k, &guest);
                    }
                }
            }
        }
    }
    emit_groups(b, &groups);
    let operands = &args[at..];
    match operands.split_first() {
        Some((context, rest)) => {
            if context == "-" {
                b.stdin = true;
                b.argv.push(context.clone());
            } else if is_url(context) {
                b.argv.push(context.clone());
            } else {
                let guest = b.input(context, InputKind::Dir, true);
                b.argv.push(guest);
            }
            b.push_strings(rest);
        }
        None => b.push_strings(operands),
    }
    Ok(())
}

/// `login`: prompts for a password unless one is given; `--password-stdin` reads stdin.
fn login(b: &mut Builder<'_>, args: &[String]) -> Result<(), PluginError> {
    let (groups, at) = parse_options(args, &['u', 'p']);
    let opts: Vec<&Opt> = groups.iter().flat_map(|g| &g.opts).collect();
    let password_stdin = opts.iter().any(|o| o.is(&["--password-stdin"]));
    let password_given = opts.iter().any(|o| o.is(&["-p", "--password"]));
    b.needs_network = true;
    if password_stdin {
        b.stdin = true;
    } else if !password_given {
        b.stdin = true;
        b.tty = true;
    }
    emit_groups(b, &groups);
    b.push_strings(&args[at..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;

    const DOCKER: Dialect = Dialect {
        binary: "docker",
        remove_after_exit: false,
    };

    fn p(args: &[&str]) -> CommandPlan {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        plan(&DOCKER, &args).expect("plan")
    }

    fn argv(plan: &CommandPlan) -> Vec<String> {
        plan.argv_strings()
    }

    fn effect(args: &[&str]) -> (EffectKind, Vec<String>) {
        let e = p(args).effect;
        (e.kind, e.containers.iter().map(|c| c.to_string()).collect())
    }

    const PODMAN: Dialect = Dialect {
        binary: "podman",
        remove_after_exit: true,
    };

    /// A plan with the fresh token fixed at "t0k".
    fn planned(dialect: &Dialect, args: &[&str]) -> CommandPlan {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        plan_with(dialect, &args, &|| "t0k".to_string()).expect("plan")
    }

    fn follow_ups(plan: &CommandPlan) -> Vec<Vec<String>> {
        plan.after
            .iter()
            .map(|f| f.argv.iter().map(|a| a.to_string()).collect())
            .collect()
    }

    const CID: &str = "/tmp/vcontainer-run-t0k.cid";

    fn podman_removal() -> Vec<Vec<String>> {
        let script = r#"[ ! -e "$1" ] || podman rm --force --time 0 --volumes --ignore --cidfile "$1" && rm -f "$1""#;
        vec![["sh", "-c", script, "sh", CID].map(String::from).to_vec()]
    }

    #[test]
    fn podman_foreground_run_rm_is_removed_after_its_status() {
        let plan = planned(&PODMAN, &["run", "--rm", "bb:1", "sh", "-c", "exit 7"]);
        assert_eq!(
            argv(&plan),
            [
                "podman",
                "run",
                "--cidfile",
                CID,
                "bb:1",
                "sh",
                "-c",
                "exit 7"
            ]
        );
        assert_eq!(follow_ups(&plan), podman_removal());
        assert!(plan.after.iter().all(|f| f.effect.kind == EffectKind::None));
        assert_eq!(plan.image_ref(), Some(("bb:1", ImageUse::Run)));
        // the user's name stays; the cidfile, not the name, says which container to remove
        let plan = planned(&PODMAN, &["run", "-it", "--name", "web", "--rm", "bb:1"]);
        assert_eq!(
            argv(&plan),
            [
                "podman",
                "run",
                "--cidfile",
                CID,
                "-it",
                "--name",
                "web",
                "bb:1"
            ]
        );
        assert_eq!(plan.container_name, ROption::RSome("web".into()));
        assert_eq!(follow_ups(&plan), podman_removal());
        let plan = planned(&PODMAN, &["container", "run", "--rm=true", "bb:1"]);
        assert_eq!(
            argv(&plan),
            ["podman", "container", "run", "--cidfile", CID, "bb:1"]
        );
        assert_eq!(follow_ups(&plan), podman_removal());
    }

    #[test]
    fn podman_vrun_is_removed_after_its_status() {
        let plan = planned(&PODMAN, &["vrun", "bb:1", "true"]);
        assert_eq!(
            argv(&plan),
            [
                "podman",
                "run",
                "--cidfile",
                CID,
                "--entrypoint",
                "",
                "bb:1",
                "true"
            ]
        );
        assert_eq!(follow_ups(&plan), podman_removal());
        let plan = planned(&PODMAN, &["vrun", "--rm", "--name", "n", "bb:1"]);
        assert_eq!(
            argv(&plan),
            ["podman", "run", "--cidfile", CID, "--name", "n", "bb:1"]
        );
        assert_eq!(follow_ups(&plan), podman_removal());
    }

    #[test]
    fn runs_the_runtime_removes_itself_have_no_follow_up() {
        let cases: &[(&Dialect, &[&str], &[&str])] = &[
            // docker's daemon reports the status before removing: --rm stays
            (
                &DOCKER,
                &["run", "--rm", "bb:1", "true"],
                &["docker", "run", "--rm", "bb:1", "true"],
            ),
            (
                &DOCKER,
                &["run", "--rm", "--name", "w", "bb:1"],
                &["docker", "run", "--rm", "--name", "w", "bb:1"],
            ),
            (
                &DOCKER,
                &["vrun", "bb:1"],
                &["docker", "run", "--rm", "bb:1"],
            ),
            // detached: the runtime removes it when it exits, long after the command
            (
                &PODMAN,
                &["run", "-d", "--rm", "bb:1"],
                &["podman", "run", "-d", "--rm", "bb:1"],
            ),
            (
                &PODMAN,
                &["vrun", "-d", "bb:1"],
                &["podman", "run", "--rm", "-d", "bb:1"],
            ),
            // nothing to remove
            (&PODMAN, &["run", "bb:1"], &["podman", "run", "bb:1"]),
            (
                &PODMAN,
                &["run", "--rm=false", "bb:1"],
                &["podman", "run", "--rm=false", "bb:1"],
            ),
            (
                &PODMAN,
                &["create", "--rm", "bb:1"],
                &["podman", "create", "--rm", "bb:1"],
            ),
            // the user's own cidfile names the container: the runtime's own --rm stays
            (
                &PODMAN,
                &["run", "--rm", "--cidfile", "/c", "bb:1"],
                &["podman", "run", "--rm", "--cidfile", "/c", "bb:1"],
            ),
        ];
        for (dialect, args, want) in cases {
            let plan = planned(dialect, args);
            assert_eq!(argv(&plan), *want, "{args:?}");
            assert!(plan.after.is_empty(), "{args:?}");
        }
    }

    #[test]
    fn fresh_tokens_differ() {
        assert_ne!(fresh_token(), fresh_token());
        assert_eq!(fresh_token().len(), 16);
    }

    #[test]
    fn container_effects_name_their_containers() {
        assert_eq!(effect(&["ps", "-a"]).0, EffectKind::List);
        assert_eq!(effect(&["ps", "-q"]).0, EffectKind::None);
        assert_eq!(effect(&["ps", "-aq"]).0, EffectKind::None);
        assert_eq!(effect(&["ps", "--quiet"]).0, EffectKind::None);
        assert_eq!(effect(&["container", "ls"]).0, EffectKind::List);
        assert_eq!(
            effect(&["rm", "-f", "web"]),
            (EffectKind::Remove, vec!["web".into()])
        );
        assert_eq!(
            effect(&["stop", "-t", "5", "web", "--time=3", "abc"]),
            (EffectKind::Stop, vec!["web".into(), "abc".into()])
        );
        assert_eq!(effect(&["container", "kill", "x"]).0, EffectKind::Stop);
        assert_eq!(effect(&["images"]).0, EffectKind::None);
        assert_eq!(
            effect(&["start", "web", "db"]),
            (EffectKind::Start, vec!["web".into(), "db".into()])
        );
        assert_eq!(
            effect(&["container", "restart", "-t", "1", "web"]),
            (EffectKind::Restart, vec!["web".into()])
        );
        for attached in ["-a", "-ai", "--attach", "-i", "--interactive"] {
            assert_eq!(
                effect(&["start", attached, "web"]),
                (EffectKind::AttachedStart, vec!["web".into()]),
                "{attached}"
            );
        }
    }

    #[test]
    fn offline_goes_before_the_image_or_the_build_context() {
        let run = p(&["run", "--rm", "bb:1", "true"]);
        let at = run.offline.as_ref().into_option().expect("container");
        assert_eq!(run.argv[at.index as usize].as_str(), "bb:1");
        assert_eq!(at.args.len(), 2);
        let named = p(&["run", "--network=host", "bb:1"]);
        assert!(named
            .offline
            .as_ref()
            .into_option()
            .expect("container")
            .args
            .is_empty());
        let build = p(&["build", "-t", "x", "."]);
        let at = build.offline.as_ref().into_option().expect("build");
        assert_eq!(at.index as usize, build.argv.len() - 1);
        assert!(p(&["pull", "bb:1"]).offline.is_none());
        assert!(p(&["images"]).offline.is_none());
    }

    #[test]
    fn plain_commands_pass_through() {
        let plan = p(&["images", "-a"]);
        assert_eq!(argv(&plan), ["docker", "images", "-a"]);
        assert_eq!(plan.class, CommandClass::PassThrough);
        assert!(!plan.needs_network);
    }

    #[test]
    fn empty_command_is_usage_error() {
        let err = plan(&DOCKER, &[]).unwrap_err();
        assert_eq!(err.kind, vcontainer_abi::PluginErrorKind::Usage);
    }

    #[test]
    fn run_volume_is_rewritten_and_kept_relative() {
        let plan = p(&["run", "--rm", "-v", "./src:/src", "alpine", "ls"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "--rm",
                "-v",
                "/tmp/vcontainer-io/vol0:/src",
                "alpine",
                "ls"
            ]
        );
        assert_eq!(plan.class, CommandClass::FileIn);
        assert_eq!(plan.inputs.len(), 1);
        assert_eq!(plan.inputs[0].host_path.as_str(), "./src");
        assert_eq!(plan.inputs[0].kind, InputKind::Volume);
        assert!(!plan.inputs[0].read_only);
        assert!(plan.needs_network);
    }

    #[test]
    fn volume_options_and_forms() {
        let plan = p(&[
            "run",
            "--volume=/etc/hosts:/h:ro,z",
            "-vnamed:/data",
            "-v",
            "/anon",
            "img",
        ]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "--volume=/tmp/vcontainer-io/vol0:/h:ro,z",
                "-vnamed:/data",
                "-v",
                "/anon",
                "img"
            ]
        );
        assert_eq!(plan.inputs.len(), 1);
        assert!(plan.inputs[0].read_only);
    }

    #[test]
    fn mount_bind_is_rewritten() {
        let plan = p(&[
            "run",
            "--mount",
            "type=bind,source=./d,target=/d,readonly",
            "img",
        ]);
        assert_eq!(
            argv(&plan)[3],
            "type=bind,source=/tmp/vcontainer-io/vol0,target=/d,readonly"
        );
        assert!(plan.inputs[0].read_only);
        let plan = p(&["run", "--mount", "type=volume,src=v,dst=/d", "img"]);
        assert!(plan.inputs.is_empty());
    }

    #[test]
    fn tty_flags_only_in_option_area() {
        let plan = p(&["run", "alpine", "ls", "-it", "--tty"]);
        assert!(!plan.tty && !plan.stdin);
        assert_eq!(plan.class, CommandClass::PassThrough);
        for flags in [
            &["-it"][..],
            &["-ti"],
            &["-i", "-t"],
            &["--interactive", "--tty"],
            &["-dit"],
        ] {
            let mut args = vec!["run"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["alpine", "sh"]);
            let plan = p(&args);
            assert!(plan.tty && plan.stdin, "{flags:?}");
            assert_eq!(plan.class, CommandClass::Interactive);
        }
        let plan = p(&["run", "-i", "alpine", "cat"]);
        assert!(plan.stdin && !plan.tty);
        let plan = p(&["run", "--tty=false", "alpine"]);
        assert!(!plan.tty);
    }

    #[test]
    fn help_after_image_goes_to_the_container() {
        let plan = p(&["run", "alpine", "ls", "--help"]);
        assert_eq!(argv(&plan), ["docker", "run", "alpine", "ls", "--help"]);
    }

    #[test]
    fn value_options_do_not_end_the_option_area() {
        let plan = p(&[
            "run", "-e", "A=1", "--name", "web", "-w", "/x", "-it", "img", "sh",
        ]);
        assert!(plan.tty && plan.stdin);
        assert_eq!(
            plan.container_name.as_ref().map(|s| s.as_str()),
            ROption::RSome("web")
        );
        let plan = p(&["run", "--name=db", "--", "img", "-t"]);
        assert_eq!(
            plan.container_name.as_ref().map(|s| s.as_str()),
            ROption::RSome("db")
        );
        assert!(!plan.tty);
        assert_eq!(
            argv(&plan),
            ["docker", "run", "--name=db", "--", "img", "-t"]
        );
    }

    #[test]
    fn ports_detach_and_name() {
        let plan = p(&[
            "run",
            "-d",
            "-p",
            "8080:80",
            "--publish=127.0.0.1:53:53/udp",
            "-p80",
            "-p",
            "9000-9001:9000-9001",
            "nginx",
        ]);
        assert!(plan.detach);
        assert_eq!(plan.ports.len(), 4);
        let p0 = &plan.ports[0];
        assert_eq!(
            p0.host_ports,
            ROption::RSome(PortRange {
                start: 8080,
                end: 8080
            })
        );
        assert_eq!(p0.container_ports, PortRange { start: 80, end: 80 });
        assert_eq!(p0.protocol, PortProtocol::Tcp);
        let p1 = &plan.ports[1];
        assert_eq!(p1.host_ip.as_str(), "127.0.0.1");
        assert_eq!(p1.protocol, PortProtocol::Udp);
        assert_eq!(plan.ports[2].host_ports, ROption::RNone);
        assert_eq!(
            plan.ports[3].container_ports,
            PortRange {
                start: 9000,
                end: 9001
            }
        );
    }

    #[test]
    fn a_host_address_stays_on_the_host_side() {
        let plan = p(&[
            "run",
            "-p",
            "127.0.0.1:8080:80",
            "--publish=10.1.2.3:53:53/udp",
            "-p127.0.0.1:9000-9001:9000-9001",
            "-p",
            "0.0.0.0:8081:81",
            "-p",
            "127.0.0.1::82",
            "-p",
            "[::1]:8083:83",
            "-p",
            "8084:84",
            "img",
        ]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "-p",
                "8080:80",
                "--publish=53:53/udp",
                "-p9000-9001:9000-9001",
                "-p",
                "0.0.0.0:8081:81",
                "-p",
                "127.0.0.1::82",
                "-p",
                "[::1]:8083:83",
                "-p",
                "8084:84",
                "img"
            ]
        );
        // the host side still knows the address to listen on
        let ips: Vec<&str> = plan.ports.iter().map(|m| m.host_ip.as_str()).collect();
        assert_eq!(
            ips,
            [
                "127.0.0.1",
                "10.1.2.3",
                "127.0.0.1",
                "0.0.0.0",
                "127.0.0.1",
                "::1",
                ""
            ]
        );
        let created = p(&["create", "--publish", "127.0.0.1:8080:80", "img"]);
        assert_eq!(argv(&created)[2..4], ["--publish", "8080:80"]);
    }

    #[test]
    fn bad_port_is_usage_error() {
        for spec in ["abc", "80:80/xyz", "0:80", "1:2:3:4", "70000"] {
            assert!(parse_port(spec).is_err(), "{spec}");
        }
        let m = parse_port("[::1]:8080:80").unwrap();
        assert_eq!(m.host_ip.as_str(), "::1");
    }

    #[test]
    fn env_file_is_an_input() {
        let plan = p(&["run", "--env-file", "app.env", "img"]);
        assert_eq!(argv(&plan)[3], "/tmp/vcontainer-io/in0/app.env");
        assert_eq!(plan.inputs[0].kind, InputKind::File);
    }

    #[test]
    fn vrun_clears_entrypoint_only_with_a_command() {
        let plan = p(&["vrun", "alpine", "ls", "-l"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "",
                "alpine",
                "ls",
                "-l"
            ]
        );
        let plan = p(&["vrun", "alpine"]);
        assert_eq!(argv(&plan), ["docker", "run", "--rm", "alpine"]);
        let plan = p(&["vrun", "--entrypoint", "/bin/sh", "alpine", "-c", "id"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "/bin/sh",
                "alpine",
                "-c",
                "id"
            ]
        );
    }

    #[test]
    fn vrun_options() {
        let plan = p(&["vrun", "-it", "--no-network", "-v", "/d:/d", "alpine", "sh"]);
        assert!(plan.tty && plan.stdin && !plan.needs_network);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "run",
                "--rm",
                "-it",
                "--network",
                "none",
                "-v",
                "/tmp/vcontainer-io/vol0:/d",
                "--entrypoint",
                "",
                "alpine",
                "sh"
            ]
        );
        let err = plan_err(&["vrun", "-it"]);
        assert_eq!(err.kind, vcontainer_abi::PluginErrorKind::Usage);
    }

    fn plan_err(args: &[&str]) -> PluginError {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        plan(&DOCKER, &args).unwrap_err()
    }

    #[test]
    fn exec_interactive() {
        let plan = p(&["exec", "-it", "c1", "sh"]);
        assert!(plan.tty && plan.stdin);
        let plan = p(&["exec", "-e", "X=1", "c1", "ls", "-t"]);
        assert!(!plan.tty);
        let plan = p(&["container", "exec", "-ti", "c1", "sh"]);
        assert!(plan.tty && plan.stdin);
        assert_eq!(
            argv(&plan),
            ["docker", "container", "exec", "-ti", "c1", "sh"]
        );
    }

    #[test]
    fn load_input_and_stdin() {
        let plan = p(&["load", "-i", "../img.tar"]);
        assert_eq!(
            argv(&plan),
            ["docker", "load", "-i", "/tmp/vcontainer-io/in0/img.tar"]
        );
        assert_eq!(plan.class, CommandClass::FileIn);
        assert_eq!(plan.inputs[0].host_path.as_str(), "../img.tar");
        let plan = p(&["image", "load", "--input=x.tar"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "image",
                "load",
                "--input=/tmp/vcontainer-io/in0/x.tar"
            ]
        );
        let plan = p(&["load"]);
        assert!(plan.stdin);
        assert_eq!(plan.class, CommandClass::Interactive);
    }

    #[test]
    fn save_output() {
        let plan = p(&["save", "-o", "out/alpine.tar", "alpine"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "save",
                "-o",
                "/tmp/vcontainer-io/out0/alpine.tar",
                "alpine"
            ]
        );
        assert_eq!(plan.class, CommandClass::FileOut);
        assert_eq!(plan.outputs[0].host_path.as_str(), "out/alpine.tar");
        assert!(!plan.outputs[0].into_existing_dir);
        let plan = p(&["save", "alpine"]);
        assert_eq!(plan.class, CommandClass::PassThrough);
    }

    #[test]
    fn import_file_url_stdin() {
        let plan = p(&["import", "rootfs.tar", "me/img:1"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "import",
                "/tmp/vcontainer-io/in0/rootfs.tar",
                "me/img:1"
            ]
        );
        let plan = p(&["import", "https://x/y.tar"]);
        assert!(plan.needs_network && plan.inputs.is_empty());
        let plan = p(&["import", "-", "x"]);
        assert!(plan.stdin);
        assert_eq!(argv(&plan), ["docker", "import", "-", "x"]);
    }

    #[test]
    fn prune_reads_the_answer_unless_forced() {
        for cmd in [
            &["system", "prune"][..],
            &["image", "prune", "-a"][..],
            &["container", "prune"][..],
            &["volume", "prune", "--filter", "label=x"][..],
            &["network", "prune"][..],
        ] {
            let plan = p(cmd);
            assert!(plan.stdin && !plan.tty, "{cmd:?}");
            assert_eq!(plan.class, CommandClass::Interactive, "{cmd:?}");
            assert_eq!(argv(&plan)[1..], cmd[..], "{cmd:?}");
        }
        for cmd in [
            &["system", "prune", "-f"][..],
            &["system", "prune", "-af"][..],
            &["image", "prune", "--force"][..],
            &["volume", "prune", "--force=true"][..],
        ] {
            let plan = p(cmd);
            assert!(!plan.stdin, "{cmd:?}");
            assert_eq!(plan.class, CommandClass::PassThrough, "{cmd:?}");
        }
        // other system/volume subcommands are untouched
        assert_eq!(p(&["system", "df"]).class, CommandClass::PassThrough);
        assert_eq!(
            argv(&p(&["volume", "create", "v"])),
            ["docker", "volume", "create", "v"]
        );
    }

    #[test]
    fn import_without_a_name_is_imported_latest() {
        let plan = p(&["import", "--change", "ENV A=1", "rootfs.tar"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "import",
                "--change",
                "ENV A=1",
                "/tmp/vcontainer-io/in0/rootfs.tar",
                "imported:latest"
            ]
        );
        let plan = p(&["image", "import", "-"]);
        assert_eq!(
            argv(&plan),
            ["docker", "image", "import", "-", "imported:latest"]
        );
        // no file at all: the runtime's own usage error
        assert_eq!(argv(&p(&["import"])), ["docker", "import"]);
    }

    #[test]
    fn cp_both_directions() {
        let plan = p(&["cp", "./conf/", "c1:/etc/app"]);
        assert_eq!(
            argv(&plan),
            ["docker", "cp", "/tmp/vcontainer-io/in0/conf", "c1:/etc/app"]
        );
        assert_eq!(plan.inputs[0].kind, InputKind::Path);
        let plan = p(&["cp", "c1:/var/log/app.log", "."]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "cp",
                "c1:/var/log/app.log",
                "/tmp/vcontainer-io/out0/app.log"
            ]
        );
        assert!(plan.outputs[0].into_existing_dir);
        assert_eq!(plan.outputs[0].host_path.as_str(), ".");
        let plan = p(&["cp", "a", "b"]);
        assert_eq!(plan.class, CommandClass::PassThrough);
    }

    #[test]
    fn build_context_and_dockerfile() {
        let plan = p(&["build", "-t", "me/app", "-f", "docker/Dockerfile", "."]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "build",
                "-t",
                "me/app",
                "-f",
                "/tmp/vcontainer-io/in0/Dockerfile",
                "/tmp/vcontainer-io/in1"
            ]
        );
        assert_eq!(plan.inputs[1].kind, InputKind::Dir);
        assert_eq!(plan.inputs[1].host_path.as_str(), ".");
        assert!(plan.needs_network);
    }

    #[test]
    fn login_needs_terminal_unless_password_given() {
        let plan = p(&["login", "reg.example"]);
        assert!(plan.tty && plan.stdin && plan.needs_network);
        let plan = p(&["login", "-u", "me", "--password-stdin", "reg"]);
        assert!(plan.stdin && !plan.tty);
        let plan = p(&["login", "-u", "me", "-p", "pw", "reg"]);
        assert!(!plan.stdin && !plan.tty);
    }

    #[test]
    fn network_commands() {
        for c in [
            &["pull", "alpine"][..],
            &["push", "x"],
            &["image", "pull", "a"],
        ] {
            assert!(p(c).needs_network, "{c:?}");
        }
    }

    #[test]
    fn the_image_operand_is_located() {
        let image = |args: &[&str]| {
            let plan = p(args);
            plan.image_ref().map(|(i, u)| (i.to_string(), u))
        };
        let run = |s: &str| Some((s.to_string(), ImageUse::Run));
        assert_eq!(
            image(&["run", "--rm", "-e", "A=1", "bb:1", "ls"]),
            run("bb:1")
        );
        assert_eq!(image(&["create", "--name", "x", "bb"]), run("bb"));
        assert_eq!(image(&["container", "run", "-it", "bb", "sh"]), run("bb"));
        assert_eq!(
            image(&["vrun", "-v", "/d:/d", "bb", "echo", "hi"]),
            run("bb")
        );
        assert_eq!(image(&["run", "--", "bb", "-t"]), run("bb"));
        assert_eq!(
            image(&["pull", "--platform", "linux/amd64", "-q", "bb:1"]),
            Some(("bb:1".into(), ImageUse::Pull))
        );
        assert_eq!(
            image(&["image", "pull", "--all-tags", "bb"]),
            Some(("bb".into(), ImageUse::Pull))
        );
        assert_eq!(
            image(&["push", "r:5000/bb:1", "dest"]),
            Some(("r:5000/bb:1".into(), ImageUse::Push))
        );
        assert_eq!(image(&["images"]), None);
        assert_eq!(image(&["run", "--rm"]), None);
        assert_eq!(image(&["exec", "c1", "ls"]), None);
    }

    #[test]
    fn kube_play_file() {
        let plan = p(&["kube", "play", "pod.yaml"]);
        assert_eq!(
            argv(&plan),
            ["docker", "kube", "play", "/tmp/vcontainer-io/in0/pod.yaml"]
        );
        // `kube down` reads the same file; other kube subcommands pass through
        let plan = p(&["kube", "down", "--force", "pod.yaml"]);
        assert_eq!(
            argv(&plan),
            [
                "docker",
                "kube",
                "down",
                "--force",
                "/tmp/vcontainer-io/in0/pod.yaml"
            ]
        );
        assert_eq!(
            argv(&p(&["kube", "generate", "p1"])),
            ["docker", "kube", "generate", "p1"]
        );
    }

    #[test]
    fn start_and_attach() {
        let plan = p(&["start", "-ai", "c1"]);
        assert!(plan.stdin);
        let plan = p(&["start", "c1"]);
        assert!(!plan.stdin);
        let plan = p(&["attach", "--no-stdin", "c1"]);
        assert!(!plan.stdin);
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name_of("a/b/", "x"), "b");
        assert_eq!(file_name_of("a/b/.", "x"), "b");
        assert_eq!(file_name_of("..", "x"), "x");
        assert_eq!(file_name_of("/", "x"), "x");
    }

    #[test]
    fn group_commands_without_a_subcommand_are_refused() {
        for group in ["system", "image", "network", "container", "volume", "pod"] {
            let e = plan(&DOCKER, &[group.to_string()]).expect_err(group);
            assert!(
                e.to_string().contains("requires a subcommand"),
                "{group}: {e}"
            );
        }
        // with one (or --help, which the runtime answers) they are planned as before
        assert!(plan(&DOCKER, &["system".to_string(), "df".to_string()]).is_ok());
        assert!(plan(&DOCKER, &["image".to_string(), "--help".to_string()]).is_ok());
        assert!(plan(&DOCKER, &["images".to_string()]).is_ok());
    }
}
