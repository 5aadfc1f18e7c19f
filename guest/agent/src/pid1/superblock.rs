//! Whether the state disk's ext4 superblock says the file system was cleanly unmounted, so
//! the boot can mount it without running `e2fsck -p`.
//!
//! Why: `e2fsck -p` on a clean file system only reads the superblock and exits, but under
//! TCG every boot and every restore pays for translating e2fsck and its libraries again (a
//! restored QEMU has no translated code: docs/snapshot.md). The disk is mounted on every
//! boot and restore, so the check is on the path of every command. This module decides the
//! same thing e2fsck's "clean" test decides (docs/guest-contract.md, "The state disk"); any
//! doubt (unreadable, not ext4, unclean, errors, a journal to replay, a mount count or check
//! interval reached) leaves the decision to e2fsck.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The primary superblock starts 1024 bytes into the device and is 1024 bytes long.
const OFFSET: u64 = 1024;
const LEN: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
/// `s_state`: valid (cleared by the kernel while mounted only without a journal).
const STATE_VALID: u16 = 0x0001;
/// `s_state`: the kernel found errors.
const STATE_ERROR: u16 = 0x0002;
/// `s_feature_incompat`: the journal may hold transactions to replay (set while a journaled
/// file system is mounted, cleared on a clean unmount).
const INCOMPAT_RECOVER: u32 = 0x0004;

/// Why the disk needs e2fsck, or None when the superblock says it is clean.
pub fn needs_check(device: &Path, now_unix: u64) -> Option<String> {
    let mut sb = [0u8; LEN];
    let read = File::open(device).and_then(|f| f.read_exact_at(&mut sb, OFFSET));
    match read {
        Ok(()) => unclean(&sb, now_unix),
        Err(e) => Some(format!("superblock unreadable: {e}")),
    }
}

/// The fields of `struct ext4_super_block` this needs, at their on-disk offsets
/// (little-endian).
fn unclean(sb: &[u8; LEN], now_unix: u64) -> Option<String> {
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let mnt_count = u16_at(0x34);
    let max_mnt_count = u16_at(0x36) as i16;
    let (magic, state) = (u16_at(0x38), u16_at(0x3A));
    let (last_check, check_interval) = (u32_at(0x40), u32_at(0x44));
    let incompat = u32_at(0x60);
    if magic != EXT4_MAGIC {
        return Some("no ext4 superblock".into());
    }
    if state & STATE_VALID == 0 {
        return Some("not cleanly unmounted".into());
    }
    if state & STATE_ERROR != 0 {
        return Some("the kernel recorded errors".into());
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Some("the journal needs recovery".into());
    }
    if max_mnt_count > 0 && mnt_count >= max_mnt_count as u16 {
        return Some("maximal mount count reached".into());
    }
    if check_interval > 0 && now_unix >= u64::from(last_check) + u64::from(check_interval) {
        return Some("check interval reached".into());
    }
    None
}

/// Reads the whole first 2 KiB (boot block + superblock) of an image, for tests.
#[cfg(test)]
fn read_superblock(path: &Path) -> [u8; LEN] {
    use std::io::Read;
    let mut all = [0u8; 2048];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut all))
        .expect("read image");
    let mut sb = [0u8; LEN];
    sb.copy_from_slice(&all[1024..]);
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> [u8; LEN] {
        let mut sb = [0u8; LEN];
        sb[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x3A..0x3C].copy_from_slice(&STATE_VALID.to_le_bytes());
        sb[0x36..0x38].copy_from_slice(&(-1i16).to_le_bytes());
        sb
    }

    #[test]
    fn only_a_clean_superblock_skips_the_check() {
        assert_eq!(unclean(&clean(), 1000), None);
        type Spoil = fn(&mut [u8; LEN]);
        let cases: [(Spoil, &str); 6] = [
            (|sb| sb[0x38] = 0, "no ext4 superblock"),
            (|sb| sb[0x3A] = 0, "not cleanly unmounted"),
            (|sb| sb[0x3A] = 0x3, "the kernel recorded errors"),
            (|sb| sb[0x60] = 0x4, "the journal needs recovery"),
            (
                |sb| {
                    sb[0x34] = 20;
                    sb[0x36..0x38].copy_from_slice(&20i16.to_le_bytes());
                },
                "maximal mount count reached",
            ),
            (
                |sb| {
                    sb[0x40..0x44].copy_from_slice(&100u32.to_le_bytes());
                    sb[0x44..0x48].copy_from_slice(&900u32.to_le_bytes());
                },
                "check interval reached",
            ),
        ];
        for (spoil, why) in cases {
            let mut sb = clean();
            spoil(&mut sb);
            assert_eq!(unclean(&sb, 1000).as_deref(), Some(why));
        }
    }

    #[test]
    fn a_missing_device_is_left_to_e2fsck() {
        let why = needs_check(Path::new("/nonexistent/vdb"), 0).expect("needs check");
        assert!(why.starts_with("superblock unreadable"), "{why}");
    }

    /// The offsets above against a real file system made by mke2fs, as the state disk is
    /// (the host's e2fsprogs, which `scripts/setup-host.sh` installs).
    #[test]
    fn a_fresh_mkfs_image_is_clean_and_one_left_mounted_is_not() {
        let t = tempfile::tempdir().expect("tmp");
        let img = t.path().join("state.img");
        File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image");
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "vcstate"])
            .arg(&img)
            .status();
        match made {
            Ok(st) => assert!(st.success(), "mkfs.ext4: {st}"),
            Err(e) => {
                assert!(
                    std::env::var("VCONTAINER_E2E").as_deref() != Ok("1"),
                    "VCONTAINER_E2E is set but mkfs.ext4 cannot run: {e}"
                );
                return;
            }
        }
        let now = 2_000_000_000;
        assert_eq!(needs_check(&img, now), None);
        let mut sb = read_superblock(&img);
        assert_eq!(unclean(&sb, now), None);
        // what the kernel leaves on a journaled file system that was not unmounted
        sb[0x60] |= INCOMPAT_RECOVER as u8;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .expect("open");
        f.write_all_at(&sb, OFFSET).expect("write");
        assert_eq!(
            needs_check(&img, now).as_deref(),
            Some("the journal needs recovery")
        );
    }
}
