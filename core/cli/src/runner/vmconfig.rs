//! The VM layer's config for one invocation, from the front's context and the plugin's spec.

use std::path::Path;

use vcontainer_abi::runtime::RuntimeSpec;

use crate::context::RuntimeContext;
use crate::vm::{PortForward, VmConfig};

/// The VmConfig for `state_dir` (the context's state dir, or a private batch dir).
pub fn build(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    state_dir: &Path,
    state_disk: bool,
    port_forwards: Vec<PortForward>,
) -> VmConfig {
    let mut cfg = VmConfig::new(ctx.arch, &ctx.tool.runtime, state_dir);
    cfg.blob_dir = ctx.options.blob_dir.clone();
    cfg.blob_env = Some(ctx.tool.env_var_name("BLOB_DIR"));
    cfg.storage_path = spec.guest_storage_path.to_string();
    cfg.state_disk = state_disk;
    cfg.memory_mib = u32::try_from(ctx.settings.memory_mib).unwrap_or(u32::MAX);
    cfg.cpus = u32::try_from(ctx.settings.cpus).unwrap_or(u32::MAX).max(1);
    cfg.no_kvm = ctx.options.no_kvm;
    cfg.idle_timeout_secs = ctx.settings.idle_timeout_secs;
    cfg.debug = ctx.settings.verbose && std::env::var_os("VCONTAINER_GUEST_DEBUG").is_some();
    cfg.port_forwards = port_forwards;
    cfg
}
