//! The `plugins` command: one row per plugin (kind, name, version, path), as a table or JSON.

use std::io::Write;

use serde::Serialize;

use super::PluginSet;

/// Output format of `plugins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// Aligned columns with a header: KIND NAME VERSION PATH.
    #[default]
    Table,
    /// A JSON array of `{"kind","name","version","path","aliases"}` objects.
    Json,
}

/// One listed plugin, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRow {
    pub kind: String,
    pub name: String,
    pub version: String,
    pub path: String,
    pub aliases: Vec<String>,
}

/// The rows for `set`: runtimes then backends, each in search order.
pub fn rows(set: &PluginSet) -> Vec<PluginRow> {
    set.all()
        .map(|p| PluginRow {
            kind: p.kind.to_string(),
            name: p.name.clone(),
            version: p.version.clone(),
            path: p.path.display().to_string(),
            aliases: p.aliases.clone(),
        })
        .collect()
}

/// The text `plugins` prints on stdout (ends with a newline). Failures are not included;
/// print them with [`print_failures`].
pub fn list(set: &PluginSet, format: ListFormat) -> String {
    format_rows(&rows(set), format)
}

pub(super) fn format_rows(rows: &[PluginRow], format: ListFormat) -> String {
    match format {
        ListFormat::Json => {
            // Serialising plain strings cannot fail.
            let mut out = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
            out.push('\n');
            out
        }
        ListFormat::Table => {
            let header = ["KIND", "NAME", "VERSION", "PATH"];
            let cells: Vec<[&str; 4]> = rows
                .iter()
                .map(|r| [r.kind.as_str(), &r.name, &r.version, &r.path])
                .collect();
            let mut widths = header.map(str::len);
            for row in &cells {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            let mut out = String::new();
            for row in std::iter::once(&header).chain(cells.iter()) {
                let line = format!(
                    "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                );
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out
        }
    }
}

/// One line per unusable plugin file: `plugin <path>: <reason>`.
pub fn failure_lines(set: &PluginSet) -> Vec<String> {
    set.failures
        .iter()
        .map(|f| format!("plugin {}: {}", f.path.display(), f.error))
        .collect()
}

/// Writes [`failure_lines`] to stderr, each prefixed with `vcontainer: `.
pub fn print_failures(set: &PluginSet) {
    let mut err = std::io::stderr().lock();
    for line in failure_lines(set) {
        // Nothing sensible to do if stderr is gone.
        let _ = writeln!(err, "vcontainer: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use vcontainer_abi::host::{LoadError, LoadFailure};

    fn sample() -> Vec<PluginRow> {
        vec![
            PluginRow {
                kind: "runtime".into(),
                name: "docker".into(),
                version: "0.1.0".into(),
                path: "/p/lib/vcontainer/plugins/libvcontainer_runtime_docker.so".into(),
                aliases: vec!["docker".into(), "vdkr".into()],
            },
            PluginRow {
                kind: "backend".into(),
                name: "umoci".into(),
                version: "0.10.1".into(),
                path: "/x/libvcontainer_backend_umoci.so".into(),
                aliases: vec!["umoci".into()],
            },
        ]
    }

    #[test]
    fn table_has_header_and_aligned_columns() {
        let out = format_rows(&sample(), ListFormat::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "KIND     NAME    VERSION  PATH");
        assert_eq!(
            lines[1],
            "runtime  docker  0.1.0    /p/lib/vcontainer/plugins/libvcontainer_runtime_docker.so"
        );
        assert_eq!(
            lines[2],
            "backend  umoci   0.10.1   /x/libvcontainer_backend_umoci.so"
        );
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let out = format_rows(&sample(), ListFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        let arr = value.as_array().expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["kind"], "runtime");
        assert_eq!(arr[0]["name"], "docker");
        assert_eq!(arr[0]["version"], "0.1.0");
        assert_eq!(arr[0]["aliases"][1], "vdkr");
        assert_eq!(arr[1]["path"], "/x/libvcontainer_backend_umoci.so");
        assert_eq!(format_rows(&[], ListFormat::Json), "[]\n");
    }

    #[test]
    fn failures_name_path_and_reason() {
        let set = PluginSet {
            failures: vec![LoadFailure {
                path: PathBuf::from("/d/libvcontainer_old.so"),
                error: LoadError::WrongInterfaceVersion {
                    found: 2,
                    expected: 1,
                },
            }],
            ..Default::default()
        };
        assert_eq!(
            failure_lines(&set),
            ["plugin /d/libvcontainer_old.so: plugin speaks interface 2, this vcontainer speaks 1"]
        );
    }
}
