//! Running a tool on a terminal, as a user would.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::World;

/// One word for `sh -c`: single-quoted.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Runs `tool args` on a terminal (util-linux `script` gives it a PTY). Each step waits for
/// `seen` on the terminal, then for `pause`, then types `keys`. Returns the exit code and
/// everything the terminal showed.
pub fn on_terminal(
    w: &World,
    tool: &str,
    args: &[&str],
    steps: &[(&str, Duration, &str)],
) -> (i32, String) {
    let line = std::iter::once(w.bin.join(tool).display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| sh_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = w
        .cmd(tool)
        .get_envs()
        .fold(Command::new("script"), |mut c, (k, v)| {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
            c
        })
        .env("TERM", "xterm")
        .args(["-q", "-f", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let seen = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().expect("stdout");
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.lock().expect("lock").push_str(&text);
            }
        })
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut from = 0;
    for (want, pause, keys) in steps {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let text = seen.lock().expect("lock").clone();
            if let Some(at) = text.get(from..).and_then(|t| t.find(want)) {
                from += at + want.len();
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{tool} {args:?}: {want:?} never shown; terminal: {text:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(*pause);
        stdin.write_all(keys.as_bytes()).expect("type");
        stdin.flush().expect("flush");
    }
    let status = child.wait().expect("wait");
    drop(stdin);
    let _ = reader.join();
    let text = seen.lock().expect("lock").clone();
    (status.code().unwrap_or(-1), text)
}
