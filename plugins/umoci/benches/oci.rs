//! `cargo bench -p vcontainer-backend-umoci` (run by `make bench`): on one rootfs made of
//! this host's /usr files (default 200 MB, `VCONTAINER_BENCH_MB`), in the same run:
//!
//! * our umoci-style build vs the `umoci` flow of image-oci (init, new, unpack, copy,
//!   repack, config calls), target at least 3x faster;
//! * our sloci-style build vs `tar -c | gzip` of the rootfs (the floor), target within 1.3x.
//!
//! Fairness: the rootfs is in the page cache before anything is timed, every contender
//! runs once untimed, then `VCONTAINER_BENCH_RUNS` (default 5) rounds run every contender
//! once each, round-robin, so a load spike on this shared host hits all of them; the median
//! of each counts. Each gets its backend's default compression: umoci's pgzip default (a
//! fast encoder), our umoci backend's default (level 3, blobs no larger than umoci's: the
//! bench checks it), GNU gzip's and our sloci backend's level 6. Our umoci-style build at
//! level 6 is listed too. Both builds write the complete image (layer, config, manifest,
//! index); umoci's flow includes its unpack, copy and repack, as image-oci runs it. Prints
//! wall and CPU seconds, blob sizes, ratios and the load average (start, highest, end).
//! Skips the umoci comparison (saying so) when umoci is missing.

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
/// is the steadier figure on a shared, loaded host.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
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

/// 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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

/// Size in MB of the largest file below `dir` (the layer blob of a one-layer layout), or of
/// `dir` itself when it is a file.
fn blob_mb(dir: &Path) -> f64 {
    let mut best = std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    if let Ok(rd) = std::fs::read_dir(dir.join("blobs/sha256")) {
        for e in rd.flatten() {
            best = best.max(e.metadata().map_or(0, |m| m.len()));
        }
    }
    best as f64 / 1048576.0
}

/// One full build (layer, config, manifest, index) into a fresh `out`; the layer's diff_id.
fn ours(
    flavor: Flavor,
    compression: Compression,
    level: Option<i32>,
    rootfs: &Path,
    out: &Path,
) -> Option<String> {
    let req = BuildRequest {
        rootfs: Some(rootfs.to_path_buf()),
        output: out.to_path_buf(),
        config: options(),
        compression,
        compression_level: level,
        source_date_epoch: Some(MTIME),
        flavor,
        ..BuildRequest::default()
    };
    match vcontainer_ocibuild::build(&req, &mut |_| {}) {
        Ok(rep) => rep.layers[0].diff_id.map(|d| d.to_string()),
        Err(e) => {
            eprintln!("build failed: {e}");
            None
        }
    }
}

/// image-oci's umoci flow (no base image, single layer) with its config calls.
fn umoci_flow(rootfs: &Path, out: &Path) -> bool {
    let script = format!(
        r#"
R={r}; O={o}; B={o}.bundle
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
    sh(&script)
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

/// One timed contender: a step that returns whether it worked, and where its output goes.
struct Contender<'a> {
    name: String,
    out: PathBuf,
    step: Box<dyn FnMut(&Path) -> bool + 'a>,
    costs: Vec<Cost>,
    failed: bool,
}

impl Contender<'_> {
    fn run(&mut self) -> Option<Cost> {
        let out = self.out.clone();
        // Clearing the previous run's output is nobody's build time.
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(out.with_extension("bundle"));
        let _ = std::fs::remove_file(&out);
        let (ok, cost) = timed(|| (self.step)(&out));
        if !ok {
            self.failed = true;
        }
        ok.then_some(cost)
    }

    fn median(&self) -> Cost {
        Cost {
            wall: median(self.costs.iter().map(|c| c.wall).collect()),
            cpu: median(self.costs.iter().map(|c| c.cpu).collect()),
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument that is not ours means "not me".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && !a.contains("oci"))
    {
        return;
    }
    let env_num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mb = env_num("VCONTAINER_BENCH_MB").unwrap_or(200);
    let runs = env_num("VCONTAINER_BENCH_RUNS").unwrap_or(5).max(1) as usize;
    // Overrides the level of our default-level rows (both backends).
    let level: Option<i32> = std::env::var("VCONTAINER_BENCH_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok());
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
    let w = work.path().to_path_buf();
    let rootfs = w.join("rootfs");
    let total = match copy_host_rootfs(&rootfs, mb) {
        Ok(t) => t,
        Err(e) => panic!("cannot generate the rootfs: {e}"),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Warm the page cache so every contender reads from memory.
    sh(&format!(
        "tar -C {} -cf - . | cat > /dev/null",
        rootfs.display()
    ));
    let load_start = load1();
    println!(
        "bench-oci: rootfs {:.0} MB in {}, {threads} CPU(s), load average (1 min) {load_start:.2}",
        total as f64 / 1048576.0,
        rootfs.display(),
    );

    let umoci_diff = std::cell::RefCell::new(String::new());
    let r = rootfs.as_path();
    let ours_step = |flavor, comp, lvl: Option<i32>, keep_diff: bool| {
        let umoci_diff = &umoci_diff;
        Box::new(move |out: &Path| match ours(flavor, comp, lvl, r, out) {
            Some(d) => {
                if keep_diff {
                    *umoci_diff.borrow_mut() = d;
                }
                true
            }
            None => false,
        }) as Box<dyn FnMut(&Path) -> bool + '_>
    };
    let mut contenders = vec![
        Contender {
            name: "floor: tar -c | gzip (level 6)".into(),
            out: w.join("floor.tar.gz"),
            step: Box::new(|out: &Path| {
                sh(&format!(
                    "tar -C {} -cf - . | gzip > {}",
                    r.display(),
                    out.display()
                ))
            }),
            costs: Vec::new(),
            failed: false,
        },
        Contender {
            name: format!(
                "ours, sloci-style (gzip, level {})",
                level.map_or("6".into(), |l| l.to_string())
            ),
            out: w.join("sloci"),
            step: ours_step(Flavor::Sloci, Compression::Gzip, level, false),
            costs: Vec::new(),
            failed: false,
        },
        Contender {
            name: "ours, sloci-style (zstd)".into(),
            out: w.join("sloci-zstd"),
            step: ours_step(Flavor::Sloci, Compression::Zstd, None, false),
            costs: Vec::new(),
            failed: false,
        },
        Contender {
            name: format!(
                "ours, umoci-style (gzip, level {})",
                level.unwrap_or(vcontainer_ocibuild::build::UMOCI_GZIP_LEVEL)
            ),
            out: w.join("umoci-ours"),
            step: ours_step(Flavor::Umoci, Compression::Gzip, level, true),
            costs: Vec::new(),
            failed: false,
        },
        Contender {
            name: "ours, umoci-style (gzip, level 6)".into(),
            out: w.join("umoci-ours-6"),
            step: ours_step(Flavor::Umoci, Compression::Gzip, Some(6), false),
            costs: Vec::new(),
            failed: false,
        },
    ];
    let have_umoci = have("umoci");
    if have_umoci {
        contenders.push(Contender {
            name: "umoci: init/new/unpack/cp/repack/config x6".into(),
            out: w.join("umoci-real"),
            step: Box::new(|out: &Path| umoci_flow(r, out)),
            costs: Vec::new(),
            failed: false,
        });
    }
    const FLOOR: usize = 0;
    const SLOCI: usize = 1;
    const UMOCI_OURS: usize = 3;
    const UMOCI_OURS_6: usize = 4;
    const UMOCI: usize = 5;

    // One untimed run each, then round-robin rounds.
    for c in contenders.iter_mut() {
        c.run();
    }
    let mut load_max = load_start.max(load1());
    for _ in 0..runs {
        for c in contenders.iter_mut() {
            if let Some(cost) = c.run() {
                c.costs.push(cost);
            }
            load_max = load_max.max(load1());
        }
    }
    let load_end = load1();

    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        format!("step (median of {runs})"),
        "wall s",
        "cpu s",
        "blob MB"
    );
    for c in &contenders {
        if c.failed {
            println!("{:<44} FAILED", c.name);
            continue;
        }
        let m = c.median();
        println!(
            "{:<44} {:>8.2} {:>8.2} {:>8.1}",
            c.name,
            m.wall,
            m.cpu,
            blob_mb(&c.out)
        );
    }
    println!(
        "load average (1 min): {load_start:.2} at start, {load_max:.2} highest, {load_end:.2} at end, on {threads} CPU(s){}",
        if load_max > threads as f64 * 0.75 {
            " -- a loaded host: wall ratios are less steady, the CPU ratios are the fairer figure"
        } else {
            ""
        }
    );
    let (floor, sloci) = (contenders[FLOOR].median(), contenders[SLOCI].median());
    println!(
        "sloci-style vs floor: {:.2}x the floor's wall time, {:.2}x its CPU time (target <= 1.30)",
        sloci.wall / floor.wall,
        sloci.cpu / floor.cpu
    );
    if !have_umoci {
        println!("SKIP umoci comparison: umoci is not installed");
        return;
    }
    if contenders[UMOCI].failed {
        println!("umoci flow failed; no comparison");
        return;
    }
    let umoci = contenders[UMOCI].median();
    for i in [UMOCI_OURS, UMOCI_OURS_6] {
        let ours = contenders[i].median();
        println!(
            "umoci vs {}: {:.2}x faster wall ({:.2} s vs {:.2} s), {:.2}x less CPU (target >= 3.00)",
            contenders[i].name,
            umoci.wall / ours.wall,
            ours.wall,
            umoci.wall,
            umoci.cpu / ours.cpu
        );
    }
    let (ours_mb, umoci_mb) = (
        blob_mb(&contenders[UMOCI_OURS].out),
        blob_mb(&contenders[UMOCI].out),
    );
    println!(
        "same or better compression than umoci: {} ({ours_mb:.1} MB vs {umoci_mb:.1} MB)",
        if ours_mb <= umoci_mb { "yes" } else { "NO" }
    );
    let same =
        umoci_diff_id(&contenders[UMOCI].out).as_deref() == Some(umoci_diff.borrow().as_str());
    println!(
        "layer diff_id identical to umoci's: {}",
        if same { "yes" } else { "no" }
    );
}
