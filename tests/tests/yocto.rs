//! Yocto drop-in (issue 12): the container-cross-install class's exact `vrunner.sh` call,
//! run against the built binary under that name, produces a storage tar that, extracted as
//! the class extracts it, is a storage the target's runtime reads (podman: vfs; docker:
//! overlay2): its images are listed and run. An additive second batch (`--input-storage`)
//! keeps the first images; a batch running at the same time does not mix with it; bad
//! entries fail before any boot and leave no `--output`; the `--timeout` gives exit 124
//! and no output. Nothing is written under the user's HOME or left in `$TMPDIR`.
//!
//! VM boots per runtime: batch, target check, two concurrent batches; plus, for podman, one
//! timeout run and the report (vimport by hand, then a batch: two boots).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vcontainer_tests::fixtures::BusyboxLayouts;
use vcontainer_tests::{blob_root, stderr, stdout, vm_or_skip, World};

/// What the class passes: 180 s + 600 s per image.
const CLASS_TIMEOUT: &str = "1980";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// The test images: a two-layer one, a multi-arch index, a plain one, and two more for the
/// second and the concurrent batch.
struct Images {
    layouts: BusyboxLayouts,
    multi_layer: PathBuf,
    multi_arch: PathBuf,
    plain: PathBuf,
    added: PathBuf,
    other: PathBuf,
    arm_only: PathBuf,
}

impl Images {
    fn new() -> Option<Images> {
        let layouts = match BusyboxLayouts::new() {
            Ok(l) => l,
            Err(e) => {
                vcontainer_tests::skip(e);
                return None;
            }
        };
        let multi_layer = layouts.single("ml", "amd64").expect("ml");
        // a second layer on top of busybox: /etc/layer2
        let extra = layouts.dir.path().join("extra");
        std::fs::create_dir_all(extra.join("etc")).expect("mkdir");
        std::fs::write(extra.join("etc/layer2"), "second layer\n").expect("write");
        let extra_tar = layouts.dir.path().join("extra.tar");
        run_ok(
            Command::new("tar")
                .arg("-cf")
                .arg(&extra_tar)
                .arg("-C")
                .arg(&extra)
                .arg("etc"),
        );
        run_ok(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(format!("{}:latest", multi_layer.display()))
                .arg(&extra_tar),
        );
        let multi_arch = layouts.multi("ma", &["arm64", "amd64"], false).expect("ma");
        let plain = layouts.single("plain", "amd64").expect("plain");
        let added = layouts.single("added", "amd64").expect("added");
        let other = layouts.single("other", "amd64").expect("other");
        let arm_only = layouts.single("armonly", "arm64").expect("armonly");
        Some(Images {
            layouts,
            multi_layer,
            multi_arch,
            plain,
            added,
            other,
            arm_only,
        })
    }
}

/// One runtime's view: its names and where the class puts its storage.
struct Rt {
    runtime: &'static str,
    tool: &'static str,
}

impl Rt {
    /// Where the class extracts the tar, relative to the rootfs.
    fn extract_dir(&self) -> &'static str {
        match self.runtime {
            "docker" => "var/lib",
            _ => "var/lib/containers/storage",
        }
    }
}

/// A private HOME and TMPDIR, a blob dir laid out as the class's deploy dir
/// (`<deploy>/<vdkr|vpdmn>/<arch>/`), and the class's command line.
struct Class {
    world: World,
    tmp: PathBuf,
    blob_dir: PathBuf,
    rt: Rt,
}

impl Class {
    fn new(rt: Rt) -> Class {
        let world = World::new();
        let tmp = world.home.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let blob_dir = world.home.path().join("deploy").join(rt.tool);
        std::fs::create_dir_all(&blob_dir).expect("deploy");
        std::os::unix::fs::symlink(
            blob_root().join("x86_64").join(rt.runtime),
            blob_dir.join("x86_64"),
        )
        .expect("blob link");
        Class {
            world,
            tmp,
            blob_dir,
            rt,
        }
    }

    /// `vrunner.sh --no-daemon --runtime R --arch x86_64 --blob-dir D --batch-import
    /// --timeout T --output OUT --verbose [--input-storage IN] -- entries...`
    fn vrunner(&self, output: &Path, input: Option<&Path>, entries: &[String]) -> Command {
        self.vrunner_with(output, input, entries, CLASS_TIMEOUT)
    }

    fn vrunner_with(
        &self,
        output: &Path,
        input: Option<&Path>,
        entries: &[String],
        timeout: &str,
    ) -> Command {
        let mut c = self.world.cmd("vrunner.sh");
        c.env_remove("VCONTAINER_BLOB_DIR")
            .env("TMPDIR", &self.tmp)
            .args(["--no-daemon", "--runtime", self.rt.runtime])
            .args(["--arch", "x86_64", "--blob-dir", p(&self.blob_dir)])
            .args(["--batch-import", "--timeout", timeout])
            .args(["--output", p(output), "--verbose"]);
        if let Some(input) = input {
            c.args(["--input-storage", p(input)]);
        }
        c.arg("--").args(entries);
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.world.home.path().join(name)
    }

    /// Nothing under HOME's state dirs, nothing left in TMPDIR.
    fn assert_clean(&self) {
        for d in [".vdkr", ".vpdmn"] {
            assert!(
                !self.world.home.path().join(d).exists(),
                "the batch wrote under ~/{d}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .expect("ls tmp")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

fn entry(path: &Path, name: &str) -> String {
    format!("{}:{name}", path.display())
}

/// The names in a storage tar, from the runtime's image index inside it.
fn names_in(rt: &Rt, tar: &Path) -> String {
    let member = match rt.runtime {
        "docker" => "docker/image/overlay2/repositories.json",
        _ => "*vfs-images/images.json",
    };
    let o = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(tar)
            .arg("--wildcards")
            .arg(member),
    );
    stdout(&o)
}

fn listing(tar: &Path) -> String {
    stdout(&run_ok(Command::new("tar").arg("-tf").arg(tar)))
}

/// The whole flow for one runtime.
fn class_flow(rt: Rt) {
    let Some(images) = Images::new() else { return };
    let class = Class::new(rt);
    let rt = &class.rt;
    let first = [
        entry(&images.multi_layer, "yocto-ml:1"),
        entry(&images.multi_arch, "yocto-multi:2"),
        entry(&images.plain, "yocto-plain:3"),
    ];

    // 1. the class's call
    let out1 = class.path(&format!("{}-storage-1.tar", rt.runtime));
    let started = std::time::Instant::now();
    let o = run_ok(&mut class.vrunner(&out1, None, &first));
    eprintln!("batch of 3: {:?}", started.elapsed());
    let files = listing(&out1);
    match rt.runtime {
        "docker" => {
            assert!(
                files.lines().all(|l| l.starts_with("docker/")),
                "docker entries start with docker/:\n{files}"
            );
            assert!(files.contains("docker/overlay2/"), "{files}");
        }
        _ => {
            assert!(
                files.lines().all(|l| !l.starts_with('/')
                    && !l.starts_with("..")
                    && !l.starts_with("storage/")),
                "podman entries are relative to the graph root:\n{files}"
            );
            assert!(files.contains("./vfs-images/"), "not vfs:\n{files}");
            assert!(
                !files.contains("overlay-images"),
                "overlay storage:\n{files}"
            );
        }
    }
    assert!(stderr(&o).contains("storage exported"), "{}", stderr(&o));
    class.assert_clean();

    // 2. extract exactly as the class does into a fresh target rootfs
    let rootfs = class.path("rootfs");
    let dest = rootfs.join(rt.extract_dir());
    std::fs::create_dir_all(&dest).expect("mkdir rootfs");
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&out1)
            .arg("-C")
            .arg(&dest)
            .arg("--no-same-owner"),
    );
    // the target's storage as a tar again, packed from the extracted tree, and a guest
    // booted on it: the runtime configured as on the target (podman: vfs) lists and runs
    // every image
    let target_tar = class.path("target-storage.tar");
    let (dir, what) = match rt.runtime {
        "docker" => (rootfs.join("var/lib"), "docker"),
        _ => (dest.clone(), "."),
    };
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&target_tar)
            .arg("-C")
            .arg(&dir)
            .arg(what),
    );
    let bin = rt.runtime;
    let script = format!(
        "set -e
echo DRIVER=$({bin} info --format '{{{{.{driver}}}}}')
{bin} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | sed 's/^/IMAGE=/'
echo RUN1=$({bin} run --rm yocto-ml:1 cat /etc/layer2)
echo RUN2=$({bin} run --rm yocto-multi:2 uname -m)
echo RUN3=$({bin} run --rm yocto-plain:3 echo plain-ok)
",
        driver = match bin {
            "docker" => "Driver",
            _ => "Store.GraphDriverName",
        }
    );
    let mut check = class.world.cmd(rt.tool);
    check
        .env("TMPDIR", &class.tmp)
        .args(["--no-daemon", "--stateless"]);
    if rt.runtime == "podman" {
        // the target's storage.conf says vfs
        check.args(["--storage-driver", "vfs"]);
    }
    check
        .args(["--input-storage", p(&target_tar)])
        .args(["vshell", "-c", &script]);
    let o = run_ok(&mut check);
    let seen = stdout(&o);
    let driver = match bin {
        "docker" => "DRIVER=overlay2",
        _ => "DRIVER=vfs",
    };
    assert!(seen.contains(driver), "{seen}");
    for name in ["yocto-ml:1", "yocto-multi:2", "yocto-plain:3"] {
        assert!(
            seen.lines()
                .any(|l| l.starts_with("IMAGE=") && l.ends_with(name)),
            "{name} not listed:\n{seen}"
        );
    }
    assert!(seen.contains("RUN1=second layer"), "{seen}");
    assert!(seen.contains("RUN2=x86_64"), "{seen}");
    assert!(seen.contains("RUN3=plain-ok"), "{seen}");

    // 3. an additive second batch from the first result, while another batch runs
    let out2 = class.path("storage-2.tar");
    let out3 = class.path("storage-3.tar");
    let mut additive = class.vrunner(&out2, Some(&out1), &[entry(&images.added, "yocto-add:4")]);
    let mut other = class.vrunner(&out3, None, &[entry(&images.other, "yocto-other:5")]);
    let started = std::time::Instant::now();
    for c in [&mut additive, &mut other] {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let a = additive.spawn().expect("spawn additive");
    let b = other.spawn().expect("spawn other");
    let a = a.wait_with_output().expect("additive");
    let b = b.wait_with_output().expect("other");
    eprintln!("two concurrent batches: {:?}", started.elapsed());
    assert!(a.status.success(), "additive: {}", stderr(&a));
    assert!(b.status.success(), "other: {}", stderr(&b));
    let all = names_in(rt, &out2);
    for name in ["yocto-ml", "yocto-multi", "yocto-plain", "yocto-add"] {
        assert!(
            all.contains(name),
            "{name} missing after the additive batch:\n{all}"
        );
    }
    assert!(!all.contains("yocto-other"), "batches mixed:\n{all}");
    let alone = names_in(rt, &out3);
    assert!(alone.contains("yocto-other"), "{alone}");
    for name in ["yocto-ml", "yocto-add"] {
        assert!(!alone.contains(name), "batches mixed ({name}):\n{alone}");
    }
    class.assert_clean();
    drop(images.layouts);
}

#[test]
fn docker_class_flow() {
    vm_or_skip!("docker");
    class_flow(Rt {
        runtime: "docker",
        tool: "vdkr",
    });
}

#[test]
fn podman_class_flow() {
    vm_or_skip!("podman");
    class_flow(Rt {
        runtime: "podman",
        tool: "vpdmn",
    });
}

/// The timeout bounds the whole batch: exit 124, a message, nothing at --output or in
/// TMPDIR.
#[test]
fn timeout_stops_the_batch_and_writes_nothing() {
    vm_or_skip!("podman");
    let Some(images) = Images::new() else { return };
    let class = Class::new(Rt {
        runtime: "podman",
        tool: "vpdmn",
    });
    let out = class.path("storage.tar");
    let o = class
        .vrunner_with(&out, None, &[entry(&images.plain, "p:1")], "1")
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timeout"), "{}", stderr(&o));
    assert!(!out.exists(), "output written");
    let in_home: Vec<_> = std::fs::read_dir(class.world.home.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vcontainer-"))
        .collect();
    assert!(in_home.is_empty(), "half-written temp files: {in_home:?}");
    class.assert_clean();
}

/// The report: an image imported by hand into the user's state was exported with a
/// later batch. The batch now runs on its own state: only its images are in the tar.
#[test]
fn vimport_batch_does_not_export_the_users_images() {
    vm_or_skip!("podman");
    let Some(images) = Images::new() else { return };
    let rt = Rt {
        runtime: "podman",
        tool: "vpdmn",
    };
    let w = World::new();
    let o = w.run(
        "vpdmn",
        ["--no-daemon", "vimport", p(&images.plain), "userimg:9"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = w.home.path().join("out.tar");
    let o = w.run(
        "vpdmn",
        [
            "--no-daemon",
            "vimport-batch",
            "--output",
            p(&out),
            "--",
            &entry(&images.added, "app:1"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names = names_in(&rt, &out);
    assert!(names.contains("app:1"), "{names}");
    assert!(
        !names.contains("userimg"),
        "the user's image was exported:\n{names}"
    );
}

/// Usage errors and bad entries: no VM, a clear message naming the problem, no output.
#[test]
fn bad_calls_fail_before_boot() {
    let Some(images) = Images::new() else { return };
    for (runtime, tool) in [("docker", "vdkr"), ("podman", "vpdmn")] {
        let class = Class::new(Rt { runtime, tool });
        let out = class.path("storage.tar");
        let not_oci = images.layouts.rootfs_dir().expect("rootfs dir");
        let good = entry(&images.plain, "p:1");
        for (bad, says) in [
            ("/no/such/dir:x:1".to_string(), "/no/such/dir:x:1"),
            (entry(&not_oci, "x:1"), "not an OCI layout"),
            (entry(&images.arm_only, "x:1"), "rchitecture"),
        ] {
            let started = std::time::Instant::now();
            let o = class
                .vrunner(&out, None, &[good.clone(), bad.clone()])
                .output()
                .expect("spawn");
            assert_eq!(o.status.code(), Some(1), "{bad}: {}", stderr(&o));
            assert!(stderr(&o).contains(says), "{bad}: {}", stderr(&o));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{bad}: took {:?} (booted?)",
                started.elapsed()
            );
            assert!(!out.exists());
        }
        // unknown flags and other modes: exit 2
        for args in [
            &["--batch-import", "--bogus"][..],
            &["--daemon-start"],
            &["--runtime", "lxc", "--batch-import"],
        ] {
            let o = class.world.run("vrunner.sh", args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(!stderr(&o).is_empty());
        }
        let o = class.world.run("vrunner.sh", ["--daemon-start"]);
        assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
        class.assert_clean();
    }
}
