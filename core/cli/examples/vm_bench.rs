//! Benchmark probe for scripts/bench-vm.sh: talks to a running memres VM's agent directly,
//! so the figures measure the agent path alone (no CLI start-up, no plugin, no runtime).
//!
//!   vm_bench exec  <state-dir> <argv>...   run one command, relay stdout/stderr and the status
//!   vm_bench warm  <state-dir> <n>         /bin/true n times through the agent vs n times in-guest
//!   vm_bench stream <state-dir> <mib>      push then pull a <mib> MiB file through /tmp (tmpfs)
//!
//! Output lines are `key=value` so the shell script can pick them up without parsing prose.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vcontainer::agent_client::{exec, pull_tar, push_tar, ExecRequest};
use vcontainer::vm::Instance;

const GUEST_DIR: &str = "/tmp/vcontainer-bench";
const FILE_NAME: &str = "blob";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, state_dir, rest) = match args.as_slice() {
        [mode, dir, rest @ ..] => (mode.as_str(), PathBuf::from(dir), rest),
        _ => bail!("usage: vm_bench exec|warm|stream <state-dir> ..."),
    };
    let vm = Instance::find(&state_dir)
        .with_context(|| format!("no running memres VM for {}", state_dir.display()))?;
    match mode {
        "exec" => {
            let (code, out, err) = run(&vm, rest)?;
            io::stdout().write_all(&out)?;
            io::stderr().write_all(&err)?;
            std::process::exit(code);
        }
        "warm" => warm(&vm, count(rest)?),
        "stream" => stream(&vm, count(rest)?),
        other => bail!("unknown mode {other}"),
    }
}

fn count(rest: &[String]) -> Result<u64> {
    let n = rest.first().context("missing count")?;
    n.parse().with_context(|| format!("bad count {n}"))
}

/// One exec through the agent: (shell exit code, stdout, stderr).
fn run(vm: &Instance, argv: &[String]) -> Result<(i32, Vec<u8>, Vec<u8>)> {
    let conn = vm.connect()?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = exec(
        conn,
        ExecRequest::new(argv.iter().cloned()),
        None,
        &mut out,
        &mut err,
    )?;
    Ok((status.shell_code(), out, err))
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// Per-command cost through the agent (connect + exec + exit status) against the same
/// program started by a shell loop inside the guest: the difference is our overhead.
fn warm(vm: &Instance, n: u64) -> Result<()> {
    let n = n.max(1);
    let argv = ["/bin/true".to_string()];
    run(vm, &argv)?; // page in the agent's and the program's code first
    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (code, _, err) = run(vm, &argv)?;
        samples.push(t.elapsed());
        if code != 0 {
            bail!("/bin/true exited {code}: {}", String::from_utf8_lossy(&err));
        }
    }
    let script = format!(
        "s=$(date +%s%N); i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done; \
         e=$(date +%s%N); echo $(( (e - s) / {n} ))"
    );
    let (code, out, err) = run(vm, &["sh".into(), "-c".into(), script])?;
    if code != 0 {
        bail!(
            "in-guest loop exited {code}: {}",
            String::from_utf8_lossy(&err)
        );
    }
    let guest_ns: f64 = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .context("in-guest loop printed no number")?;
    let host_ms = median_ms(samples);
    let guest_ms = guest_ns / 1e6;
    println!("agent_exec_median_ms={host_ms:.2}");
    println!("guest_exec_mean_ms={guest_ms:.2}");
    println!("agent_overhead_ms={:.2}", host_ms - guest_ms);
    Ok(())
}

/// A tar stream of one regular file of `size` bytes, generated on the fly (no host disk).
fn tar_of(size: u64) -> Result<impl Read> {
    let mut header = tar::Header::new_gnu();
    header.set_path(FILE_NAME)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let pad = (512 - size % 512) % 512;
    // Non-zero, non-repeating-ish bytes so nothing on the way can shortcut zero pages.
    let data = io::repeat(0x5a).take(size);
    Ok(io::Cursor::new(header.as_bytes().to_vec())
        .chain(data)
        .chain(io::repeat(0).take(pad + 1024)))
}

/// Counts what the pull delivers instead of storing it.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stream(vm: &Instance, mib: u64) -> Result<()> {
    let size = mib * 1024 * 1024;
    let mb = size as f64 / 1e6;
    let t = Instant::now();
    push_tar(vm.connect()?, GUEST_DIR, &mut tar_of(size)?)?;
    let push = t.elapsed().as_secs_f64();
    let guest_path = format!("{GUEST_DIR}/{FILE_NAME}");
    let (code, out, _) = run(
        vm,
        &["stat".into(), "-c".into(), "%s".into(), guest_path.clone()],
    )?;
    let landed = String::from_utf8_lossy(&out).trim().to_string();
    if code != 0 || landed != size.to_string() {
        bail!("pushed {size} bytes but the guest file has {landed:?}");
    }
    let mut sink = CountingSink(0);
    let t = Instant::now();
    pull_tar(vm.connect()?, &guest_path, &mut sink)?;
    let pull = t.elapsed().as_secs_f64();
    run(vm, &["rm".into(), "-rf".into(), GUEST_DIR.into()])?;
    if sink.0 < size {
        bail!("pulled only {} of {size} bytes", sink.0);
    }
    println!("stream_mib={mib}");
    println!("push_s={push:.2}");
    println!("push_mb_s={:.1}", mb / push);
    println!("pull_s={pull:.2}");
    println!("pull_mb_s={:.1}", mb / pull);
    Ok(())
}
