//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 13 item 5), not an API: the
//! copy-mode sync-back that applies a guest tar onto a host volume dir is private to the
//! runner, and the fuzzer must drive exactly that code.

use std::io::Read;
use std::path::Path;

/// What one sync-back did: entries written and deleted, and the skip messages.
pub type SyncCounts = (usize, usize, Vec<String>);

/// Records `root` as pushed (the manifest `-v` keeps), then applies `tar` (the stream a
/// guest sends back, entries `./...`) onto it as the sync-back after a run does.
pub fn sync_back_tree(root: &Path, tar: &mut dyn Read) -> Result<SyncCounts, String> {
    let pushed = super::volumes::scan(root).map_err(|e| format!("{e:#}"))?;
    let report = super::volumes::apply_tree(root, &pushed, tar).map_err(|e| format!("{e:#}"))?;
    Ok((report.written, report.deleted, report.skipped))
}
