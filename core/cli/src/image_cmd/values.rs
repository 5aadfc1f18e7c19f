//! Parsers for single values of the image commands: `k=v` items, ports, architecture
//! spellings, `os/arch[/variant]` platforms and `LAYOUT[:TAG][@PLATFORM]` references.
//! Shared by the clap grammar and the settings file, so both accept exactly the same text.

use std::path::{Path, PathBuf};

use vcontainer_abi::backend::Platform;

/// `KEY=VALUE`, split at the first `=`; the key must not be empty.
pub fn parse_key_value(item: &str) -> Result<(String, String), String> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{item}' is not KEY=VALUE")),
    }
}

/// `80`, `80/tcp`, `53/udp`, `9/sctp` -> the ExposedPorts key, always with the protocol.
pub fn parse_port(item: &str) -> Result<String, String> {
    let (number, proto) = match item.split_once('/') {
        Some((n, p)) => (n, p.to_ascii_lowercase()),
        None => (item, "tcp".to_string()),
    };
    let valid_number = number
        .parse::<u16>()
        .is_ok_and(|n| n > 0 && number.bytes().all(|b| b.is_ascii_digit()));
    if !valid_number {
        return Err(format!(
            "invalid port '{item}': the number must be 1-65535 (PORT or PORT/tcp|udp|sctp)"
        ));
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid port '{item}': protocol '{proto}' is not tcp, udp or sctp"
        ));
    }
    Ok(format!("{number}/{proto}"))
}

/// GOARCH name and implied variant for an architecture as Linux, Yocto or Go spell it
/// (`x86_64` -> amd64, `aarch64` -> arm64, `armv7` -> arm + v7). Names we do not know are
/// passed on lowercased: the backend knows the full GOARCH list and refuses the rest.
pub fn map_arch(arch: &str) -> (String, Option<String>) {
    let a = arch.trim().to_ascii_lowercase();
    if let Ok(guest) = a.parse::<crate::arch::Arch>() {
        return (guest.oci_name().to_string(), None);
    }
    let (goarch, variant) = match a.as_str() {
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", None),
        "arm/v7" => ("arm", Some("v7")),
        "arm/v6" => ("arm", Some("v6")),
        "arm/v5" => ("arm", Some("v5")),
        other if other.starts_with("armv7") => ("arm", Some("v7")),
        other if other.starts_with("armv6") => ("arm", Some("v6")),
        other if other.starts_with("armv5") => ("arm", Some("v5")),
        other => return (other.to_string(), None),
    };
    (goarch.to_string(), variant.map(str::to_string))
}

/// `os/arch[/variant]` (`linux/arm64`, `linux/arm/v7`); the arch may be spelt any way
/// [`map_arch`] knows.
pub fn parse_platform(text: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, variant] => (*os, *arch, Some(*variant)),
        _ => {
            return Err(format!(
                "invalid platform '{text}' (expected os/arch[/variant])"
            ))
        }
    };
    if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
        return Err(format!(
            "invalid platform '{text}' (expected os/arch[/variant])"
        ));
    }
    let (architecture, implied) = map_arch(arch);
    Ok(Platform {
        os: os.to_string(),
        architecture,
        variant: variant.map(str::to_string).or(implied),
    })
}

/// `LAYOUT` or `LAYOUT:TAG`. A path that is an existing directory is taken whole (a layout
/// dir may contain `:`); otherwise the text after the last `:` is the tag, unless it holds a
/// `/` (then it is part of the path).
pub fn split_layout_ref(text: &str) -> (PathBuf, Option<String>) {
    if Path::new(text).is_dir() {
        return (PathBuf::from(text), None);
    }
    match text.rsplit_once(':') {
        Some((path, tag)) if !path.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(text), None),
    }
}

/// `LAYOUT[:TAG][@os/arch[/variant]]`: the platform override is the text after the last `@`
/// when that parses as a platform.
pub fn split_index_input(
    text: &str,
) -> Result<(PathBuf, Option<String>, Option<Platform>), String> {
    if let Some((rest, platform)) = text.rsplit_once('@') {
        if platform.contains('/') && !Path::new(text).is_dir() {
            let platform = parse_platform(platform)?;
            let (path, tag) = split_layout_ref(rest);
            return Ok((path, tag, Some(platform)));
        }
    }
    let (path, tag) = split_layout_ref(text);
    Ok((path, tag, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").as_deref(), Ok("80/tcp"));
        assert_eq!(parse_port("53/UDP").as_deref(), Ok("53/udp"));
        assert_eq!(parse_port("9/sctp").as_deref(), Ok("9/sctp"));
        for bad in ["0", "65536", "http", "80/icmp", "+80", "", "/tcp", "80-90"] {
            assert!(parse_port(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_key_value("a="), Ok(("a".to_string(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn arches_and_platforms() {
        assert_eq!(map_arch("x86_64"), ("amd64".to_string(), None));
        assert_eq!(map_arch("AArch64"), ("arm64".to_string(), None));
        assert_eq!(
            map_arch("armv7a"),
            ("arm".to_string(), Some("v7".to_string()))
        );
        assert_eq!(map_arch("riscv64"), ("riscv64".to_string(), None));
        let p = parse_platform("linux/armv7").expect("platform");
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        let p = parse_platform("linux/arm64/v8").expect("platform");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert!(parse_platform("arm64").is_err());
        assert!(parse_platform("linux//v7").is_err());
    }

    #[test]
    fn layout_refs() {
        let dir = tempfile::tempdir().expect("tmp");
        let odd = dir.path().join("img:1");
        std::fs::create_dir(&odd).expect("mkdir");
        let odd_text = odd.display().to_string();
        assert_eq!(split_layout_ref(&odd_text), (odd.clone(), None));
        assert_eq!(
            split_layout_ref("/x/out:v1"),
            (PathBuf::from("/x/out"), Some("v1".to_string()))
        );
        assert_eq!(split_layout_ref("/x/out"), (PathBuf::from("/x/out"), None));
        let (path, tag, platform) = split_index_input("/x/arm:v1@linux/arm/v7").expect("input");
        assert_eq!(path, PathBuf::from("/x/arm"));
        assert_eq!(tag.as_deref(), Some("v1"));
        assert_eq!(
            platform.map(|p| (p.architecture, p.variant)),
            Some(("arm".to_string(), Some("v7".to_string())))
        );
        assert!(split_index_input("/x/a@linux/").is_err());
        assert_eq!(
            split_index_input("/x/a@b").expect("plain"),
            (PathBuf::from("/x/a@b"), None, None)
        );
    }
}
