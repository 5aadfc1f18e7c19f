//! Minimal driver for scripts and benches until the `vcontainer image` command is wired:
//! `ocibuild build|unpack|index '<request as JSON>'` (the JSON of BuildRequest,
//! UnpackRequest or IndexRequest). Prints the report as JSON on stdout, log lines on stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: ocibuild build|unpack|index '<request json>'");
        return ExitCode::from(2);
    }
    let mut log = |l: &str| eprintln!("{l}");
    let result = match args[1].as_str() {
        "build" => serde_json::from_str(&args[2])
            .map_err(|e| e.to_string())
            .and_then(|r| vcontainer_ocibuild::build(&r, &mut log).map_err(|e| e.to_string()))
            .and_then(|rep| serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())),
        "unpack" => serde_json::from_str(&args[2])
            .map_err(|e| e.to_string())
            .and_then(|r| vcontainer_ocibuild::unpack(&r, &mut log).map_err(|e| e.to_string()))
            .and_then(|rep| serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())),
        "index" => serde_json::from_str(&args[2])
            .map_err(|e| e.to_string())
            .and_then(|r| vcontainer_ocibuild::build_index(&r, &mut log).map_err(|e| e.to_string()))
            .and_then(|rep| serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(125)
        }
    }
}
