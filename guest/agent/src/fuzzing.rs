//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 13 item 5), not an API: the
//! tar unpack behind `PushTar` is private, and the fuzzer must drive exactly that code.

use std::io::Read;
use std::path::Path;

/// Unpacks `tar` into `dest` (absolute) as a `PushTar` request does, without the frame
/// layer; the number of entries written, or the error the host would get.
pub fn push_tar(dest: &Path, tar: &mut dyn Read) -> Result<usize, String> {
    let dest = dest
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dest.display()))?;
    crate::tarx::unpack(dest, tar).map_err(|(kind, message)| format!("{kind:?}: {message}"))
}
