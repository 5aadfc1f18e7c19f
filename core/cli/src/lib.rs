//! The vcontainer core: everything behind the `vcontainer`/`vdkr`/`vpdmn` binary.
//!
//! It is a library so that integration tests and benchmarks can drive the same code the
//! binary runs; `main.rs` only maps the result to an exit code.

pub mod agent_client;
pub mod plugins;
pub mod vm;
