//! Finding and loading plugin libraries (the host side of the interface).
//!
//! Used by the `vcontainer` binary and by any other host tool that needs plugin facts (the
//! guest-image builder reads the runtime plugins' package lists).
//!
//! abi_stable's `RootModule::load_from_*` keep ONE module per root type in a static, which
//! cannot hold several plugins of the same type. So this module goes one level lower:
//! [`RawLibrary`] + [`lib_header_from_raw_library`] + [`LibHeader::init_root_module`], none of
//! which touch those statics. Loaded libraries are never unloaded: function pointers and
//! `'static` data from them stay valid for the whole process.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::std_types::{ROption, RString};

use crate::backend::{
    self, BuildRequest, BuildResult, IndexRequest, IndexResult, UnpackRequest, UnpackResult,
};
use crate::runtime::{CommandPlan, RuntimeSpec};
use crate::{
    BackendModuleRef, PluginError, PluginKind, PluginRootRef, RuntimeModuleRef, INTERFACE_VERSION,
};

/// Environment variable with extra plugin directories (colon separated), searched first.
pub const PLUGIN_PATH_ENV: &str = "VCONTAINER_PLUGIN_PATH";

/// File names considered plugins: `libvcontainer_*.so`.
pub const FILE_PREFIX: &str = "libvcontainer_";
/// See [`FILE_PREFIX`].
pub const FILE_SUFFIX: &str = ".so";

/// Why a plugin file could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The path does not exist.
    #[error("file not found")]
    Missing,
    /// The file is not a shared library, or has no vcontainer root module.
    #[error("not a vcontainer plugin: {0}")]
    NotAPlugin(String),
    /// abi_stable found different type layouts (built against another interface).
    #[error("incompatible plugin layout (built against a different vcontainer-abi): {0}")]
    WrongLayout(String),
    /// Our own interface version differs.
    #[error("plugin speaks interface {found}, this vcontainer speaks {expected}")]
    WrongInterfaceVersion { found: u32, expected: u32 },
    /// The root module is inconsistent (kind without its module, empty name).
    #[error("malformed plugin: {0}")]
    Malformed(String),
    /// A plugin with the same kind and name was found earlier in the search path.
    #[error("{kind} plugin '{name}' is shadowed by {}", by.display())]
    Shadowed {
        kind: PluginKind,
        name: String,
        by: PathBuf,
    },
}

/// A plugin file that was not loaded, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub path: PathBuf,
    pub error: LoadError,
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// A successfully loaded plugin: its facts as plain Rust values plus its module.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub kind: PluginKind,
    pub name: String,
    pub version: String,
    pub aliases: Vec<String>,
    pub description: String,
    root: PluginRootRef,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// True if `name` is this plugin's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }

    /// The runtime functions, if this is a runtime plugin.
    pub fn runtime(&self) -> Option<RuntimePlugin<'_>> {
        match self.root.runtime() {
            ROption::RSome(module) => Some(RuntimePlugin {
                plugin: self,
                module,
            }),
            ROption::RNone => None,
        }
    }

    /// The backend functions, if this is a backend plugin.
    pub fn backend(&self) -> Option<BackendPlugin<'_>> {
        match self.root.backend() {
            ROption::RSome(module) => Some(BackendPlugin {
                plugin: self,
                module,
            }),
            ROption::RNone => None,
        }
    }
}

/// Typed access to a runtime plugin's functions.
#[derive(Clone, Copy)]
pub struct RuntimePlugin<'a> {
    pub plugin: &'a LoadedPlugin,
    module: RuntimeModuleRef,
}

impl RuntimePlugin<'_> {
    /// The runtime's fixed facts.
    pub fn spec(&self) -> RuntimeSpec {
        (self.module.spec())()
    }

    /// Classifies and rewrites one user command (see [`crate::RuntimeModule::plan`]).
    pub fn plan(&self, args: &[String]) -> Result<CommandPlan, PluginError> {
        let args: Vec<RString> = args.iter().map(|a| RString::from(a.as_str())).collect();
        (self.module.plan())(args.as_slice().into()).into_result()
    }
}

/// Typed access to a backend plugin's functions (JSON is handled here).
#[derive(Clone, Copy)]
pub struct BackendPlugin<'a> {
    pub plugin: &'a LoadedPlugin,
    module: BackendModuleRef,
}

impl BackendPlugin<'_> {
    pub fn build(&self, request: &BuildRequest) -> Result<BuildResult, PluginError> {
        backend::call(self.module.build(), request)
    }

    pub fn unpack(&self, request: &UnpackRequest) -> Result<UnpackResult, PluginError> {
        backend::call(self.module.unpack(), request)
    }

    pub fn index(&self, request: &IndexRequest) -> Result<IndexResult, PluginError> {
        backend::call(self.module.index(), request)
    }
}

/// Loads one plugin file. Never panics on a bad file; every problem is a [`LoadError`].
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, LoadError> {
    if !path.exists() {
        return Err(LoadError::Missing);
    }
    let raw = RawLibrary::load_at(path).map_err(|e| LoadError::NotAPlugin(describe(&e)))?;
    // SAFETY: `raw` is leaked right below, so the header's 'static references never dangle.
    let header = unsafe { lib_header_from_raw_library(&raw) };
    // Keep the library mapped for the whole process (see the module docs), also on failure:
    // a failed header may still have run the library's initialisers.
    std::mem::forget(raw);
    let header = header.map_err(|e| match e {
        LibraryError::GetSymbolError { .. } => {
            LoadError::NotAPlugin("it exports no vcontainer root module".to_string())
        }
        other => LoadError::WrongLayout(describe(&other)),
    })?;
    let root: PluginRootRef = header.init_root_module().map_err(|e| match e {
        LibraryError::AbiInstability(_) | LibraryError::IncompatibleVersionNumber { .. } => {
            LoadError::WrongLayout(shorten(&describe(&e)))
        }
        other => LoadError::NotAPlugin(describe(&other)),
    })?;
    let found = root.interface_version();
    if found != INTERFACE_VERSION {
        return Err(LoadError::WrongInterfaceVersion {
            found,
            expected: INTERFACE_VERSION,
        });
    }
    let kind = root.kind();
    let consistent = match kind {
        PluginKind::Runtime => root.runtime().is_some() && root.backend().is_none(),
        PluginKind::Backend => root.backend().is_some() && root.runtime().is_none(),
    };
    if !consistent {
        return Err(LoadError::Malformed(format!(
            "declares kind {kind} but does not provide exactly the {kind} module"
        )));
    }
    let info = (root.info())();
    let name = info.name.to_string();
    if name.is_empty() {
        return Err(LoadError::Malformed("empty plugin name".to_string()));
    }
    let mut aliases: Vec<String> = info.aliases.iter().map(|a| a.to_string()).collect();
    if !aliases.contains(&name) {
        aliases.insert(0, name.clone());
    }
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        kind,
        name,
        version: info.version.to_string(),
        aliases,
        description: info.description.to_string(),
        root,
    })
}

fn describe(error: &LibraryError) -> String {
    let text = error.to_string();
    let text = text.trim();
    // abi_stable's messages are multi-line with tabs; keep them readable on one line.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(text: &str) -> String {
    // Layout errors can be hundreds of lines; the summary is enough for a listing.
    const LIMIT: usize = 300;
    if text.len() <= LIMIT {
        text.to_string()
    } else {
        let mut cut = LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{} ...", &text[..cut])
    }
}

/// The search directories in order: `$VCONTAINER_PLUGIN_PATH` entries, then
/// `<prefix>/lib/vcontainer/plugins` when the executable is in `<prefix>/bin` (an install,
/// the SDK, a Yocto sysroot).
///
/// The executable's own directory is never searched: a binary run from a download or build
/// dir would otherwise load any `libvcontainer_*.so` that lands beside it. A build tree names
/// its plugins explicitly (`VCONTAINER_PLUGIN_PATH=target/debug`, as the tests do).
pub fn search_dirs(plugin_path_env: Option<&OsStr>, exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = plugin_path_env
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let exe_dir = exe.and_then(Path::parent);
    if let Some(prefix) = exe_dir
        .filter(|d| d.file_name() == Some(OsStr::new("bin")))
        .and_then(Path::parent)
    {
        dirs.push(prefix.join("lib/vcontainer/plugins"));
    }
    dirs
}

/// [`search_dirs`] for this process: reads the environment and the current executable.
pub fn default_search_dirs() -> Vec<PathBuf> {
    let env = std::env::var_os(PLUGIN_PATH_ENV);
    let exe = std::env::current_exe().ok();
    search_dirs(env.as_deref(), exe.as_deref())
}

/// Plugin candidate files in one directory, sorted by name. A missing directory is simply
/// empty (most search dirs are optional).
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)
        })
        .map(|e| e.path())
        .filter(|p| !p.is_dir())
        .collect();
    files.sort();
    files
}

/// Everything discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Loaded plugins in search order (first one per kind+name only).
    pub plugins: Vec<LoadedPlugin>,
    /// Files that could not be used, including shadowed duplicates.
    pub failures: Vec<LoadFailure>,
}

/// Loads every candidate of every directory in `dirs`. A failing plugin never stops the
/// others; the same file reached through two directories is loaded once.
pub fn discover(dirs: &[PathBuf]) -> Discovery {
    let files: Vec<PathBuf> = dirs.iter().flat_map(|d| candidates(d)).collect();
    load_all(&files)
}

/// Loads the given plugin files in order (first per kind+name wins).
pub fn load_all(files: &[PathBuf]) -> Discovery {
    let mut found = Discovery::default();
    let mut seen_files = HashSet::new();
    for path in files {
        let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if !seen_files.insert(identity) {
            continue;
        }
        match load_plugin(path) {
            Ok(plugin) => {
                if let Some(winner) = found
                    .plugins
                    .iter()
                    .find(|p| p.kind == plugin.kind && p.name == plugin.name)
                {
                    found.failures.push(LoadFailure {
                        path: path.clone(),
                        error: LoadError::Shadowed {
                            kind: plugin.kind,
                            name: plugin.name.clone(),
                            by: winner.path.clone(),
                        },
                    });
                } else {
                    found.plugins.push(plugin);
                }
            }
            Err(error) => found.failures.push(LoadFailure {
                path: path.clone(),
                error,
            }),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_dir_order() {
        let dirs = search_dirs(
            Some(OsStr::new("/a::/b")),
            Some(Path::new("/opt/x/bin/vdkr")),
        );
        assert_eq!(
            dirs,
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/opt/x/lib/vcontainer/plugins"),
            ]
        );
        // outside a <prefix>/bin, nothing beside the binary is searched
        for exe in [
            "/home/u/Downloads/vcontainer",
            "/src/vc/target/debug/vcontainer",
            "/vcontainer",
        ] {
            assert_eq!(
                search_dirs(None, Some(Path::new(exe))),
                Vec::<PathBuf>::new(),
                "{exe}"
            );
        }
        assert_eq!(
            search_dirs(None, Some(Path::new("/usr/bin/vdkr"))),
            [PathBuf::from("/usr/lib/vcontainer/plugins")]
        );
        assert_eq!(search_dirs(None, None), Vec::<PathBuf>::new());
    }

    #[test]
    fn candidates_filter_and_sort() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libvcontainer_b.so",
            "libvcontainer_a.so",
            "libother.so",
            "libvcontainer_c.so.1",
            "libvcontainer_d.txt",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("libvcontainer_dir.so")).unwrap();
        let names: Vec<String> = candidates(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["libvcontainer_a.so", "libvcontainer_b.so"]);
        assert!(candidates(&dir.path().join("nope")).is_empty());
    }

    #[test]
    fn missing_and_text_files_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("libvcontainer_gone.so");
        assert_eq!(load_plugin(&missing).unwrap_err(), LoadError::Missing);
        let text = dir.path().join("libvcontainer_x.so");
        std::fs::write(&text, "not an ELF file\n").unwrap();
        assert!(matches!(
            load_plugin(&text).unwrap_err(),
            LoadError::NotAPlugin(_)
        ));
        let found = load_all(&[missing.clone(), text.clone()]);
        assert!(found.plugins.is_empty());
        assert_eq!(found.failures.len(), 2);
        assert_eq!(found.failures[0].path, missing);
    }
}
