//! `vcontainer-agent`: as PID 1 of the guest it boots the system and serves the protocol on
//! vsock; run by hand (not PID 1) it serves on a Unix socket or vsock port for debugging.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vcontainer_agent::{console, log, pid1, serve, Agent, AgentInfo, NoShutdown, Reaper, Secret};

fn main() -> Result<()> {
    if pid1::is_pid1() {
        run_as_init()
    } else {
        run_by_hand()
    }
}

fn run_as_init() -> ! {
    console::enable();
    std::panic::set_hook(Box::new(|info| log!("panic: {info}")));
    let booted = match pid1::boot() {
        Ok(booted) => booted,
        Err(e) => {
            log!("fatal: {e}");
            pid1::power_off();
        }
    };
    let listener = match listen_vsock(booted.port) {
        Ok(listener) => listener,
        Err(e) => {
            log!("fatal: {e:#}");
            pid1::power_off();
        }
    };
    let agent = Arc::new(booted.agent);
    pid1::power_button::watch(Arc::clone(&agent));
    log!("ready: listening on vsock port {}", booted.port);
    serve(listener, agent);
    pid1::power_off();
}

/// Bind the vsock port, retrying briefly: the transport may still be probing.
fn listen_vsock(port: u32) -> Result<vsock::VsockListener> {
    let mut last = None;
    for _ in 0..100 {
        match vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, port) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(last.map_or_else(|| anyhow::anyhow!("unknown error"), Into::into))
        .with_context(|| format!("cannot listen on vsock port {port}"))
}

const USAGE: &str = "vcontainer-agent is the guest's init; by hand use: \
     vcontainer-agent --secret-file FILE (32 bytes) --unix PATH | --vsock-port N";

fn run_by_hand() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    console::enable();
    let (secret_file, args) = match args.as_slice() {
        [flag, file, rest @ ..] if flag == "--secret-file" => (file.clone(), rest.to_vec()),
        _ => bail!(USAGE),
    };
    let bytes = std::fs::read(&secret_file).with_context(|| format!("reading {secret_file}"))?;
    let secret =
        Secret::from_bytes(&bytes).with_context(|| format!("secret file {secret_file}"))?;
    let info = AgentInfo {
        runtime: String::new(),
        warnings: Vec::new(),
        service_log_dir: std::env::temp_dir().join("vcontainer-agent-logs"),
        secret: Some(secret),
    };
    let agent = Arc::new(Agent::new(info, Reaper::per_child(), Box::new(NoShutdown)));
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--unix", path] => {
            let path = PathBuf::from(path);
            let listener = UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            log!("listening on {}", path.display());
            serve(listener, agent);
            Ok(())
        }
        ["--vsock-port", port] => {
            let port: u32 = port.parse().context("bad port")?;
            let listener = listen_vsock(port)?;
            log!("listening on vsock port {port}");
            serve(listener, agent);
            Ok(())
        }
        _ => bail!(USAGE),
    }
}
