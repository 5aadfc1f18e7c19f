//! `vcontainer` (also installed as vdkr, vpdmn, vdkr-<arch>, vpdmn-<arch>): maps the front's
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
    let label = vcontainer::front::program_label(&argv);
    let code = match vcontainer::front::run(argv) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", vcontainer::ui::error_line(&label, &error));
            vcontainer::front::EXIT_TOOL_ERROR
        }
    };
    std::process::exit(code);
}
