//! Image names given to vimport: checked before anything runs (so a typo fails on the host,
//! not half-way through a guest import) and completed with `:latest`, which skopeo's
//! docker-daemon transport requires.

use super::error::VimportError;

/// The name an import gets when none is given (the old tool's default).
pub const DEFAULT_NAME: &str = "imported:latest";

fn bad(name: &str, reason: &str) -> VimportError {
    VimportError::BadName {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Splits `name` into (repository, tag, digest); a ':' before the last '/' belongs to a
/// registry port, not a tag.
pub fn split(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// Validates a `[registry[:port]/]path[:tag][@digest]` reference and adds `:latest` when it
/// has neither tag nor digest.
pub fn normalize(name: &str) -> Result<String, VimportError> {
    if name.is_empty() {
        return Err(bad(name, "empty"));
    }
    if name.len() > 255 {
        return Err(bad(name, "longer than 255 characters"));
    }
    if name.starts_with('-') {
        return Err(bad(name, "starts with '-'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/@".contains(*c)))
    {
        return Err(bad(name, &format!("character '{c}' is not allowed")));
    }
    let (repo, tag, digest) = split(name);
    let mut components: Vec<&str> = repo.split('/').collect();
    if components.iter().any(|c| c.is_empty()) {
        return Err(bad(name, "empty path component"));
    }
    // A first component with '.' or ':' (or localhost) is a registry host and may hold a
    // port and upper case; the rest is the repository path, lower case only.
    if components.len() > 1 {
        let host = components[0];
        if host.contains('.') || host.contains(':') || host == "localhost" {
            if let Some((_, port)) = host.split_once(':') {
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(name, "registry port must be a number"));
                }
            }
            components.remove(0);
        }
    }
    for c in &components {
        if c.contains(':') {
            return Err(bad(
                name,
                "':' is only allowed before the tag or in a registry port",
            ));
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(name, "repository names must be lower case"));
        }
        let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        if !edge(c.bytes().next()) || !edge(c.bytes().last()) {
            return Err(bad(
                name,
                "path components must start and end with a letter or digit",
            ));
        }
    }
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !tag.starts_with(['.', '-']);
        if !ok {
            return Err(bad(
                name,
                "invalid tag (letters, digits, '_', '.', '-'; max 128)",
            ));
        }
    }
    if let Some(d) = digest {
        if vcontainer_oci::Digest::parse(d).is_err() {
            return Err(bad(name, "invalid digest after '@'"));
        }
    }
    Ok(if tag.is_none() && digest.is_none() {
        format!("{name}:latest")
    } else {
        name.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_and_keep_registry_ports() {
        assert_eq!(normalize("app").expect("ok"), "app:latest");
        assert_eq!(normalize("app:1.0").expect("ok"), "app:1.0");
        assert_eq!(
            normalize("10.0.2.2:5000/yocto/app").expect("ok"),
            "10.0.2.2:5000/yocto/app:latest"
        );
        assert_eq!(
            normalize("localhost:5000/app:v2").expect("ok"),
            "localhost:5000/app:v2"
        );
        assert_eq!(split("r:5000/a/b:t"), ("r:5000/a/b", Some("t"), None));
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (n, why) in [
            ("", "empty"),
            ("-rm", "starts with '-'"),
            ("App", "lower case"),
            ("a b", "not allowed"),
            ("a:", "invalid tag"),
            ("a//b", "empty path"),
            ("r:x/a", "port"),
            ("a;rm", "not allowed"),
        ] {
            let e = normalize(n).expect_err(n).to_string();
            assert!(e.contains(why), "{n}: {e}");
        }
    }
}
