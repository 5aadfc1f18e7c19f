//! Fuzz target: the runtime plugins' argv planner: `plan(args)` of runtimes/podman, and
//! `plan_kit::plan` with the docker dialect, which is all `plan(args)` of runtimes/docker
//! does (the two plugin crates cannot be linked into one binary: each exports the plugin
//! root symbol). The input is split into arguments at NUL bytes (so spaces, `=` and `:` stay
//! inside an argument); the first byte picks the dialect. A plan or an error are both fine;
//! a panic is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vcontainer_runtime_kit::{plan, Dialect};

/// runtimes/docker's `DIALECT`.
const DOCKER: Dialect = Dialect {
    binary: "docker",
    remove_after_exit: false,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let args: Vec<String> = rest
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = if which & 1 == 0 {
        plan(&DOCKER, &args)
    } else {
        vcontainer_runtime_podman::plan(&args)
    };
});
