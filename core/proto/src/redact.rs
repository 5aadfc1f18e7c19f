//! Secrets in command lines, hidden before a command line reaches a log.
//!
//! `login -p PASSWORD`, `--password`, `--registry-password` and podman's `--creds
//! user:password` put a secret on the command line. The host logs the command it runs with
//! `-v`, and the agent (with `vcontainer.debug=1`) writes exec argv to the VM console, which is
//! a plain file in the state dir. Both sides share this crate, so both log through
//! [`argv`]. `--password-stdin` keeps the secret off the command line; its stdin bytes are
//! never logged.

/// What a hidden value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Long options whose value is a secret, in any command (`--opt VALUE` or `--opt=VALUE`).
const SECRET_OPTIONS: &[&str] = &[
    "--password",
    "--registry-password",
    "--registry-pass",
    "--creds",
    "--src-creds",
    "--dest-creds",
];

/// `argv` with every secret value replaced by [`REDACTED`], for logging only.
///
/// Besides [`SECRET_OPTIONS`], `-p` is a password once a `login` word was seen (`-p X`,
/// `-pX`, `-p=X`); elsewhere `-p` publishes ports and is kept. A `login` that is really an
/// image or container name only hides a port spec after it, which costs a log line some
/// detail, never a secret.
pub fn argv<S: AsRef<str>>(argv: &[S]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut login = false;
    let mut hide_next = false;
    for arg in argv {
        let arg = arg.as_ref();
        if std::mem::take(&mut hide_next) {
            out.push(REDACTED.to_string());
            continue;
        }
        if arg == "login" {
            login = true;
        }
        let secret = |name: &str| SECRET_OPTIONS.contains(&name) || (login && name == "-p");
        if secret(arg) {
            out.push(arg.to_string());
            hide_next = true;
        } else if let Some((name, _)) = arg.split_once('=').filter(|(n, _)| secret(n)) {
            out.push(format!("{name}={REDACTED}"));
        } else if login && arg.starts_with("-p") && !arg.starts_with("--") {
            out.push(format!("-p{REDACTED}"));
        } else {
            out.push(arg.to_string());
        }
    }
    out
}

/// True when [`argv`] would hide something in `argv`.
pub fn has_secret<S: AsRef<str>>(words: &[S]) -> bool {
    argv(words)
        .iter()
        .zip(words)
        .any(|(shown, given)| shown != given.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(words: &[&str]) -> Vec<String> {
        argv(words)
    }

    #[test]
    fn login_passwords_in_every_spelling_are_hidden() {
        assert_eq!(
            r(&["docker", "login", "-u", "me", "-p", "pw1", "reg:5000"]),
            ["docker", "login", "-u", "me", "-p", REDACTED, "reg:5000"]
        );
        assert_eq!(
            r(&["login", "-ppw2", "--password=pw3", "--password", "pw4"]),
            [
                "login",
                "-p<redacted>",
                "--password=<redacted>",
                "--password",
                REDACTED
            ]
        );
        assert_eq!(
            r(&["podman", "--root", "/x", "login", "-p=pw5", "r"]),
            ["podman", "--root", "/x", "login", "-p=<redacted>", "r"]
        );
        // the stdin form has nothing to hide, and must not hide the registry after it
        let stdin = ["login", "-u", "me", "--password-stdin", "reg"];
        assert_eq!(r(&stdin), stdin);
        assert!(!has_secret(&stdin));
    }

    #[test]
    fn registry_options_and_creds_are_hidden_in_any_command() {
        assert_eq!(
            r(&["--registry-password", "pw", "pull", "x"]),
            ["--registry-password", REDACTED, "pull", "x"]
        );
        assert_eq!(
            r(&["pull", "--creds=me:pw", "--registry-pass=pw", "x"]),
            [
                "pull",
                "--creds=<redacted>",
                "--registry-pass=<redacted>",
                "x"
            ]
        );
        assert!(has_secret(&["push", "--creds", "me:pw", "x"]));
    }

    #[test]
    fn ports_and_ordinary_words_stay() {
        let run = [
            "docker", "run", "-p", "8080:80", "-p80:80", "-e", "A=b", "img",
        ];
        assert_eq!(r(&run), run);
        assert!(!has_secret(&run));
        // a trailing secret option without its value leaves nothing to hide
        assert_eq!(r(&["login", "-p"]), ["login", "-p"]);
    }
}
