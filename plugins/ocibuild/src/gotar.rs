//! Tar headers encoded exactly like Go's `archive/tar` writer encodes them.
//!
//! Why not the `tar` crate's builder: umoci (and therefore every existing layer diff_id we
//! want to reproduce) is written by Go's `archive/tar`, and the two differ in small but
//! digest-changing details: Go writes the checksum as six octal digits + NUL + space, always
//! fills devmajor/devminor, picks USTAR whenever it can (splitting long names into the
//! prefix field) and only falls back to PAX for what USTAR cannot hold, names the PAX header
//! `dir/PaxHeaders.0/file`, and sorts PAX records by key. This module mirrors
//! `writer.go`/`format.go`/`strconv.go` of Go 1.2x for the header kinds umoci emits.

use std::collections::BTreeMap;

pub const BLOCK: usize = 512;

pub const TYPE_REG: u8 = b'0';
pub const TYPE_LINK: u8 = b'1';
pub const TYPE_SYMLINK: u8 = b'2';
pub const TYPE_CHAR: u8 = b'3';
pub const TYPE_BLOCK: u8 = b'4';
pub const TYPE_DIR: u8 = b'5';
pub const TYPE_FIFO: u8 = b'6';
const TYPE_PAX: u8 = b'x';

const NAME_SIZE: usize = 100;
const PREFIX_SIZE: usize = 155;

/// One tar entry's metadata, already normalised (names relative, dirs with a trailing `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub typeflag: u8,
    /// Permission bits plus setuid/setgid/sticky (no file-type bits), as Go stores them.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch (already truncated/clamped by the caller).
    pub mtime: i64,
    pub devmajor: u64,
    pub devminor: u64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|&c| c < 0x80 && c != 0)
}

fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect()
}

fn fits_in_octal(field_len: usize, x: i64) -> bool {
    let oct_bits = (field_len as u32 - 1) * 3;
    x >= 0 && (field_len >= 22 || x < (1i64 << oct_bits))
}

/// Go `formatString`: copy, NUL-terminate when there is room, and avoid a trailing `/` in a
/// truncated field.
fn format_string(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
    if s.len() < field.len() {
        field[s.len()] = 0;
    }
    if s.len() > field.len() && field[field.len() - 1] == b'/' {
        let trimmed = s[..field.len() - 1]
            .iter()
            .rposition(|&c| c != b'/')
            .map_or(0, |p| p + 1);
        field[trimmed] = 0;
    }
}

/// Go `formatOctal`: zero-padded octal leaving room for a NUL; values that do not fit
/// become 0 (the caller has already moved them to PAX records).
fn format_octal(field: &mut [u8], x: i64) {
    let x = if fits_in_octal(field.len(), x) { x } else { 0 };
    let digits = format!("{x:o}");
    let width = field.len() - 1;
    let padded = if digits.len() < width {
        format!("{}{}", "0".repeat(width - digits.len()), digits)
    } else {
        digits
    };
    format_string(field, padded.as_bytes());
}

/// Go `splitUSTARPath`.
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= NAME_SIZE || !is_ascii(name) {
        return None;
    } else if length > PREFIX_SIZE + 1 {
        length = PREFIX_SIZE + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&c| c == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > NAME_SIZE || nlen == 0 || i > PREFIX_SIZE {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go `formatPAXRecord`.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut size = key.len() + value.len() + 3;
    size += size.to_string().len();
    let build = |size: usize| {
        let mut r = size.to_string().into_bytes();
        r.push(b' ');
        r.extend_from_slice(key);
        r.push(b'=');
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    };
    let rec = build(size);
    if rec.len() != size {
        return build(rec.len());
    }
    rec
}

/// Go `path.Clean` for the relative paths we produce.
fn clean_path(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in p.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|l| *l != b"..") {
                    parts.pop();
                } else {
                    parts.push(comp);
                }
            }
            _ => parts.push(comp),
        }
    }
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

/// The name Go gives a PAX extended header: `path.Join(dir, "PaxHeaders.0", file)`.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let split = name.iter().rposition(|&c| c == b'/').map_or(0, |p| p + 1);
    let (dir, file) = name.split_at(split);
    let mut joined = Vec::new();
    for part in [dir, b"PaxHeaders.0".as_slice(), file] {
        if part.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(part);
    }
    clean_path(&joined)
}

/// Field offsets of a ustar header block.
mod off {
    pub const NAME: (usize, usize) = (0, 100);
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPE: usize = 156;
    pub const LINK: (usize, usize) = (157, 100);
    pub const MAGIC: (usize, usize) = (257, 6);
    pub const VERSION: (usize, usize) = (263, 2);
    pub const UNAME: (usize, usize) = (265, 32);
    pub const GNAME: (usize, usize) = (297, 32);
    pub const DEVMAJOR: (usize, usize) = (329, 8);
    pub const DEVMINOR: (usize, usize) = (337, 8);
    pub const PREFIX: (usize, usize) = (345, 155);
}

fn field(blk: &mut [u8; BLOCK], f: (usize, usize)) -> &mut [u8] {
    &mut blk[f.0..f.0 + f.1]
}

/// Go `setFormat` for USTAR/PAX: magic, version, then the checksum (6 digits, NUL, space).
fn finish_block(blk: &mut [u8; BLOCK]) {
    field(blk, off::MAGIC).copy_from_slice(b"ustar\0");
    field(blk, off::VERSION).copy_from_slice(b"00");
    field(blk, off::CHKSUM).copy_from_slice(b"        ");
    let sum: i64 = blk.iter().map(|&b| i64::from(b)).sum();
    let ck = field(blk, off::CHKSUM);
    format_octal(&mut ck[..7], sum);
    ck[7] = b' ';
}

/// Go `templateV7Plus`.
fn template(h: &Header, name: &[u8], linkname: &[u8]) -> [u8; BLOCK] {
    let mut blk = [0u8; BLOCK];
    blk[off::TYPE] = h.typeflag;
    format_string(field(&mut blk, off::NAME), name);
    format_string(field(&mut blk, off::LINK), linkname);
    format_octal(field(&mut blk, off::MODE), i64::from(h.mode));
    format_octal(field(&mut blk, off::UID), h.uid as i64);
    format_octal(field(&mut blk, off::GID), h.gid as i64);
    format_octal(field(&mut blk, off::SIZE), h.size as i64);
    format_octal(field(&mut blk, off::MTIME), h.mtime);
    format_string(field(&mut blk, off::UNAME), b"");
    format_string(field(&mut blk, off::GNAME), b"");
    format_octal(field(&mut blk, off::DEVMAJOR), h.devmajor as i64);
    format_octal(field(&mut blk, off::DEVMINOR), h.devminor as i64);
    blk
}

/// Appends the header block(s) for `h` to `out`: one USTAR block when USTAR can hold the
/// entry, else a PAX extended header (+ its records) followed by the main block.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut ustar_ok = true;

    if !is_ascii(&h.name) || h.name.len() > NAME_SIZE {
        if split_ustar_path(&h.name).is_none() {
            ustar_ok = false;
        }
        pax.insert(b"path".to_vec(), h.name.clone());
    }
    if !is_ascii(&h.linkname) || h.linkname.len() > NAME_SIZE {
        ustar_ok = false;
        pax.insert(b"linkpath".to_vec(), h.linkname.clone());
    }
    for (key, value, len) in [
        (b"uid".as_slice(), h.uid as i64, 8usize),
        (b"gid".as_slice(), h.gid as i64, 8),
        (b"size".as_slice(), h.size as i64, 12),
    ] {
        if !fits_in_octal(len, value) {
            ustar_ok = false;
            pax.insert(key.to_vec(), value.to_string().into_bytes());
        }
    }
    if !fits_in_octal(12, h.mtime) {
        ustar_ok = false;
        pax.insert(b"mtime".to_vec(), h.mtime.to_string().into_bytes());
    }
    if !h.xattrs.is_empty() {
        ustar_ok = false;
        for (k, v) in &h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.insert(key, v.clone());
        }
    }

    if ustar_ok {
        let (prefix, name) = match split_ustar_path(&h.name) {
            Some((p, n)) => (p, n),
            None => (&b""[..], &h.name[..]),
        };
        let mut blk = template(h, name, &h.linkname);
        format_string(field(&mut blk, off::PREFIX), prefix);
        finish_block(&mut blk);
        out.extend_from_slice(&blk);
        return;
    }

    // PAX extended header (Go writeRawFile): only name, zero mode/uid/gid/mtime, size.
    let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut xname = to_ascii(&pax_header_name(&h.name));
    xname.truncate(NAME_SIZE);
    while xname.last() == Some(&b'/') {
        xname.pop();
    }
    let mut xblk = [0u8; BLOCK];
    xblk[off::TYPE] = TYPE_PAX;
    format_string(field(&mut xblk, off::NAME), &xname);
    format_octal(field(&mut xblk, off::MODE), 0);
    format_octal(field(&mut xblk, off::UID), 0);
    format_octal(field(&mut xblk, off::GID), 0);
    format_octal(field(&mut xblk, off::SIZE), data.len() as i64);
    format_octal(field(&mut xblk, off::MTIME), 0);
    finish_block(&mut xblk);
    out.extend_from_slice(&xblk);
    out.extend_from_slice(&data);
    pad_to_block(out, data.len() as u64);

    let mut blk = template(h, &to_ascii(&h.name), &to_ascii(&h.linkname));
    finish_block(&mut blk);
    out.extend_from_slice(&blk);
}

/// Zero bytes that complete a data section of `len` bytes to a whole block.
pub fn padding_len(len: u64) -> usize {
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

pub fn pad_to_block(out: &mut Vec<u8>, data_len: u64) {
    out.resize(out.len() + padding_len(data_len), 0);
}

/// The end-of-archive marker: two zero blocks, no record padding (as Go writes it).
pub const TRAILER: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_header_matches_go_layout() {
        let h = Header {
            name: b"etc/".to_vec(),
            typeflag: TYPE_DIR,
            mode: 0o755,
            mtime: 1_700_000_000,
            ..Header::default()
        };
        let mut out = Vec::new();
        encode_header(&h, &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[100..108], b"0000755\0");
        assert_eq!(&out[124..136], b"00000000000\0");
        assert_eq!(&out[329..337], b"0000000\0");
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(out[154], 0);
        assert_eq!(out[155], b' ');
        let sum: u32 = out
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let text = std::str::from_utf8(&out[148..154]).expect("octal");
        assert_eq!(u32::from_str_radix(text, 8).expect("octal"), sum);
    }

    #[test]
    fn long_name_is_split_into_prefix() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let h = Header {
            name: name.clone().into_bytes(),
            typeflag: TYPE_REG,
            ..Header::default()
        };
        let mut out = Vec::new();
        encode_header(&h, &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[345..465], "d".repeat(120).as_bytes());
    }

    #[test]
    fn xattrs_use_pax_with_go_header_name() {
        let mut h = Header {
            name: b"usr/bin/ping".to_vec(),
            typeflag: TYPE_REG,
            mode: 0o755,
            ..Header::default()
        };
        h.xattrs
            .insert(b"security.capability".to_vec(), vec![1, 0, 0, 2]);
        let mut out = Vec::new();
        encode_header(&h, &mut out);
        assert_eq!(out.len(), 3 * BLOCK);
        assert!(out.starts_with(b"usr/bin/PaxHeaders.0/ping\0"));
        assert_eq!(out[156], b'x');
        assert!(out[BLOCK..].starts_with(b"41 SCHILY.xattr.security.capability=\x01\0\0\x02\n"));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n".to_vec());
        let long = vec![b'x'; 95];
        let rec = pax_record(b"path", &long);
        assert_eq!(rec.len(), 105);
        assert!(rec.starts_with(b"105 "));
        // 98 + 3 = 101 -> "101 " makes 104, not 101: the size field grows the record.
        let rec = pax_record(b"path", &[b'y'; 91]);
        assert_eq!(rec.len(), 101);
        assert!(rec.starts_with(b"101 "));
    }

    #[test]
    fn pax_name_of_root_and_dirs() {
        assert_eq!(pax_header_name(b"."), b"PaxHeaders.0".to_vec());
        assert_eq!(pax_header_name(b"a/b/"), b"a/b/PaxHeaders.0".to_vec());
        assert_eq!(pax_header_name(b"f"), b"PaxHeaders.0/f".to_vec());
    }
}
