//! Running helper programs from the rootfs (e2fsck, ip) during boot.

use std::path::Path;
use std::process::{Command, Stdio};

use vcontainer_proto::ExitStatus;

use crate::reaper::Reaper;
use crate::resolve::{resolve, DEFAULT_PATH};

/// Run `argv` with output on the console; `Err` when it cannot be started at all.
pub fn run(reaper: &Reaper, argv: &[&str]) -> Result<ExitStatus, String> {
    let program = resolve(argv[0], DEFAULT_PATH, Path::new("/")).map_err(|e| e.message)?;
    let mut command = Command::new(program);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null());
    reaper
        .run(&mut command)
        .map_err(|e| format!("{}: {e}", argv[0]))
}

/// Run `argv` and turn anything but exit 0 into an error message.
pub fn run_ok(reaper: &Reaper, argv: &[&str]) -> Result<(), String> {
    match run(reaper, argv)? {
        ExitStatus::Code(0) => Ok(()),
        status => Err(format!("{} failed: {status:?}", argv.join(" "))),
    }
}
