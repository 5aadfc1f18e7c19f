//! The `vcontainer.*` keys of the kernel command line (the guest boot contract).

use std::path::PathBuf;

/// What the host told the guest at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `vcontainer.runtime=`: "docker", "podman", ... ("" when absent).
    pub runtime: String,
    /// `vcontainer.state=`: the state disk device, `None` for `none` or when absent.
    pub state_device: Option<PathBuf>,
    /// `vcontainer.storage=`: where the state disk is mounted (the runtime's storage).
    pub storage: Option<PathBuf>,
    /// `vcontainer.port=`: the vsock port to listen on.
    pub port: u32,
    /// `vcontainer.debug=1`: more console output.
    pub debug: bool,
    /// `vcontainer.snapshot=1`: this boot is saved as a snapshot (docs/snapshot.md): no
    /// storage at boot, the secret re-read per connection, `Resume` after each restore.
    pub snapshot: bool,
}

impl BootConfig {
    pub fn parse(cmdline: &str) -> Self {
        let mut config = Self {
            runtime: String::new(),
            state_device: None,
            storage: None,
            port: vcontainer_proto::AGENT_VSOCK_PORT,
            debug: false,
            snapshot: false,
        };
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "vcontainer.runtime" => config.runtime = value.to_owned(),
                "vcontainer.state" => {
                    config.state_device = match value {
                        "" | "none" => None,
                        dev => Some(PathBuf::from(dev)),
                    }
                }
                "vcontainer.storage" if value.starts_with('/') => {
                    config.storage = Some(PathBuf::from(value));
                }
                "vcontainer.port" => {
                    if let Ok(port) = value.parse() {
                        config.port = port;
                    }
                }
                "vcontainer.debug" => config.debug = value == "1",
                "vcontainer.snapshot" => config.snapshot = value == "1",
                _ => {}
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_keys() {
        let c = BootConfig::parse(
            "console=ttyS0 quiet panic=-1 vcontainer.runtime=docker vcontainer.state=/dev/vdb \
             vcontainer.storage=/var/lib/docker vcontainer.port=2000 vcontainer.debug=1\n",
        );
        assert_eq!(c.runtime, "docker");
        assert_eq!(c.state_device, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(c.storage, Some(PathBuf::from("/var/lib/docker")));
        assert_eq!(c.port, 2000);
        assert!(c.debug);
        assert!(!c.snapshot);
        assert!(BootConfig::parse("vcontainer.snapshot=1").snapshot);
    }

    #[test]
    fn defaults_and_none() {
        let c =
            BootConfig::parse("vcontainer.state=none vcontainer.port=bad vcontainer.storage=rel");
        assert_eq!(c.state_device, None);
        assert_eq!(c.storage, None);
        assert_eq!(c.port, vcontainer_proto::AGENT_VSOCK_PORT);
        assert!(!c.debug);
        assert_eq!(c.runtime, "");
    }
}
