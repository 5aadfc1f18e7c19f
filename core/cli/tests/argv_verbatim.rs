//! The arguments after a runtime command reach the runtime context exactly as typed: no
//! global option is taken from them, nothing is re-split, re-joined or re-quoted.

// test helpers outside #[test] fns: a failed setup step should just panic
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use vcontainer::front::{parse, Invocation};

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Parses and returns (tool name, runtime, global options, verbatim argv).
fn runtime(
    args: &[&str],
) -> (
    String,
    String,
    vcontainer::cli::GlobalOptions,
    Vec<OsString>,
) {
    match parse(&os(args)).unwrap() {
        Invocation::Runtime {
            tool,
            options,
            argv,
            ..
        } => (tool.name, tool.runtime, options, argv),
        other => panic!("not a runtime command: {other:?}"),
    }
}

#[test]
fn help_after_the_image_goes_to_the_container_command() {
    let (_, _, opts, argv) = runtime(&["vdkr", "run", "alpine", "ls", "--help"]);
    assert_eq!(argv, os(&["run", "alpine", "ls", "--help"]));
    assert!(!opts.verbose);
}

#[test]
fn version_after_the_command_is_the_containers() {
    let (_, _, _, argv) = runtime(&["vpdmn", "run", "python", "python", "--version"]);
    assert_eq!(argv, os(&["run", "python", "python", "--version"]));
}

#[test]
fn it_stays_with_run_and_exec() {
    let (_, _, opts, argv) = runtime(&["vdkr", "run", "-it", "alpine", "sh"]);
    assert!(!opts.interactive && !opts.tty);
    assert_eq!(argv, os(&["run", "-it", "alpine", "sh"]));
    let (_, _, _, argv) = runtime(&["vdkr", "exec", "-it", "c1", "sh"]);
    assert_eq!(argv, os(&["exec", "-it", "c1", "sh"]));
}

#[test]
fn quotes_spaces_semicolons_and_dollars_are_one_argument_each() {
    let script = "echo $HOME; ls -l \"a b\" 'c d' | wc -l && true";
    let (_, _, _, argv) = runtime(&[
        "vdkr",
        "run",
        "--rm",
        "-e",
        "GREETING=hello world",
        "--label",
        "x=\"y\"",
        "alpine",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        argv,
        os(&[
            "run",
            "--rm",
            "-e",
            "GREETING=hello world",
            "--label",
            "x=\"y\"",
            "alpine",
            "sh",
            "-c",
            script
        ])
    );
}

#[test]
fn global_option_names_after_the_command_are_not_taken() {
    let (_, _, opts, argv) = runtime(&[
        "vdkr",
        "images",
        "-a",
        "--storage",
        "out.tar",
        "--config",
        "x.json",
        "--registry",
        "r",
        "-v",
        "--",
        "--arch",
        "aarch64",
    ]);
    assert!(opts.arch.is_none() && opts.storage.is_none() && opts.config.is_none());
    assert!(opts.registry.is_none() && !opts.verbose);
    assert_eq!(
        argv,
        os(&[
            "images",
            "-a",
            "--storage",
            "out.tar",
            "--config",
            "x.json",
            "--registry",
            "r",
            "-v",
            "--",
            "--arch",
            "aarch64"
        ])
    );
}

#[test]
fn empty_and_non_utf8_arguments_survive() {
    let mut args = os(&["vdkr", "run", "alpine", "printf", "%s", ""]);
    args.push(OsString::from_vec(vec![0x66, 0xff, 0x6f]));
    match parse(&args).unwrap() {
        Invocation::Runtime { argv, .. } => {
            assert_eq!(argv.len(), 6);
            assert_eq!(argv[4], OsString::from(""));
            assert_eq!(argv[5], OsString::from_vec(vec![0x66, 0xff, 0x6f]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_before_the_command_are_global() {
    let (tool, runtime_name, opts, argv) = runtime(&[
        "/opt/bin/vpdmn",
        "-a",
        "aarch64",
        "-I",
        "ci",
        "--no-kvm",
        "--no-daemon",
        "--blob-dir",
        "/b",
        "--input-storage",
        "in.tar",
        "--storage",
        "out.tar",
        "--insecure-registry",
        "10.0.2.2:5000",
        "--insecure-registry",
        "r:5000",
        "-v",
        "vimport",
        "./app-oci",
        "app:latest",
    ]);
    assert_eq!((tool.as_str(), runtime_name.as_str()), ("vpdmn", "podman"));
    assert_eq!(opts.arch.as_deref(), Some("aarch64"));
    assert_eq!(opts.instance.as_deref(), Some("ci"));
    assert!(opts.no_kvm && opts.no_daemon && opts.verbose);
    assert_eq!(opts.insecure_registries, ["10.0.2.2:5000", "r:5000"]);
    assert_eq!(argv, os(&["vimport", "./app-oci", "app:latest"]));
}

#[test]
fn generic_binary_takes_the_runtime_from_the_option() {
    let (tool, runtime_name, _, argv) = runtime(&["vcontainer", "--runtime", "podman", "ps", "-a"]);
    assert_eq!((tool.as_str(), runtime_name.as_str()), ("vpdmn", "podman"));
    assert_eq!(argv, os(&["ps", "-a"]));
}

#[test]
fn core_commands_need_no_runtime_and_keep_their_args() {
    match parse(&os(&["vcontainer", "plugins", "--format", "json"])).unwrap() {
        Invocation::Core(ctx) => assert_eq!(ctx.argv, os(&["plugins", "--format", "json"])),
        other => panic!("{other:?}"),
    }
    match parse(&os(&["vcontainer", "image", "build", "--help"])).unwrap() {
        Invocation::Core(ctx) => assert_eq!(ctx.argv, os(&["image", "build", "--help"])),
        other => panic!("{other:?}"),
    }
    // with a runtime, `image` is the runtime's own command
    let (_, _, _, argv) = runtime(&["vdkr", "image", "ls"]);
    assert_eq!(argv, os(&["image", "ls"]));
}

#[test]
fn runtime_command_without_runtime_is_an_error() {
    let err = parse(&os(&["vcontainer", "images"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a runtime"), "{err}");
}
