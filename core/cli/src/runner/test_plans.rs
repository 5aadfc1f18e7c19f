//! Plans made by the docker grammar of the runtime kit, for the runner's unit tests: the
//! runner acts on plans, and these tests need real ones rather than hand-built values.

#![cfg(test)]

use vcontainer_abi::runtime::CommandPlan;
use vcontainer_runtime_kit::{plan, Dialect};

/// docker's dialect as its plugin declares it (runtimes/docker).
const DOCKER: Dialect = Dialect {
    binary: "docker",
    remove_after_exit: false,
};

/// The plan of `docker ARGS`; panics when the grammar refuses it.
pub fn docker(args: &[&str]) -> CommandPlan {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    plan(&DOCKER, &args).expect("plan")
}
