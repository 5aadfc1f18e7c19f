//! Registry options for both runtimes: `--registry R` (default registry for unqualified
//! image names, falling back to docker.io), `--insecure-registry H[:P]` (repeatable) and
//! `--config auth.json` (credentials for one command).
//!
//! Like vimport, this only plans: [`guest_setup`] returns the files to push into the guest,
//! the argv to run before the user's command and the environment for it. The runner applies
//! the setup before *every* command, so a changed option takes effect at the next command
//! without restarting a memres VM:
//! - podman reads `/etc/containers/registries.conf.d/*.conf` on each invocation; the
//!   drop-in is always rewritten (an empty one when no option is given, which removes
//!   earlier settings);
//! - dockerd reloads `insecure-registries` from daemon.json on SIGHUP; the new daemon.json
//!   is the runtime's baked one plus the list, installed and signalled only when it
//!   changed, and the script waits until `docker info` shows the new list;
//! - the default registry is applied by qualifying names ([`qualify_pull`]) for docker,
//!   and by `unqualified-search-registries` for podman when it has no namespace;
//! - the auth file goes to a per-command guest directory, named by `DOCKER_CONFIG` /
//!   `REGISTRY_AUTH_FILE` in the command's environment, never on a command line, and is
//!   removed afterwards ([`GuestSetup::cleanup`]).

pub mod auth;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub use auth::{AuthConfigError, AuthFile};

use crate::vimport::payload::{Payload, PayloadEntry};

/// Docker Hub, the fallback for unqualified names.
pub const DOCKER_HUB: &str = "docker.io";

/// Guest directory for files that are installed by a setup command (docker's daemon.json).
pub const GUEST_STAGING_DIR: &str = "/run/vcontainer/registry";

/// Guest directory holding per-command auth dirs.
pub const GUEST_AUTH_ROOT: &str = "/run/vcontainer/auth";

/// podman's drop-in directory and our file in it.
pub const PODMAN_DROPIN_DIR: &str = "/etc/containers/registries.conf.d";
pub const PODMAN_DROPIN_NAME: &str = "50-vcontainer.conf";

/// docker's config file (baked by the runtime plugin, re-written with registry settings).
pub const DOCKER_DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{option} '{value}': {reason}")]
    BadValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("the runtime's baked {DOCKER_DAEMON_JSON} is not a JSON object: {0}")]
    BaseDaemonJson(String),
}

/// The registry options of one command, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `host[:port][/namespace]`, without scheme.
    pub default_registry: Option<String>,
    /// `host[:port]` reached over plain HTTP / without TLS verification.
    pub insecure: Vec<String>,
    /// The default registry is in a private range and `--secure-registry` was not given:
    /// treat it as insecure too (the old vdkr guest did this).
    pub auto_insecure_default: bool,
    pub auth: Option<AuthFile>,
}

fn bad(option: &'static str, value: &str, reason: &str) -> RegistryError {
    RegistryError::BadValue {
        option,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks a `host[:port]`.
fn validate_host(option: &'static str, value: &str) -> Result<(), RegistryError> {
    if value.is_empty() {
        return Err(bad(option, value, "empty"));
    }
    if value.contains("://") {
        return Err(bad(option, value, "give host[:port] without a scheme"));
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (value, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['-', '.']);
    if !host_ok {
        return Err(bad(option, value, "invalid host name"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(option, value, "port must be 1-65535"));
        }
    }
    Ok(())
}

/// Whether `host[:port]` is loopback or in a private range (the old guest's rule for
/// treating the default registry as insecure).
pub fn is_private_host(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    if host == "localhost" {
        return true;
    }
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => ip.is_loopback() || ip.is_private(),
        Err(_) => false,
    }
}

impl RegistryOptions {
    /// Validates the options (and reads the auth file) of one command.
    pub fn new(
        default_registry: Option<&str>,
        insecure: &[String],
        secure_registry: bool,
        auth_config: Option<&std::path::Path>,
    ) -> Result<Self, RegistryError> {
        let default_registry = match default_registry.map(str::trim).filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => {
                if r.contains("://") {
                    return Err(bad(
                        "--registry",
                        r,
                        "give host[:port][/namespace] without a scheme",
                    ));
                }
                let r = r.trim_end_matches('/');
                let (host, namespace) = r.split_once('/').unwrap_or((r, ""));
                validate_host("--registry", host)?;
                let ns_ok = namespace.split('/').all(|c| {
                    namespace.is_empty()
                        || (!c.is_empty()
                            && c.bytes().all(|b| {
                                b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                            }))
                });
                if !ns_ok {
                    return Err(bad(
                        "--registry",
                        r,
                        "namespace must be lower-case path components",
                    ));
                }
                Some(r.to_string())
            }
        };
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for h in insecure {
            validate_host("--insecure-registry", h)?;
            if seen.insert(h.clone()) {
                list.push(h.clone());
            }
        }
        let auto_insecure_default = !secure_registry
            && default_registry
                .as_deref()
                .is_some_and(|r| is_private_host(r.split('/').next().unwrap_or(r)));
        let auth = auth_config.map(auth::load).transpose()?;
        Ok(RegistryOptions {
            default_registry,
            insecure: list,
            auto_insecure_default,
            auth,
        })
    }

    /// The registry host of `--registry` (without namespace).
    pub fn default_host(&self) -> Option<&str> {
        self.default_registry
            .as_deref()
            .map(|r| r.split('/').next().unwrap_or(r))
    }

    /// Every host to treat as insecure, in a stable order.
    pub fn insecure_hosts(&self) -> Vec<String> {
        let mut hosts = self.insecure.clone();
        if self.auto_insecure_default {
            if let Some(h) = self.default_host() {
                if !hosts.iter().any(|x| x == h) {
                    hosts.push(h.to_string());
                }
            }
        }
        hosts
    }
}

/// What the runner does in the guest for one command's registry options.
#[derive(Debug, Default)]
pub struct GuestSetup {
    /// Tar streams to push (guest directory, payload), in order.
    pub pushes: Vec<(String, Payload)>,
    /// argv to run after the pushes and after the runtime's services are up, before the
    /// user's command; a non-zero exit fails the command (exit 125).
    pub commands: Vec<Vec<String>>,
    /// Extra environment for the user's command.
    pub env: Vec<(String, String)>,
    /// Guest paths to remove after the command (the auth copy), whatever its outcome.
    pub cleanup: Vec<String>,
    /// Lines for stderr (warnings about the auth file).
    pub notices: Vec<String>,
    /// The options this setup was made from (for [`qualify_pull`]).
    pub options: RegistryOptions,
}

/// The podman drop-in for these options (always written; empty settings reset old ones).
pub fn podman_dropin(opts: &RegistryOptions) -> String {
    let mut out = String::from(
        "# Written by vpdmn before each command from --registry/--insecure-registry; do not edit.\n",
    );
    if let Some(r) = &opts.default_registry {
        if !r.contains('/') {
            out.push_str(&format!(
                "unqualified-search-registries = [\"{r}\", \"{DOCKER_HUB}\"]\n"
            ));
        }
    }
    for h in opts.insecure_hosts() {
        out.push_str(&format!(
            "\n[[registry]]\nlocation = \"{h}\"\ninsecure = true\n"
        ));
    }
    out
}

/// docker's daemon.json: the runtime's baked settings plus `insecure-registries`.
pub fn docker_daemon_json(
    base: Option<&str>,
    opts: &RegistryOptions,
) -> Result<String, RegistryError> {
    let mut obj = match base {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(RegistryError::BaseDaemonJson("not an object".into())),
            Err(e) => return Err(RegistryError::BaseDaemonJson(e.to_string())),
        },
        None => serde_json::Map::new(),
    };
    obj.insert(
        "insecure-registries".into(),
        serde_json::Value::Array(
            opts.insecure_hosts()
                .into_iter()
                .map(serde_json::Value::String)
                .collect(),
        ),
    );
    let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(obj))
        .map_err(|e| RegistryError::BaseDaemonJson(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Installs a staged daemon.json when it differs, reloads dockerd (SIGHUP re-reads
/// insecure-registries) and waits until `docker info` lists every insecure host. Fixed
/// text; the values arrive as positional parameters, never spliced into the script.
const DOCKER_RELOAD_SCRIPT: &str = r#"new="$1"; shift
cmp -s "$new" /etc/docker/daemon.json && exit 0
cp "$new" /etc/docker/daemon.json || exit 1
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

/// The guest setup for `runtime_binary` ("docker"/"podman"). `base_daemon_json` is the
/// docker plugin's baked daemon.json (from its spec's guest files); `run_id` makes the
/// auth dir unique per command.
pub fn guest_setup(
    runtime_binary: &str,
    base_daemon_json: Option<&str>,
    opts: &RegistryOptions,
    run_id: &str,
) -> Result<GuestSetup, RegistryError> {
    let mut setup = GuestSetup {
        options: opts.clone(),
        ..GuestSetup::default()
    };
    match runtime_binary {
        "docker" => {
            let json = docker_daemon_json(base_daemon_json, opts)?;
            setup.pushes.push((
                GUEST_STAGING_DIR.to_string(),
                Payload::new(vec![PayloadEntry::bytes("daemon.json", json.into_bytes())]),
            ));
            let mut argv = vec![
                "sh".to_string(),
                "-c".to_string(),
                DOCKER_RELOAD_SCRIPT.to_string(),
                "sh".to_string(),
                format!("{GUEST_STAGING_DIR}/daemon.json"),
            ];
            argv.extend(opts.insecure_hosts());
            setup.commands.push(argv);
        }
        _ => {
            setup.pushes.push((
                PODMAN_DROPIN_DIR.to_string(),
                Payload::new(vec![PayloadEntry::bytes(
                    PODMAN_DROPIN_NAME,
                    podman_dropin(opts).into_bytes(),
                )]),
            ));
        }
    }
    if let Some(auth) = &opts.auth {
        let dir = format!("{GUEST_AUTH_ROOT}/{run_id}");
        setup.notices.extend(auth.warnings.iter().cloned());
        let (file, var, value) = match runtime_binary {
            "docker" => ("config.json", "DOCKER_CONFIG", dir.clone()),
            _ => (
                "auth.json",
                "REGISTRY_AUTH_FILE",
                format!("{dir}/auth.json"),
            ),
        };
        setup.pushes.push((
            dir.clone(),
            Payload::new(vec![PayloadEntry::private_bytes(
                file,
                auth.contents.clone(),
            )]),
        ));
        setup.env.push((var.to_string(), value));
        setup.cleanup.push(dir);
    }
    Ok(setup)
}

/// The registry options of a runtime command, checked before any VM work (a bad
/// `--config` file fails here with exit 125 and the VM untouched).
pub fn options_for(
    ctx: &crate::dispatch::RuntimeContext,
) -> Result<RegistryOptions, RegistryError> {
    RegistryOptions::new(
        ctx.settings.registry.as_deref(),
        &ctx.options.insecure_registries,
        ctx.options.secure_registry,
        ctx.settings.auth_config.as_deref(),
    )
}

/// The daemon.json the runtime plugin bakes into the guest, if it has one.
pub fn base_daemon_json(spec: &vcontainer_abi::runtime::RuntimeSpec) -> Option<String> {
    spec.guest_files
        .iter()
        .find(|f| f.path.as_str() == DOCKER_DAEMON_JSON)
        .map(|f| f.contents.to_string())
}

/// Applies a setup in the guest (after the runtime's services are up) and returns the
/// environment the user's command must get. Call [`remove_auth`] after the command.
pub fn apply(
    setup: &GuestSetup,
    guest: &mut dyn crate::vimport::execute::Guest,
) -> anyhow::Result<Vec<(String, String)>> {
    for line in &setup.notices {
        guest.notice(line);
    }
    for (dir, payload) in &setup.pushes {
        guest.push_tar(dir, &mut payload.reader())?;
    }
    for argv in &setup.commands {
        let code = guest.run(argv, &[])?;
        if code != 0 {
            anyhow::bail!("applying the registry settings in the guest failed (exit {code})");
        }
    }
    Ok(setup.env.clone())
}

/// Removes the per-command auth copy (whatever the command's outcome).
pub fn remove_auth(setup: &GuestSetup, guest: &mut dyn crate::vimport::execute::Guest) {
    for path in &setup.cleanup {
        guest.remove(path);
    }
}

/// True when an image reference names its registry (`host.tld/…`, `host:port/…`,
/// `localhost/…`).
pub fn is_qualified(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// `--registry` for a `pull`: the argv lists to try in order. The first pulls
/// `<registry>/<image>` and tags it as `<image>` (so later `run <image>` finds it); the
/// second, tried when the first fails, is the original pull from Docker Hub. None when the
/// command is not a plain pull of an unqualified image or no default registry applies.
pub fn qualify_pull(argv: &[String], opts: &RegistryOptions) -> Option<Vec<Vec<Vec<String>>>> {
    let registry = opts.default_registry.as_deref()?;
    let (runtime, rest) = argv.split_first()?;
    if runtime == "podman" && !registry.contains('/') {
        return None; // unqualified-search-registries in the drop-in does it
    }
    let pos = rest.iter().position(|a| a == "pull")?;
    if pos != 0 {
        return None;
    }
    let image = argv.last()?;
    if argv.len() < 3 || image.starts_with('-') || is_qualified(image) {
        return None;
    }
    let qualified = format!("{registry}/{image}");
    let mut first = argv.to_vec();
    if let Some(last) = first.last_mut() {
        *last = qualified.clone();
    }
    let tag = vec![runtime.clone(), "tag".into(), qualified, image.clone()];
    Some(vec![vec![first, tag], vec![argv.to_vec()]])
}

#[cfg(test)]
mod tests;
