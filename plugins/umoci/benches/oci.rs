//! `cargo bench -p vcontainer-backend-umoci` (run by `make bench`): on one rootfs made of
//! this host's /usr files (default 200 MB, `VCONTAINER_BENCH_MB`), in the same run:
//!
//! * our umoci-style build vs the `umoci` flow of image-oci (init, new, unpack, copy,
//!   repack, config calls), target at least 3x faster;
//! * our sloci-style build vs `tar -c | gzip` of the rootfs (the floor), target within 1.3x.
//!
//! Each contender runs 3 times (`VCONTAINER_BENCH_RUNS`), the best time counts: the machine
//! is shared. Prints seconds and ratios. Skips the umoci comparison (saying so) when umoci
//! is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vcontainer_ocibuild::{BuildRequest, Compression, Flavor, ImageOptions};

const MTIME: i64 = 1_700_000_000;

/// xorshift64*: deterministic content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const WORDS: &[&str] = &[
    "the",
    "container",
    "image",
    "layer",
    "rootfs",
    "kernel",
    "module",
    "lib",
    "usr",
    "bin",
    "config",
    "static",
    "const",
    "return",
    "function",
    "struct",
    "value",
    "error",
    "path",
    "0x7f454c46",
    "GLIBC_2.34",
    "systemd",
    "service",
    "unit",
    "install",
    "package",
    "version",
];

const OPCODES: &[&[u8]] = &[
    b"\x48\x89\xe5",
    b"\x48\x8b\x45",
    b"\xe8\x00\x00",
    b"\x0f\x1f\x44\x00",
    b"\xc3",
    b"\x55",
    b"\x41\x57\x41\x56",
    b"\x48\x83\xec",
    b"\x31\xc0",
    b"\x89\xc7",
    b"\x74",
    b"\x0f\x85",
];

/// A rootfs of about `mb` megabytes made of real files of this host's /usr (ELF binaries,
/// libraries, text, locale data: what image rootfs trees hold), walked in sorted order so
/// the same host gives the same tree. Falls back to synthetic content if /usr is small.
fn copy_host_rootfs(root: &Path, mb: u64) -> std::io::Result<u64> {
    let target = mb << 20;
    let mut total = 0u64;
    let mut stack = vec![PathBuf::from("/usr")];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => continue,
        };
        entries.sort();
        entries.reverse();
        for p in entries {
            if total >= target {
                break;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() && md.len() <= 16 << 20 {
                let rel = p.strip_prefix("/").unwrap_or(&p);
                let dst = root.join(rel);
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if std::fs::copy(&p, &dst).is_ok() {
                    total += md.len();
                }
            }
        }
        if total >= target {
            break;
        }
    }
    if total < target {
        total += generate_rootfs(&root.join("synthetic"), (target - total) >> 20)?;
    }
    let status = Command::new("find")
        .arg(root)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            &format!("@{MTIME}"),
            "{}",
            "+",
        ])
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other("touch failed"));
    }
    Ok(total)
}

/// A synthetic rootfs of about `mb` megabytes: many small text files (config, scripts, docs), some
/// medium "binaries" (partly compressible), a few large ones, in a directory tree.
fn generate_rootfs(root: &Path, mb: u64) -> std::io::Result<u64> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let target = mb << 20;
    let mut total = 0u64;
    let mut n = 0u64;
    while total < target {
        let dir = root.join(format!(
            "usr/{}/d{:02}/s{:02}",
            ["lib", "share", "bin", "libexec"][(rng.next() % 4) as usize],
            rng.next() % 20,
            rng.next() % 10
        ));
        std::fs::create_dir_all(&dir)?;
        let kind = rng.next() % 100;
        let size = match kind {
            0..=69 => 200 + rng.next() % 16_000,
            70..=96 => 20_000 + rng.next() % 400_000,
            _ => 1_000_000 + rng.next() % 4_000_000,
        };
        let mut data = Vec::with_capacity(size as usize);
        while (data.len() as u64) < size {
            match kind {
                0..=69 => {
                    data.extend_from_slice(
                        WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes(),
                    );
                    data.push(if rng.next() % 9 == 0 { b'\n' } else { b' ' });
                }
                _ => {
                    // Machine-code-like: a small vocabulary of instruction byte groups,
                    // some operands, a little noise (compresses to about half, like ELF
                    // files do); large files carry a bit more noise (data sections).
                    let r = rng.next();
                    let noise = if kind >= 97 { 5 } else { 9 };
                    if r % noise == 0 {
                        data.extend_from_slice(&rng.next().to_le_bytes()[..4]);
                    } else {
                        let op = OPCODES[(r >> 8) as usize % OPCODES.len()];
                        data.extend_from_slice(op);
                        data.push((r >> 24) as u8 & 0x3f);
                    }
                }
            }
        }
        data.truncate(size as usize);
        let p = dir.join(format!("f{n}"));
        std::fs::write(&p, &data)?;
        total += size;
        n += 1;
    }
    // Fixed mtimes (files and dirs) so umoci's layer is comparable with ours.
    let status = Command::new("find")
        .arg(root)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            &format!("@{MTIME}"),
            "{}",
            "+",
        ])
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other("touch failed"));
    }
    Ok(total)
}

fn sh(script: &str) -> bool {
    Command::new("bash")
        .arg("-euc")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success())
}

fn have(tool: &str) -> bool {
    sh(&format!("command -v {tool} >/dev/null"))
}

/// Wall-clock and CPU seconds of one step. CPU time (user + system of this process, its
/// threads and waited-for children) hardly depends on what else runs on the machine, so it
/// is the fairer figure on a shared, loaded host.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
}

impl Cost {
    fn best(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall.min(o.wall),
            cpu: self.cpu.min(o.cpu),
        }
    }
}

/// utime + stime + cutime + cstime of this process from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14..=17 of stat(5); `after` starts at field 3.
    let ticks: f64 = (11..=14).filter_map(|i| f.get(i)).sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let c0 = cpu_seconds();
    let t = Instant::now();
    let r = f();
    let wall = t.elapsed().as_secs_f64();
    (
        r,
        Cost {
            wall,
            cpu: cpu_seconds() - c0,
        },
    )
}

fn options() -> ImageOptions {
    ImageOptions {
        cmd: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/usr/bin:/bin".into()],
        labels: vec!["org.example.app=bench".into()],
        ports: vec!["80".into()],
        author: Some("oe.patch@oe".into()),
        arch: Some("x86_64".into()),
        ..ImageOptions::default()
    }
}

/// Size in MB of the largest file below `dir` (the layer blob of a one-layer layout).
fn layer_mb(dir: &Path) -> f64 {
    let mut best = 0u64;
    if let Ok(rd) = std::fs::read_dir(dir.join("blobs/sha256")) {
        for e in rd.flatten() {
            best = best.max(e.metadata().map_or(0, |m| m.len()));
        }
    }
    best as f64 / 1048576.0
}

fn ours(flavor: Flavor, compression: Compression, rootfs: &Path, out: &Path) -> (String, Cost) {
    let req = BuildRequest {
        rootfs: Some(rootfs.to_path_buf()),
        output: out.to_path_buf(),
        config: options(),
        compression,
        compression_level: std::env::var("VCONTAINER_BENCH_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok()),
        source_date_epoch: Some(MTIME),
        flavor,
        ..BuildRequest::default()
    };
    let (rep, cost) = timed(|| vcontainer_ocibuild::build(&req, &mut |_| {}));
    let rep = match rep {
        Ok(r) => r,
        Err(e) => panic!("build failed: {e}"),
    };
    let diff = rep.layers[0]
        .diff_id
        .map(|d| d.to_string())
        .unwrap_or_default();
    (diff, cost)
}

/// image-oci's umoci flow (no base image, single layer) with 5 config calls.
fn umoci_flow(rootfs: &Path, out: &Path) -> Option<Cost> {
    let script = format!(
        r#"
R={r}; O={o}; B={o}-bundle
umoci init --layout $O
umoci new --image $O:latest
umoci unpack --rootless --image $O:latest $B
cp -r -a --no-preserve=ownership $R/* $B/rootfs
touch -d @{mtime} $B/rootfs
umoci repack --image $O:latest $B
umoci config --image $O:latest --config.label org.example.app=bench
umoci config --image $O:latest --config.env PATH=/usr/bin:/bin
umoci config --image $O:latest --config.exposedports 80
umoci config --image $O:latest --architecture amd64
umoci config --image $O:latest --config.cmd /bin/sh
umoci config --image $O:latest --author oe.patch@oe
rm -rf $B
"#,
        r = rootfs.display(),
        o = out.display(),
        mtime = MTIME
    );
    let (ok, cost) = timed(|| sh(&script));
    ok.then_some(cost)
}

fn umoci_diff_id(layout: &Path) -> Option<String> {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).ok()?).ok()?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(idx["manifests"][0]["digest"].as_str()?)).ok()?)
            .ok()?;
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(m["config"]["digest"].as_str()?)).ok()?).ok()?;
    c["rootfs"]["diff_ids"][0].as_str().map(str::to_string)
}

fn main() {
    // `cargo bench` passes --bench; a filter argument that is not ours means "not me".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && !a.contains("oci"))
    {
        return;
    }
    let mb: u64 = std::env::var("VCONTAINER_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let base = std::env::var_os("VCONTAINER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = match tempfile::Builder::new()
        .prefix("vcontainer-bench-oci-")
        .tempdir_in(&base)
    {
        Ok(w) => w,
        Err(e) => panic!("cannot create a work dir in {}: {e}", base.display()),
    };
    let rootfs = work.path().join("rootfs");
    let total = match copy_host_rootfs(&rootfs, mb) {
        Ok(t) => t,
        Err(e) => panic!("cannot generate the rootfs: {e}"),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench-oci: rootfs {:.0} MB in {}, {threads} CPU(s), load {}",
        total as f64 / 1048576.0,
        rootfs.display(),
        load.split_whitespace().next().unwrap_or("?")
    );
    // Warm the page cache so every contender reads from memory.
    sh(&format!(
        "tar -C {} -cf - . | cat > /dev/null",
        rootfs.display()
    ));

    let floor_out = work.path().join("floor.tar.gz");
    // The machine is shared: every contender runs `runs` times, the best figures count.
    let runs: usize = std::env::var("VCONTAINER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let best = |f: &mut dyn FnMut() -> Cost| (1..runs).fold(f(), |acc, _| acc.best(f()));
    let floor = best(&mut || {
        timed(|| {
            sh(&format!(
                "tar -C {} -cf - . | gzip > {}",
                rootfs.display(),
                floor_out.display()
            ))
        })
        .1
    });
    let ours_best = |flavor, comp, name: &str| {
        let out = work.path().join(name);
        let mut diff = String::new();
        let cost = best(&mut || {
            let _ = std::fs::remove_dir_all(&out);
            let (d, cost) = ours(flavor, comp, &rootfs, &out);
            diff = d;
            cost
        });
        (cost, diff)
    };
    let (umoci_ours, umoci_diff) = ours_best(Flavor::Umoci, Compression::Gzip, "umoci-ours");
    let (sloci, _) = ours_best(Flavor::Sloci, Compression::Gzip, "sloci");
    let (sloci_zstd, _) = ours_best(Flavor::Sloci, Compression::Zstd, "sloci-zstd");

    let mb = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let w = work.path();
    let row = |name: &str, c: Cost, size: f64| {
        println!("{name:<44} {:>8.2} {:>8.2} {:>8.1}", c.wall, c.cpu, size);
    };
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        format!("step (best of {runs})"),
        "wall s",
        "cpu s",
        "blob MB"
    );
    row("floor: tar -c | gzip", floor, mb(&floor_out));
    row(
        "ours, sloci-style (gzip)",
        sloci,
        layer_mb(&w.join("sloci")),
    );
    row(
        "ours, sloci-style (zstd)",
        sloci_zstd,
        layer_mb(&w.join("sloci-zstd")),
    );
    row(
        "ours, umoci-style (gzip)",
        umoci_ours,
        layer_mb(&w.join("umoci-ours")),
    );
    let umoci = if have("umoci") {
        let real = work.path().join("umoci-real");
        let mut failed = false;
        let cost = best(&mut || {
            let _ = std::fs::remove_dir_all(&real);
            umoci_flow(&rootfs, &real).unwrap_or_else(|| {
                failed = true;
                Cost {
                    wall: f64::NAN,
                    cpu: f64::NAN,
                }
            })
        });
        if failed {
            println!("umoci flow failed; no comparison");
            None
        } else {
            row(
                "umoci: init/new/unpack/cp/repack/config x6",
                cost,
                layer_mb(&real),
            );
            Some(cost)
        }
    } else {
        println!("SKIP umoci comparison: umoci is not installed");
        None
    };
    println!(
        "sloci-style vs floor: {:.2}x the floor's wall time, {:.2}x its CPU time (target <= 1.30)",
        sloci.wall / floor.wall,
        sloci.cpu / floor.cpu
    );
    if let Some(umoci) = umoci {
        println!(
            "umoci-style vs umoci: {:.2}x faster wall, {:.2}x less CPU (target >= 3.00)",
            umoci.wall / umoci_ours.wall,
            umoci.cpu / umoci_ours.cpu
        );
        let same = umoci_diff_id(&w.join("umoci-real")).as_deref() == Some(umoci_diff.as_str());
        println!(
            "layer diff_id identical to umoci's: {}",
            if same { "yes" } else { "no" }
        );
    }
}
