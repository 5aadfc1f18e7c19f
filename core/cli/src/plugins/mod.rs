//! Plugin discovery for the core: finds the runtime and backend plugins, looks them up by
//! alias, and implements the `plugins` command.
//!
//! Loading itself lives in [`vcontainer_abi::host`] (shared with other host tools); this module
//! adds what the `vcontainer` binary needs on top: a set split by kind, alias lookup with a
//! helpful error, and the listing.
//!
//! Typical use by the front:
//! ```ignore
//! let set = vcontainer::plugins::discover()?;         // refuses files others can write
//! vcontainer::plugins::print_failures(&set);            // stderr, one line per bad file
//! let docker = set.require_runtime("vdkr")?;           // by argv[0] alias
//! let plan = docker.plan(&args)?;
//! print!("{}", vcontainer::plugins::list(&set, ListFormat::Json));
//! ```

mod list;

use std::path::PathBuf;

use crate::trust::{self, Subject, TrustError};

pub use list::{failure_lines, list, print_failures, rows, ListFormat, PluginRow};
pub use vcontainer_abi::host::{
    BackendPlugin, LoadError, LoadFailure, LoadedPlugin, RuntimePlugin, PLUGIN_PATH_ENV,
};
pub use vcontainer_abi::PluginKind;

/// All plugins found, by kind, plus the files that could not be used.
#[derive(Debug, Default)]
pub struct PluginSet {
    /// Runtime plugins in search order (first per name only).
    pub runtimes: Vec<LoadedPlugin>,
    /// Backend plugins in search order (first per name only).
    pub backends: Vec<LoadedPlugin>,
    /// Files that failed to load, with the reason (including shadowed duplicates).
    pub failures: Vec<LoadFailure>,
    /// The directories that were searched, in order (for error messages).
    pub searched: Vec<PathBuf>,
}

/// Where plugins come from, for an error that found none at all.
const SEARCH_HINT: &str = " (plugins are loaded from $VCONTAINER_PLUGIN_PATH and from \
    <prefix>/lib/vcontainer/plugins when the binary is <prefix>/bin/vcontainer, never from \
    beside the binary; for a build tree set VCONTAINER_PLUGIN_PATH=<target>/debug)";

/// No plugin answers to a requested name.
#[derive(Debug, thiserror::Error)]
#[error(
    "no {kind} plugin named '{name}' (available: {}); searched: {}{}",
    if available.is_empty() { "none".to_string() } else { available.join(", ") },
    if searched.is_empty() { "nothing".to_string() } else {
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
    },
    if available.is_empty() { SEARCH_HINT } else { "" }
)]
pub struct NotFound {
    pub kind: PluginKind,
    pub name: String,
    /// Every alias of every plugin of that kind.
    pub available: Vec<String>,
    pub searched: Vec<PathBuf>,
}

/// Discovers plugins in the standard search path: `$VCONTAINER_PLUGIN_PATH` (colon
/// separated), then `<prefix>/lib/vcontainer/plugins` when the binary is `<prefix>/bin/...`
/// ([`vcontainer_abi::host::search_dirs`]). Fails, loading nothing, when a candidate file
/// could be written or replaced by another user ([`trust`]).
pub fn discover() -> Result<PluginSet, TrustError> {
    discover_in(&vcontainer_abi::host::default_search_dirs())
}

/// Discovers plugins in exactly these directories, in order. Every candidate file is checked
/// before any is loaded: a library runs code as the user the moment it is opened.
pub fn discover_in(dirs: &[PathBuf]) -> Result<PluginSet, TrustError> {
    let files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| vcontainer_abi::host::candidates(d))
        .collect();
    for file in &files {
        trust::check(file, Subject::PluginFile)?;
    }
    let found = vcontainer_abi::host::load_all(&files);
    let (runtimes, backends) = found
        .plugins
        .into_iter()
        .partition(|p| p.kind == PluginKind::Runtime);
    Ok(PluginSet {
        runtimes,
        backends,
        failures: found.failures,
        searched: dirs.to_vec(),
    })
}

impl PluginSet {
    /// The runtime plugin whose name or alias is `alias` (e.g. `vdkr`, `docker`).
    pub fn runtime(&self, alias: &str) -> Option<RuntimePlugin<'_>> {
        self.runtimes
            .iter()
            .find(|p| p.answers_to(alias))
            .and_then(LoadedPlugin::runtime)
    }

    /// The backend plugin whose name or alias is `alias` (e.g. `sloci`, `umoci`).
    pub fn backend(&self, alias: &str) -> Option<BackendPlugin<'_>> {
        self.backends
            .iter()
            .find(|p| p.answers_to(alias))
            .and_then(LoadedPlugin::backend)
    }

    /// Like [`PluginSet::runtime`], with an error that lists what is available and where
    /// it was searched.
    pub fn require_runtime(&self, alias: &str) -> Result<RuntimePlugin<'_>, NotFound> {
        self.runtime(alias)
            .ok_or_else(|| self.not_found(PluginKind::Runtime, alias))
    }

    /// Like [`PluginSet::backend`], with an error that lists what is available.
    pub fn require_backend(&self, alias: &str) -> Result<BackendPlugin<'_>, NotFound> {
        self.backend(alias)
            .ok_or_else(|| self.not_found(PluginKind::Backend, alias))
    }

    /// Every (alias, runtime plugin name) pair, for mapping argv[0] to a runtime. The first
    /// plugin claiming an alias keeps it.
    pub fn runtime_aliases(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for p in &self.runtimes {
            for a in &p.aliases {
                if !pairs.iter().any(|(seen, _)| seen == a) {
                    pairs.push((a.clone(), p.name.clone()));
                }
            }
        }
        pairs
    }

    /// Runtimes then backends, each in search order.
    pub fn all(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.runtimes.iter().chain(self.backends.iter())
    }

    fn not_found(&self, kind: PluginKind, name: &str) -> NotFound {
        let pool = match kind {
            PluginKind::Runtime => &self.runtimes,
            PluginKind::Backend => &self.backends,
        };
        NotFound {
            kind,
            name: name.to_string(),
            available: pool
                .iter()
                .flat_map(|p| p.aliases.iter().cloned())
                .collect(),
            searched: self.searched.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Builds the real runtime plugins (once per test run) into <target>/fixtures, a separate
    /// target dir so the nested cargo never waits for the one running this test.
    fn runtime_plugin_dir() -> &'static Path {
        static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/");
            let fixtures = target.join("fixtures");
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--manifest-path"])
                .arg(&workspace)
                .args([
                    "-p",
                    "vcontainer-runtime-docker",
                    "-p",
                    "vcontainer-runtime-podman",
                ])
                .arg("--target-dir")
                .arg(&fixtures)
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("run cargo");
            assert!(status.success(), "building the runtime plugins failed");
            fixtures.join("debug")
        })
    }

    #[test]
    fn real_runtime_plugins_are_found_by_alias_and_listed() {
        let built = runtime_plugin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["docker", "podman"] {
            let file = format!("libvcontainer_runtime_{name}.so");
            std::fs::copy(built.join(&file), dir.path().join(&file)).expect("copy plugin");
        }
        std::fs::write(dir.path().join("libvcontainer_zz_broken.so"), "x").expect("write");
        let set = discover_in(&[dir.path().to_path_buf()]).expect("safe dir");

        let names: Vec<&str> = set.runtimes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["docker", "podman"]);
        assert_eq!(set.failures.len(), 1, "{:?}", set.failures);
        assert!(
            failure_lines(&set)[0].contains("libvcontainer_zz_broken.so: not a vcontainer plugin")
        );

        let vdkr = set.require_runtime("vdkr").expect("vdkr");
        assert_eq!(vdkr.plugin.name, "docker");
        assert_eq!(vdkr.spec().state_dir_name.as_str(), ".vdkr");
        let vpdmn = set.require_runtime("vpdmn").expect("vpdmn");
        let plan = vpdmn
            .plan(&["vrun".to_string(), "alpine".to_string(), "true".to_string()])
            .expect("plan");
        // podman's vrun: no --rm, a cidfile, and the removal as follow-up steps (issue 16)
        let argv = plan.argv_strings();
        assert_eq!(argv[..3], ["podman", "run", "--cidfile"]);
        assert_eq!(argv[4..], ["--entrypoint", "", "alpine", "true"]);
        assert_eq!(plan.after.len(), 1);
        let removal: Vec<&str> = plan.after[0].argv.iter().map(|a| a.as_str()).collect();
        assert_eq!(removal[..2], ["sh", "-c"]);
        assert!(removal[2].contains("podman rm --force"), "{removal:?}");
        assert_eq!(removal.last(), Some(&argv[3].as_str()));
        let plan = vdkr
            .plan(&["vrun".to_string(), "alpine".to_string()])
            .expect("plan");
        assert_eq!(plan.argv_strings(), ["docker", "run", "--rm", "alpine"]);
        assert!(plan.after.is_empty());
        assert!(set.backend("vdkr").is_none());
        assert_eq!(
            set.runtime_aliases(),
            [
                ("docker".to_string(), "docker".to_string()),
                ("vdkr".to_string(), "docker".to_string()),
                ("podman".to_string(), "podman".to_string()),
                ("vpdmn".to_string(), "podman".to_string()),
            ]
        );

        let json: serde_json::Value =
            serde_json::from_str(&list(&set, ListFormat::Json)).expect("json");
        let arr = json.as_array().expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["kind"], "runtime");
        assert_eq!(arr[1]["name"], "podman");
        let expected_path = dir.path().join("libvcontainer_runtime_podman.so");
        assert_eq!(arr[1]["path"], expected_path.display().to_string());
        let table = list(&set, ListFormat::Table);
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table
            .lines()
            .nth(1)
            .unwrap_or("")
            .starts_with("runtime  docker"));
    }

    #[test]
    fn empty_dirs_give_an_empty_set_and_a_useful_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("libvcontainer_bad.so"), "text").expect("write");
        let set = discover_in(&[dir.path().to_path_buf()]).expect("safe dir");
        assert!(set.runtimes.is_empty() && set.backends.is_empty());
        assert_eq!(set.failures.len(), 1);
        assert!(set.runtime("vdkr").is_none());
        let err = set.require_runtime("vdkr").err().expect("not found");
        let msg = err.to_string();
        assert!(
            msg.starts_with("no runtime plugin named 'vdkr' (available: none); searched: "),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }
}
