//! The image configuration options of image-oci (entrypoint, cmd, env, labels, ports, ...)
//! and how they are applied to an image config: GOARCH names, `80` -> `80/tcp`, env entries
//! replaced in place by name, labels merged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{ContainerConfig, ImageConfig};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageOptions {
    /// Already split into words (see [`split_words`]); `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` items.
    pub env: Vec<String>,
    /// `key=value` items.
    pub labels: Vec<String>,
    /// `80`, `80/tcp`, `53/udp`.
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_signal: Option<String>,
    pub author: Option<String>,
    /// Any spelling: `x86_64`, `amd64`, `aarch64`, `armv7`, ...
    pub arch: Option<String>,
    /// Overrides the variant derived from `arch`.
    pub variant: Option<String>,
    pub os: Option<String>,
}

/// Shell-word splitting of an ENTRYPOINT/CMD string (`/bin/sh -c 'echo hi'`).
pub fn split_words(s: &str) -> Result<Vec<String>> {
    shell_words::split(s).map_err(|e| Error::invalid(format!("cannot split {s:?}: {e}")))
}

/// GOARCH name and variant for an architecture name as Yocto, uname or Go spell it.
pub fn map_arch(arch: &str) -> Result<(String, Option<String>)> {
    let a = arch.trim().to_ascii_lowercase();
    let (goarch, variant): (&str, Option<&str>) = match a.as_str() {
        "x86_64" | "amd64" | "x86-64" => ("amd64", None),
        "aarch64" | "arm64" | "aarch64_be" => ("arm64", None),
        "arm64/v8" | "aarch64/v8" => ("arm64", Some("v8")),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", None),
        "riscv64" => ("riscv64", None),
        "ppc64le" | "powerpc64le" => ("ppc64le", None),
        "ppc64" | "powerpc64" => ("ppc64", None),
        "mips64el" | "mips64le" => ("mips64le", None),
        "mips64" => ("mips64", None),
        "mipsel" | "mipsle" => ("mipsle", None),
        "mips" => ("mips", None),
        "loongarch64" | "loong64" => ("loong64", None),
        "s390x" => ("s390x", None),
        "arm" => ("arm", None),
        other if other.starts_with("armv7") || other == "arm/v7" => ("arm", Some("v7")),
        other if other.starts_with("armv6") || other == "arm/v6" => ("arm", Some("v6")),
        other if other.starts_with("armv5") || other == "arm/v5" => ("arm", Some("v5")),
        other if other.starts_with("arm") => ("arm", None),
        _ => {
            return Err(Error::invalid(format!(
                "unknown architecture {arch:?} (use a GOARCH name such as amd64, arm64, arm)"
            )))
        }
    };
    Ok((goarch.to_string(), variant.map(str::to_string)))
}

/// `80` -> `80/tcp`; `53/udp` kept; anything else refused.
pub fn normalize_port(p: &str) -> Result<String> {
    let (num, proto) = match p.split_once('/') {
        Some((n, pr)) => (n, pr.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    let valid_num = |n: &str| !n.is_empty() && n.parse::<u16>().is_ok_and(|v| v > 0);
    let range_ok = match num.split_once('-') {
        Some((a, b)) => valid_num(a) && valid_num(b),
        None => valid_num(num),
    };
    if !range_ok || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::invalid(format!(
            "invalid port {p:?} (expected PORT or PORT/tcp|udp|sctp)"
        )));
    }
    Ok(format!("{num}/{proto}"))
}

fn split_kv<'a>(item: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Error::invalid(format!(
            "invalid {what} {item:?} (expected KEY=VALUE)"
        ))),
    }
}

pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

impl ImageOptions {
    /// Checks every option before anything is written.
    pub fn validate(&self) -> Result<()> {
        for e in &self.env {
            split_kv(e, "environment variable")?;
        }
        for l in &self.labels {
            split_kv(l, "label")?;
        }
        for p in &self.ports {
            normalize_port(p)?;
        }
        if let Some(a) = &self.arch {
            map_arch(a)?;
        }
        Ok(())
    }

    /// Applies the options to `cfg` (a fresh config or a base image's).
    pub fn apply(&self, cfg: &mut ImageConfig) -> Result<()> {
        let arch = match &self.arch {
            Some(a) => Some(map_arch(a)?),
            None if cfg.architecture.is_empty() => Some(map_arch(host_arch())?),
            None => None,
        };
        if let Some((goarch, variant)) = arch {
            cfg.architecture = goarch;
            cfg.variant = variant;
        }
        if let Some(v) = &self.variant {
            cfg.variant = if v.is_empty() { None } else { Some(v.clone()) };
        }
        if let Some(os) = &self.os {
            cfg.os = os.clone();
        }
        if cfg.os.is_empty() {
            cfg.os = "linux".into();
        }
        if let Some(a) = &self.author {
            cfg.author = Some(a.clone());
        }
        apply_container(&mut cfg.config, self)
    }
}

fn apply_container(c: &mut ContainerConfig, o: &ImageOptions) -> Result<()> {
    if !o.env.is_empty() {
        let env = c.env.get_or_insert_with(Vec::new);
        for item in &o.env {
            let (name, _) = split_kv(item, "environment variable")?;
            let prefix = format!("{name}=");
            match env
                .iter_mut()
                .find(|e| e.starts_with(&prefix) || *e == name)
            {
                Some(slot) => *slot = item.clone(),
                None => env.push(item.clone()),
            }
        }
    }
    if !o.labels.is_empty() {
        let labels = c.labels.get_or_insert_with(BTreeMap::new);
        for item in &o.labels {
            let (k, v) = split_kv(item, "label")?;
            labels.insert(k.to_string(), v.to_string());
        }
    }
    if !o.ports.is_empty() {
        let ports = c.exposed_ports.get_or_insert_with(BTreeMap::new);
        for p in &o.ports {
            ports.insert(normalize_port(p)?, serde_json::json!({}));
        }
    }
    if !o.volumes.is_empty() {
        let vols = c.volumes.get_or_insert_with(BTreeMap::new);
        for v in &o.volumes {
            vols.insert(v.clone(), serde_json::json!({}));
        }
    }
    if let Some(ep) = &o.entrypoint {
        c.entrypoint = if ep.is_empty() {
            None
        } else {
            Some(ep.clone())
        };
        // As in a Dockerfile: a new ENTRYPOINT drops the CMD inherited from a base image.
        if o.cmd.is_none() {
            c.cmd = None;
        }
    }
    if let Some(cmd) = &o.cmd {
        c.cmd = if cmd.is_empty() {
            None
        } else {
            Some(cmd.clone())
        };
    }
    if let Some(u) = &o.user {
        c.user = Some(u.clone());
    }
    if let Some(w) = &o.workdir {
        c.working_dir = Some(w.clone());
    }
    if let Some(s) = &o.stop_signal {
        c.stop_signal = Some(s.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(map_arch("x86_64").expect("ok"), ("amd64".into(), None));
        assert_eq!(map_arch("aarch64").expect("ok"), ("arm64".into(), None));
        assert_eq!(
            map_arch("armv7").expect("ok"),
            ("arm".into(), Some("v7".into()))
        );
        assert_eq!(
            map_arch("armv7a").expect("ok"),
            ("arm".into(), Some("v7".into()))
        );
        assert!(map_arch("vax").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(normalize_port("80").expect("ok"), "80/tcp");
        assert_eq!(normalize_port("80/tcp").expect("ok"), "80/tcp");
        assert_eq!(normalize_port("53/udp").expect("ok"), "53/udp");
        assert!(normalize_port("http").is_err());
        assert!(normalize_port("80/foo").is_err());
    }

    #[test]
    fn env_replaced_in_place_and_entrypoint_drops_cmd() {
        let mut cfg = ImageConfig::default();
        cfg.config.env = Some(vec!["PATH=/bin".into(), "A=1".into()]);
        cfg.config.cmd = Some(vec!["/bin/sh".into()]);
        let o = ImageOptions {
            env: vec!["PATH=/usr/bin:/bin".into(), "B=2".into()],
            entrypoint: Some(split_words("/bin/sh -c 'echo hi'").expect("words")),
            arch: Some("armv7".into()),
            ..ImageOptions::default()
        };
        o.apply(&mut cfg).expect("apply");
        assert_eq!(
            cfg.config.env.as_deref(),
            Some(&["PATH=/usr/bin:/bin".to_string(), "A=1".into(), "B=2".into()][..])
        );
        assert_eq!(
            cfg.config.entrypoint.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
        assert_eq!(cfg.config.cmd, None);
        assert_eq!(cfg.architecture, "arm");
        assert_eq!(cfg.variant.as_deref(), Some("v7"));
        assert_eq!(cfg.os, "linux");
    }
}
