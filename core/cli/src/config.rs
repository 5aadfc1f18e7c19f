//! The per-tool config file, `~/.config/<tool>/config`, in the old tool's `key=value` format.
//!
//! Compatible with the shell tool's files, minus its bugs (docs/old-tool-cli.md): keys match
//! exactly (no sub-word matches), values are validated by type, only leading/trailing
//! whitespace is trimmed, a repeated key means "the last one wins", and every write goes
//! through a temp file + rename so a crash never leaves a half-written file. Comment and
//! unknown lines are kept as they are.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::arch::Arch;

/// How a key's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Arch,
    Bool,
    /// An integer >= 1.
    Positive,
    /// An integer >= 0 (0 has a meaning, e.g. "never").
    NonNegative,
    AbsolutePath,
    /// A single word (no whitespace).
    Word,
}

impl ValueKind {
    fn expected(self) -> &'static str {
        match self {
            ValueKind::Arch => "x86_64, aarch64",
            ValueKind::Bool => "true, false",
            ValueKind::Positive => "an integer >= 1",
            ValueKind::NonNegative => "an integer >= 0",
            ValueKind::AbsolutePath => "an absolute path",
            ValueKind::Word => "a non-empty value without spaces",
        }
    }
}

/// One accepted key. `used_by` documents who reads it, because the old tool accepted keys
/// that nothing read; every key here has a reader.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: ValueKind,
    /// Fixed default; `None` when it depends on the host or user (arch, state-dir).
    pub default: Option<&'static str>,
    pub used_by: &'static str,
}

pub const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "arch",
        kind: ValueKind::Arch,
        default: None,
        used_by: "arch selection, after --arch, the program name and $<TOOL>_ARCH",
    },
    KeySpec {
        name: "timeout",
        kind: ValueKind::Positive,
        default: Some("300"),
        used_by:
            "VM layer: seconds a batch (non-memres) command may run; $<TOOL>_TIMEOUT overrides",
    },
    KeySpec {
        name: "state-dir",
        kind: ValueKind::AbsolutePath,
        default: None,
        used_by: "state root holding one dir per arch or instance; $<TOOL>_STATE_DIR overrides",
    },
    KeySpec {
        name: "verbose",
        kind: ValueKind::Bool,
        default: Some("false"),
        used_by: "verbose output, as if -v were given",
    },
    KeySpec {
        name: "idle-timeout",
        kind: ValueKind::NonNegative,
        default: Some("1800"),
        used_by: "VM layer: seconds a memres VM may stay idle before a clean shutdown; 0 = never",
    },
    KeySpec {
        name: "auto-daemon",
        kind: ValueKind::Bool,
        default: Some("true"),
        used_by: "VM layer: start a memres VM on the first command instead of a one-shot VM",
    },
    KeySpec {
        name: "registry",
        kind: ValueKind::Word,
        default: Some(""),
        used_by: "default registry for unqualified images when --registry is not given",
    },
    KeySpec {
        name: "memory",
        kind: ValueKind::Positive,
        default: Some("2048"),
        used_by: "VM layer: guest memory in MiB",
    },
    KeySpec {
        name: "cpus",
        kind: ValueKind::Positive,
        default: Some("2"),
        used_by: "VM layer: guest vCPUs",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key '{key}'; valid keys: {}", valid_keys())]
    UnknownKey { key: String },
    #[error("invalid value '{value}' for config key '{key}'; valid values: {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{}: {error}", path.display())]
    Stored {
        path: PathBuf,
        error: Box<ConfigError>,
    },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

pub fn valid_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The key table for `vconfig --help`: name, accepted values, who reads it.
pub fn keys_help() -> String {
    let mut text = String::from("Keys:\n");
    for k in KEYS {
        text.push_str(&format!(
            "  {} ({})\n      {}\n",
            k.name,
            k.kind.expected(),
            k.used_by
        ));
    }
    text
}

/// Exact-match lookup.
pub fn key_spec(name: &str) -> Result<&'static KeySpec, ConfigError> {
    KEYS.iter()
        .find(|k| k.name == name)
        .ok_or_else(|| ConfigError::UnknownKey {
            key: name.to_string(),
        })
}

/// Checks a value for a key and returns its canonical spelling (e.g. `arm64` -> `aarch64`).
pub fn validate(key: &str, value: &str) -> Result<String, ConfigError> {
    let spec = key_spec(key)?;
    let invalid = || ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: spec.kind.expected(),
    };
    let value = value.trim();
    match spec.kind {
        ValueKind::Arch => value
            .parse::<Arch>()
            .map(|a| a.as_str().to_string())
            .map_err(|_| invalid()),
        ValueKind::Bool => match value {
            "true" | "false" => Ok(value.to_string()),
            _ => Err(invalid()),
        },
        ValueKind::Positive | ValueKind::NonNegative => {
            let n: u64 = value.parse().map_err(|_| invalid())?;
            if spec.kind == ValueKind::Positive && n == 0 {
                return Err(invalid());
            }
            Ok(n.to_string())
        }
        ValueKind::AbsolutePath => {
            if value.starts_with('/') && !value.contains('\n') {
                Ok(value.to_string())
            } else {
                Err(invalid())
            }
        }
        ValueKind::Word => {
            if !value.is_empty() && !value.contains(char::is_whitespace) {
                Ok(value.to_string())
            } else {
                Err(invalid())
            }
        }
    }
}

/// The file's lines as read, so that a write keeps comments and keys we do not know.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    lines: Vec<String>,
}

/// `key` of a `key=value` line, or None for comments, blanks and junk.
fn line_key(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return None;
    }
    trimmed.split_once('=').map(|(k, _)| k.trim())
}

impl ConfigFile {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        Ok(ConfigFile {
            path: path.to_path_buf(),
            lines: text.lines().map(str::to_string).collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw stored value (last occurrence wins), trimmed.
    pub fn get_raw(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .rev()
            .find(|l| line_key(l) == Some(key))
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().to_string())
    }

    /// The stored value after validation. A bad stored value is an error naming the key,
    /// never silently replaced by the default.
    pub fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        key_spec(key)?;
        match self.get_raw(key) {
            None => Ok(None),
            Some(v) => validate(key, &v).map(Some).map_err(|e| self.located(e)),
        }
    }

    /// Prefixes a validation error with the file, so the user knows what to edit.
    fn located(&self, e: ConfigError) -> ConfigError {
        ConfigError::Stored {
            path: self.path.clone(),
            error: Box::new(e),
        }
    }

    /// Sets a validated value: replaces the key's first line in place, drops later repeats.
    pub fn set(&mut self, key: &str, value: &str) -> Result<String, ConfigError> {
        let value = validate(key, value)?;
        let new_line = format!("{key}={value}");
        let mut replaced = false;
        self.lines.retain_mut(|line| {
            if line_key(line) != Some(key) {
                return true;
            }
            if replaced {
                return false;
            }
            replaced = true;
            *line = new_line.clone();
            true
        });
        if !replaced {
            self.lines.push(new_line);
        }
        Ok(value)
    }

    /// Removes every line of the key.
    pub fn remove(&mut self, key: &str) -> Result<(), ConfigError> {
        key_spec(key)?;
        self.lines.retain(|l| line_key(l) != Some(key));
        Ok(())
    }

    /// Writes atomically: temp file in the same dir, fsync, rename. The dir is created if
    /// needed; an existing file's permissions are kept.
    pub fn save(&self) -> Result<(), ConfigError> {
        let io = |error| ConfigError::Io {
            path: self.path.clone(),
            error,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        tmp.write_all(text.as_bytes()).map_err(io)?;
        if let Ok(meta) = fs::metadata(&self.path) {
            tmp.as_file()
                .set_permissions(meta.permissions())
                .map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_not_by_sub_word() {
        for bad in ["daemon", "idle", "dir", "state", "arc", "ARCH", "arch "] {
            assert!(
                matches!(key_spec(bad), Err(ConfigError::UnknownKey { .. })),
                "{bad}"
            );
        }
        let msg = key_spec("daemon").unwrap_err().to_string();
        assert_eq!(
            msg,
            "unknown config key 'daemon'; valid keys: arch, timeout, state-dir, verbose, \
             idle-timeout, auto-daemon, registry, memory, cpus"
        );
    }

    #[test]
    fn values_are_typed() {
        assert_eq!(validate("arch", "arm64").unwrap(), "aarch64");
        assert!(validate("arch", "riscv64").is_err());
        assert!(validate("verbose", "yes").is_err());
        assert_eq!(validate("verbose", "true").unwrap(), "true");
        assert!(validate("timeout", "0").is_err());
        assert!(validate("timeout", "-5").is_err());
        assert!(validate("cpus", "two").is_err());
        assert_eq!(validate("idle-timeout", "0").unwrap(), "0");
        assert!(validate("state-dir", "relative/dir").is_err());
        assert!(validate("registry", "a b").is_err());
        let msg = validate("auto-daemon", "maybe").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid value 'maybe' for config key 'auto-daemon'; valid values: true, false"
        );
    }

    #[test]
    fn old_format_round_trips_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "# mine\narch=aarch64\nfoo=bar\narch = x86_64 \n").unwrap();
        let mut cfg = ConfigFile::load(&path).unwrap();
        assert_eq!(cfg.get("arch").unwrap().as_deref(), Some("x86_64"));
        cfg.set("arch", "aarch64").unwrap();
        cfg.set("timeout", "60").unwrap();
        cfg.save().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# mine\narch=aarch64\nfoo=bar\ntimeout=60\n"
        );
        cfg.remove("arch").unwrap();
        cfg.save().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# mine\nfoo=bar\ntimeout=60\n"
        );
    }

    #[test]
    fn bad_stored_value_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "cpus=lots\n").unwrap();
        let cfg = ConfigFile::load(&path).unwrap();
        let msg = cfg.get("cpus").unwrap_err().to_string();
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    }

    #[test]
    fn missing_file_is_empty_and_save_creates_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config");
        let mut cfg = ConfigFile::load(&path).unwrap();
        assert_eq!(cfg.get("arch").unwrap(), None);
        cfg.set("memory", "4096").unwrap();
        cfg.save().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "memory=4096\n");
        // no temp files left behind
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }
}
