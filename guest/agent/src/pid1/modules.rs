//! Loading the kernel modules the guest needs (listed by the image builder).

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::log;

/// `MODULE_INIT_COMPRESSED_FILE`: let the kernel decompress .ko.xz/.zst/.gz itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// Load every module named in `list` (one path per line, relative to
/// `/lib/modules/<release>/`, in dependency order). Missing list: nothing to do. Failures
/// are logged and returned as warnings; a module that is already loaded is fine.
pub fn load_listed(list: &Path, release: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Vec::new();
    };
    let base = Path::new("/lib/modules").join(release);
    let mut warnings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = base.join(line);
        match load(&path) {
            Ok(()) => {}
            Err(e) => {
                let text = format!("module {}: {e}", path.display());
                log!("{text}");
                warnings.push(text);
            }
        }
    }
    warnings
}

/// Load one module file (already loaded counts as done).
pub fn load(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let compressed = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("xz" | "zst" | "gz")
    );
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    let params = CString::default();
    match finit_module(&file, &params, flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.desc().to_owned()),
    }
}
