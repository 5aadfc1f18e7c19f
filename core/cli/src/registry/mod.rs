//! Registry options for every runtime: `--registry R` (default registry for unqualified
//! image names, falling back to the runtime's hub, docker.io for docker and podman), `--insecure-registry H[:P]` (repeatable),
//! `--secure-registry`, `--ca-cert FILE`, `--registry-user`/`--registry-password` and
//! `--config auth.json` (credentials for one command).
//!
//! Like vimport, this only plans: [`guest_setup`] returns the guest configuration the
//! options ask for, the per-command auth file and the environment for the command. The
//! runner applies it before every network command, so a changed option takes effect at the
//! next command without restarting a memres VM:
//! - where the runtime reads its settings comes from its plugin ([`vcontainer_abi::runtime::RegistrySetup`]): a
//!   registries.conf drop-in (podman), a daemon.json and the script that makes the daemon
//!   apply it (docker), a certs.d dir, the credentials variable; the core writes those
//!   formats and never asks which runtime it is;
//! - the configuration ([`GuestConfig`]: the drop-in, the daemon.json,
//!   the CA certificates under `certs.d/<registry>/ca.crt`) has a fingerprint; the runner
//!   installs it only when it differs from what the VM already has, each file written to a
//!   temp name and renamed, so a crash never leaves half a file;
//! - the default registry is applied to every command that names an image (pull, run,
//!   create, vrun; see [`default_registry_plan`]): `R/<image>` is pulled and tagged as
//!   `<image>`, with the hub as the fallback; a runtime with a registries.conf drop-in
//!   searches `unqualified-search-registries = [R, hub]` itself when R has no namespace;
//! - credentials (`--config`, or `--registry-user`/`--registry-password` turned into an auth
//!   entry for the registry) go to a per-command guest file named by the runtime's variable
//!   (`DOCKER_CONFIG`, `REGISTRY_AUTH_FILE`) in the command's environment, never on a command
//!   line, and are removed afterwards ([`GuestSetup::cleanup`]).

pub mod auth;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub use auth::{AuthConfigError, AuthFile, Credentials};

use vcontainer_abi::runtime::RuntimeSpec;

use crate::vimport::payload::{Payload, PayloadEntry};

/// Guest directory holding staged configuration (one subdir per fingerprint) before it is
/// installed.
pub const GUEST_STAGING_DIR: &str = "/run/vcontainer/registry";

/// A CA certificate file larger than this is refused (a bundle is a few KiB).
pub const MAX_CA_CERT_BYTES: u64 = 1024 * 1024;

/// Guest directory holding per-command auth dirs.
pub const GUEST_AUTH_ROOT: &str = "/run/vcontainer/auth";

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
    #[error("the runtime's baked daemon configuration is not a JSON object: {0}")]
    BaseDaemonJson(String),
    #[error("--ca-cert {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("{0} applies to one registry: give --registry REGISTRY, or name the registry in the image (REGISTRY/NAME)")]
    NoRegistryFor(&'static str),
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
    /// `--ca-cert`: PEM text trusted for the default registry (or the command's registry).
    pub ca_cert: Option<Vec<u8>>,
    /// `--registry-user` + `--registry-password`.
    pub credentials: Option<Credentials>,
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
            ca_cert: None,
            credentials: None,
        })
    }

    /// Adds `--ca-cert FILE`: read now (a PEM certificate), so a bad file fails before any
    /// VM work. A CA certificate means TLS is wanted: the default registry is then not
    /// treated as insecure.
    pub fn with_ca_cert(mut self, path: &std::path::Path) -> Result<Self, RegistryError> {
        let fail = |reason: String| RegistryError::CaCert {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("file not found".into()),
            _ => fail(e.to_string()),
        })?;
        if !meta.is_file() {
            return Err(fail("must be a regular file".into()));
        }
        if meta.len() > MAX_CA_CERT_BYTES {
            return Err(fail(format!("file is too large ({} bytes)", meta.len())));
        }
        let pem = std::fs::read(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(fail(
                "not a PEM certificate (no -----BEGIN CERTIFICATE----- line)".into(),
            ));
        }
        self.ca_cert = Some(pem);
        self.auto_insecure_default = false;
        Ok(self)
    }

    /// Adds `--registry-user` / `--registry-password` (both or neither).
    pub fn with_credentials(
        mut self,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, RegistryError> {
        self.credentials = match (user, password) {
            (None, None) => None,
            (Some(u), Some(p)) if !u.is_empty() && !u.contains(':') => Some(Credentials {
                user: u.to_string(),
                password: p.to_string(),
            }),
            (Some(u), Some(_)) => {
                return Err(bad(
                    "--registry-user",
                    u,
                    "must be non-empty and without ':'",
                ))
            }
            (Some(u), None) => {
                return Err(bad("--registry-user", u, "needs --registry-password too"))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "--registry-password",
                    "***",
                    "needs --registry-user too",
                ))
            }
        };
        Ok(self)
    }

    /// The registry `--ca-cert` and the credentials are for: the default registry's host,
    /// else the registry the command's image names.
    pub fn target_host(&self, image: Option<&str>) -> Option<String> {
        if let Some(h) = self.default_host() {
            return Some(h.to_string());
        }
        image.and_then(registry_of).map(str::to_string)
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

/// One piece of guest configuration, replaced as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigItem {
    /// A file.
    File { dest: String, contents: Vec<u8> },
    /// A directory and the files in it (`(relative path, contents)`), e.g. certs.d.
    Tree {
        dest: String,
        files: Vec<(String, Vec<u8>)>,
    },
}

/// The guest configuration the options ask for. The runner compares its
/// [`fingerprint`](GuestConfig::fingerprint) with what the VM already has and installs it
/// only when they differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    pub items: Vec<ConfigItem>,
    /// The daemon configuration to apply, for a runtime that has one.
    pub daemon_json: Option<DaemonJson>,
}

/// A daemon.json and how the running daemon takes it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonJson {
    /// The whole file.
    pub text: String,
    /// The insecure hosts the daemon must list once it applied the file.
    pub insecure_hosts: Vec<String>,
    /// The plugin's script (`RegistrySetup::daemon_json_apply`).
    pub apply: String,
}

/// Installs staged items: for each `(kind, staged name, destination)` the staged copy goes
/// to `<dest>.vc-new`, then is renamed over the destination (a directory is moved aside
/// first), so a reader never sees half a file and a crash leaves the old one or the new
/// one. Fixed text; the values are positional parameters.
const INSTALL_SCRIPT: &str = r#"stage="$1"; shift
while [ "$#" -ge 3 ]; do
  kind="$1"; src="$stage/$2"; dest="$3"; shift 3
  mkdir -p "$(dirname "$dest")" || exit 1
  rm -rf "$dest.vc-new" "$dest.vc-old"
  cp -a "$src" "$dest.vc-new" || exit 1
  if [ "$kind" = d ] && [ -e "$dest" ]; then mv -T "$dest" "$dest.vc-old" || exit 1; fi
  mv -f -T "$dest.vc-new" "$dest" || exit 1
  rm -rf "$dest.vc-old"
done
exit 0"#;

impl GuestConfig {
    /// sha256 of everything the configuration installs (hex).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for item in &self.items {
            match item {
                ConfigItem::File { dest, contents } => {
                    field(b"file");
                    field(dest.as_bytes());
                    field(contents);
                }
                ConfigItem::Tree { dest, files } => {
                    field(b"tree");
                    field(dest.as_bytes());
                    for (name, contents) in files {
                        field(name.as_bytes());
                        field(contents);
                    }
                }
            }
        }
        if let Some(daemon) = &self.daemon_json {
            field(b"daemon.json");
            field(daemon.text.as_bytes());
            for host in &daemon.insecure_hosts {
                field(host.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// The guest dir the configuration is staged in (named by its fingerprint).
    pub fn stage_dir(&self) -> String {
        format!("{GUEST_STAGING_DIR}/{}", &self.fingerprint()[..16])
    }

    /// The staged files, as a tar stream to unpack into [`stage_dir`](Self::stage_dir).
    pub fn payload(&self) -> Payload {
        let mut entries = Vec::new();
        for (k, item) in self.items.iter().enumerate() {
            match item {
                ConfigItem::File { contents, .. } => {
                    entries.push(PayloadEntry::bytes(format!("i{k}"), contents.clone()));
                }
                ConfigItem::Tree { files, .. } => {
                    let root = format!("i{k}");
                    entries.push(PayloadEntry::dir(root.clone()));
                    let mut dirs = BTreeSet::new();
                    for (name, _) in files {
                        let mut at = root.clone();
                        let parts: Vec<&str> = name.split('/').collect();
                        for part in &parts[..parts.len().saturating_sub(1)] {
                            at = format!("{at}/{part}");
                            if dirs.insert(at.clone()) {
                                entries.push(PayloadEntry::dir(at.clone()));
                            }
                        }
                    }
                    for (name, contents) in files {
                        entries.push(PayloadEntry::bytes(
                            format!("{root}/{name}"),
                            contents.clone(),
                        ));
                    }
                }
            }
        }
        if let Some(daemon) = &self.daemon_json {
            entries.push(PayloadEntry::bytes(
                "daemon.json",
                daemon.text.clone().into_bytes(),
            ));
        }
        Payload::new(entries)
    }

    /// The commands that install the staged configuration, in order.
    pub fn commands(&self) -> Vec<Vec<String>> {
        let stage = self.stage_dir();
        let mut out = Vec::new();
        if !self.items.is_empty() {
            let mut argv = vec![
                "sh".to_string(),
                "-c".to_string(),
                INSTALL_SCRIPT.to_string(),
                "sh".to_string(),
                stage.clone(),
            ];
            for (k, item) in self.items.iter().enumerate() {
                let (kind, dest) = match item {
                    ConfigItem::File { dest, .. } => ("f", dest),
                    ConfigItem::Tree { dest, .. } => ("d", dest),
                };
                argv.extend([kind.to_string(), format!("i{k}"), dest.clone()]);
            }
            out.push(argv);
        }
        if let Some(daemon) = &self.daemon_json {
            let mut argv = vec![
                "sh".to_string(),
                "-c".to_string(),
                daemon.apply.clone(),
                "sh".to_string(),
                format!("{stage}/daemon.json"),
            ];
            argv.extend(daemon.insecure_hosts.iter().cloned());
            out.push(argv);
        }
        out
    }
}

/// What the runner does in the guest for one command's registry options.
#[derive(Debug, Default)]
pub struct GuestSetup {
    /// Installed when it differs from what the VM has (see [`GuestConfig`]).
    pub config: GuestConfig,
    /// The configuration of a freshly booted VM (the options' defaults): what a VM is
    /// assumed to have until something else was installed in it.
    pub boot_config: GuestConfig,
    /// The per-command credentials file: (guest dir, tar stream).
    pub auth_push: Option<(String, Payload)>,
    /// Extra environment for the user's command.
    pub env: Vec<(String, String)>,
    /// Guest paths to remove after the command (the auth copy), whatever its outcome.
    pub cleanup: Vec<String>,
    /// Lines for stderr (warnings about the auth file).
    pub notices: Vec<String>,
    /// The options this setup was made from (for [`default_registry_plan`]).
    pub options: RegistryOptions,
    /// The runtime's hub (`RegistrySetup::hub`), the fallback after the default registry.
    pub hub: String,
    /// The runtime searches a plain default registry itself (it has a registries.conf
    /// drop-in), so [`default_registry_plan`] leaves such commands alone.
    pub runtime_searches: bool,
}

/// The registries.conf drop-in for these options (always written; empty settings reset old
/// ones); `hub` is searched after the default registry.
pub fn registries_dropin(opts: &RegistryOptions, hub: &str) -> String {
    let mut out =
        String::from("# Written by vcontainer from --registry/--insecure-registry; do not edit.\n");
    if let Some(r) = &opts.default_registry {
        if !r.contains('/') {
            out.push_str(&format!(
                "unqualified-search-registries = [\"{r}\", \"{hub}\"]\n"
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

/// A daemon.json: the runtime's baked settings plus `insecure-registries`.
pub fn daemon_json(base: Option<&str>, opts: &RegistryOptions) -> Result<String, RegistryError> {
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

/// The guest configuration of `opts` for the runtime of `spec`. `ca_host` is the registry a
/// `--ca-cert` is for.
pub fn guest_config(
    spec: &RuntimeSpec,
    opts: &RegistryOptions,
    ca_host: Option<&str>,
) -> Result<GuestConfig, RegistryError> {
    let reg = &spec.registry;
    let certs: Vec<(String, Vec<u8>)> = match (&opts.ca_cert, ca_host) {
        (Some(pem), Some(host)) => vec![(format!("{host}/ca.crt"), pem.clone())],
        (Some(_), None) => return Err(RegistryError::NoRegistryFor("--ca-cert")),
        (None, _) => Vec::new(),
    };
    let mut config = GuestConfig::default();
    if !reg.registries_dropin.is_empty() {
        config.items.push(ConfigItem::File {
            dest: reg.registries_dropin.to_string(),
            contents: registries_dropin(opts, &reg.hub).into_bytes(),
        });
    }
    if !reg.certs_dir.is_empty() {
        config.items.push(ConfigItem::Tree {
            dest: reg.certs_dir.to_string(),
            files: certs,
        });
    }
    if !reg.daemon_json.is_empty() {
        config.daemon_json = Some(DaemonJson {
            text: daemon_json(base_daemon_json(spec).as_deref(), opts)?,
            insecure_hosts: opts.insecure_hosts(),
            apply: reg.daemon_json_apply.to_string(),
        });
    }
    Ok(config)
}

/// The auth file for one command: `--config`'s contents, plus an entry for `host` made
/// from `--registry-user`/`--registry-password` (unless `--config` already has one).
fn auth_contents(
    opts: &RegistryOptions,
    host: Option<&str>,
    notices: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let Some(creds) = &opts.credentials else {
        return Ok(opts.auth.as_ref().map(|a| a.contents.clone()));
    };
    let host = host.ok_or(RegistryError::NoRegistryFor("--registry-user"))?;
    let mut doc = match &opts.auth {
        Some(a) => serde_json::from_slice::<serde_json::Value>(&a.contents)
            .unwrap_or_else(|_| serde_json::json!({})),
        None => serde_json::json!({}),
    };
    let Some(root) = doc.as_object_mut() else {
        return Ok(opts.auth.as_ref().map(|a| a.contents.clone()));
    };
    let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
    if let Some(map) = auths.as_object_mut() {
        if map.contains_key(host) {
            notices.push(format!(
                "NOTE: --config has credentials for {host}; they take precedence over --registry-user/--registry-password"
            ));
        } else {
            map.insert(
                host.to_string(),
                serde_json::json!({ "auth": creds.basic_auth() }),
            );
        }
    }
    serde_json::to_vec(&doc)
        .map(Some)
        .map_err(|e| RegistryError::BaseDaemonJson(e.to_string()))
}

/// The guest setup for the runtime of `spec`. `run_id` makes the auth dir unique per
/// command; `image` is the image the command names (it decides the registry of `--ca-cert`
/// and the credentials when there is no default registry).
pub fn guest_setup(
    spec: &RuntimeSpec,
    opts: &RegistryOptions,
    run_id: &str,
    image: Option<&str>,
) -> Result<GuestSetup, RegistryError> {
    let host = opts.target_host(image);
    let mut setup = GuestSetup {
        config: guest_config(spec, opts, host.as_deref())?,
        boot_config: guest_config(spec, &RegistryOptions::default(), None)?,
        options: opts.clone(),
        hub: spec.registry.hub.to_string(),
        runtime_searches: !spec.registry.registries_dropin.is_empty(),
        ..GuestSetup::default()
    };
    if let Some(auth) = &opts.auth {
        setup.notices.extend(auth.warnings.iter().cloned());
    }
    if let Some(contents) = auth_contents(opts, host.as_deref(), &mut setup.notices)? {
        let dir = format!("{GUEST_AUTH_ROOT}/{run_id}");
        let reg = &spec.registry;
        let file = reg.auth_file_name.as_str();
        let value = if reg.auth_env_names_dir {
            dir.clone()
        } else {
            format!("{dir}/{file}")
        };
        setup.auth_push = Some((
            dir.clone(),
            Payload::new(vec![PayloadEntry::private_bytes(file, contents)]),
        ));
        setup.env.push((reg.auth_env.to_string(), value));
        setup.cleanup.push(dir);
    }
    Ok(setup)
}

/// The registry options of a runtime command, checked before any VM work (a bad
/// `--config` or `--ca-cert` file fails here with exit 125 and the VM untouched).
pub fn options_for(ctx: &crate::context::RuntimeContext) -> Result<RegistryOptions, RegistryError> {
    let mut opts = RegistryOptions::new(
        ctx.settings.registry.as_deref(),
        &ctx.options.insecure_registries,
        ctx.options.secure_registry,
        ctx.settings.auth_config.as_deref(),
    )?;
    if let Some(ca) = &ctx.options.ca_cert {
        opts = opts.with_ca_cert(ca)?;
    }
    opts.with_credentials(
        ctx.options.registry_user.as_deref(),
        ctx.options
            .registry_password
            .as_ref()
            .map(crate::cli::Secret::expose),
    )
}

/// The daemon.json the runtime plugin bakes into the guest, if it has one.
fn base_daemon_json(spec: &RuntimeSpec) -> Option<String> {
    let path = &spec.registry.daemon_json;
    spec.guest_files
        .iter()
        .find(|f| !path.is_empty() && f.path == *path)
        .map(|f| f.contents.to_string())
}

/// Installs `config` in the guest: stages it, runs the install commands, removes the stage.
pub fn install(
    config: &GuestConfig,
    guest: &mut dyn crate::vimport::execute::Guest,
) -> anyhow::Result<()> {
    let stage = config.stage_dir();
    guest.push_tar(&stage, &mut config.payload().reader())?;
    let mut result = Ok(());
    for argv in config.commands() {
        let code = guest.run(&argv, &[])?;
        if code != 0 {
            result = Err(anyhow::anyhow!(
                "applying the registry settings in the guest failed (exit {code})"
            ));
            break;
        }
    }
    guest.remove(&stage);
    result
}

/// Pushes the per-command auth file (after the notices) and returns the environment the
/// user's command must get. The caller removes [`GuestSetup::cleanup`] after the command.
pub fn push_auth(
    setup: &GuestSetup,
    guest: &mut dyn crate::vimport::execute::Guest,
) -> anyhow::Result<Vec<(String, String)>> {
    for line in &setup.notices {
        guest.notice(line);
    }
    if let Some((dir, payload)) = &setup.auth_push {
        guest.push_tar(dir, &mut payload.reader())?;
    }
    Ok(setup.env.clone())
}

/// The registry host an image reference names, None for Docker Hub names.
pub fn registry_of(image: &str) -> Option<&str> {
    is_qualified(image).then(|| image.split('/').next().unwrap_or(image))
}

/// True when an image reference names its registry (`host.tld/…`, `host:port/…`,
/// `localhost/…`).
pub fn is_qualified(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// What `--registry R` does to a command that names an unqualified image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultRegistry {
    /// `pull`: the attempts in order, each a sequence of argv; the first pulls
    /// `R/<image>` and tags it `<image>` (so later commands find it by the name the user
    /// gave), the second is the user's own pull (Docker Hub).
    Pull(Vec<Vec<Vec<String>>>),
    /// `run`/`create`/`vrun`: before the command, when `check` fails (the image is not
    /// here), run `pull` then `tag`; if the pull fails the runtime's own lookup (Docker
    /// Hub) is left to the command.
    PrePull {
        check: Vec<String>,
        pull: Vec<String>,
        tag: Vec<String>,
    },
}

/// An image ID (`sha256:…` or 12+ hex digits) or a digest reference: not a name a registry
/// prefix applies to.
fn is_id_or_digest(image: &str) -> bool {
    image.starts_with("sha256:")
        || image.contains('@')
        || (image.len() >= 12 && image.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `--registry R` for the command `plan` (see [`DefaultRegistry`]). None when no default
/// registry applies: no `--registry`, no image operand, an image that names its registry,
/// an image ID or digest, a push, or a runtime with a registries.conf drop-in and a plain
/// registry host (its `unqualified-search-registries` does the same).
pub fn default_registry_plan(
    plan: &vcontainer_abi::runtime::CommandPlan,
    setup: &GuestSetup,
) -> Option<DefaultRegistry> {
    use vcontainer_abi::runtime::ImageUse;
    let registry = setup.options.default_registry.as_deref()?;
    let argv = plan.argv_strings();
    let runtime = argv.first()?.clone();
    if setup.runtime_searches && !registry.contains('/') {
        return None;
    }
    let (image, usage) = plan.image_ref()?;
    let index = usize::try_from(plan.image.as_ref().into_option()?.index).ok()?;
    if image.is_empty() || image.starts_with('-') || is_qualified(image) || is_id_or_digest(image) {
        return None;
    }
    let qualified = format!("{registry}/{image}");
    let tag = vec![
        runtime.clone(),
        "tag".into(),
        qualified.clone(),
        image.to_string(),
    ];
    match usage {
        ImageUse::Pull => {
            let mut first = argv.clone();
            first[index] = qualified;
            Some(DefaultRegistry::Pull(vec![vec![first, tag], vec![argv]]))
        }
        ImageUse::Run => Some(DefaultRegistry::PrePull {
            check: vec![
                runtime.clone(),
                "image".into(),
                "inspect".into(),
                image.to_string(),
            ],
            pull: vec![runtime, "pull".into(), qualified],
            tag,
        }),
        ImageUse::Push => None,
    }
}

#[cfg(test)]
mod tests;
