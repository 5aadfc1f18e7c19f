//! The vcontainer core: everything behind the `vcontainer`/`vdkr`/`vpdmn` binary.
//!
//! It is a library so that integration tests and benchmarks can drive the same code the
//! binary runs; `main.rs` only maps the result to an exit code.

pub mod image_cmd;
pub mod plugins;
pub mod runner;
// the VM layer is its own crate; re-exported under the paths the core always used
pub use vcontainer_vm::{agent_client, trust, vm};

// input detection and import plans; registry options and auth files
pub mod registry;
pub mod vimport;

// the command front
pub mod arch;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod front;
pub mod memres_probe;
pub mod program_name;
pub mod session;
pub mod state_dir;
pub mod tool;
pub mod ui;
pub mod vconfig;
pub mod vstorage;

// the Yocto classes' entry point (`vrunner.sh --batch-import`)
pub mod vrunner;

#[cfg(test)]
#[path = "tests/runtime_specs.rs"]
mod test_specs;
