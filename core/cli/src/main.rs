//! `vcontainer` (also installed as vdkr, vpdmn, vdkr-<arch>, vpdmn-<arch>, vrunner, vrunner.sh): maps the front's
//! result to an exit code. A tool failure is one line, `<tool>: error: <context chain>`,
//! exit 125 (docker's convention).

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // the detached owner of a memres VM (started by `memres start` as `<exe> __vm-supervisor`)
    if argv
        .get(1)
        .is_some_and(|a| a == vcontainer::vm::supervisor::SUBCOMMAND)
    {
        std::process::exit(vcontainer::vm::supervisor::main());
    }
    // vrunner.sh: the Yocto container classes' batch import, with upstream's flags
    if argv
        .first()
        .is_some_and(|a| vcontainer::vrunner::is_vrunner(a))
    {
        std::process::exit(vcontainer::vrunner::main(argv));
    }
    let label = vcontainer::front::program_label(&argv);
    let code = match vcontainer::front::run(argv) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", vcontainer::ui::error_line(&label, &error));
            vcontainer_proto::exit::TOOL_ERROR
        }
    };
    std::process::exit(code);
}
