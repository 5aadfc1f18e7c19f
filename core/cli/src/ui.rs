//! Output conventions: data on stdout, messages on stderr, colour only when stderr is a
//! terminal and NO_COLOR is unset (the old tool always coloured).

use std::io::IsTerminal;

/// Whether messages on stderr may use colour.
pub fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// clap's colour setting under the same rule.
pub fn clap_color() -> clap::ColorChoice {
    if stderr_color() {
        clap::ColorChoice::Always
    } else {
        clap::ColorChoice::Never
    }
}

/// An informational line on stderr: `[vdkr] message`.
pub fn info(tool: &str, message: &str) {
    eprintln!("[{tool}] {message}");
}

/// A warning line on stderr.
pub fn warn(tool: &str, message: &str) {
    if stderr_color() {
        eprintln!("[{tool}] \x1b[33mwarning:\x1b[0m {message}");
    } else {
        eprintln!("[{tool}] warning: {message}");
    }
}

/// The one-line error report of main: `vdkr: error: what failed: why`, with the context
/// chain joined by ": ".
pub fn error_line(tool: &str, error: &anyhow::Error) -> String {
    let label = if stderr_color() {
        "\x1b[31merror:\x1b[0m"
    } else {
        "error:"
    };
    format!("{tool}: {label} {error:#}")
}

/// Sizes the way `du -h` prints them (1024-based, one decimal under 10).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{:.1}{}", (value * 10.0).ceil() / 10.0, UNITS[unit])
    } else {
        format!("{:.0}{}", value.ceil(), UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_du() {
        assert_eq!(human_size(512), "512");
        assert_eq!(human_size(4096), "4.0K");
        assert_eq!(human_size(65 * 1024 * 1024), "65M");
        assert_eq!(human_size(1536 * 1024 * 1024), "1.5G");
    }

    #[test]
    fn error_line_has_the_context_chain() {
        let e = anyhow::anyhow!("disk full").context("writing config");
        let line = error_line("vdkr", &e);
        assert!(line.starts_with("vdkr: "));
        assert!(line.ends_with("writing config: disk full"), "{line}");
    }
}
