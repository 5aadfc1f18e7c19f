//! `vcontainer image build|unpack|index`: OCI images from a root filesystem with a backend
//! plugin (sloci or umoci), no VM involved. The core only parses, merges and checks the
//! settings; the plugins do the writing (core/abi/src/backend.rs is the interface).
//!
//! * [`args`]: the clap grammar.
//! * [`config_file`]: the `--config FILE.toml` settings file.
//! * [`values`]: parsers of single values (ports, `k=v`, arch names, platforms, layout refs).
//! * [`request`]: options + file -> checked backend requests.
//! * [`run`]: picks the backend plugin, calls it, prints the result.

pub mod args;
pub mod config_file;
pub mod request;
pub mod run;
pub mod values;

pub use run::run;
