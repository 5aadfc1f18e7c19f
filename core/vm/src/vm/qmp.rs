//! A minimal QMP client: only what the lifecycle needs (quit as the last resort before SIGKILL,
//! system_powerdown, and hostfwd_add/remove on netdev `net0` for port forwards on a running VM).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect and leave capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, String> {
        let s = UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("reading QMP: {e}"))?;
        if n == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("bad QMP message {line:?}: {e}"))
    }

    /// Run a command and return its `return` value; events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
        }
    }

    /// Stop QEMU at once (no guest shutdown: a last resort).
    pub fn quit(&mut self) -> Result<(), String> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering
            Err(e) if e.contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A human monitor command (hostfwd_add has no QMP equivalent); returns its text output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, String> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        let text = r.as_str().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            Ok(text)
        } else {
            // hostfwd_add prints only on failure
            Err(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn talks_qmp_to_a_fake_qemu() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("qmp.sock");
        let l = UnixListener::bind(&p).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            c.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .expect("greet");
            let mut got = Vec::new();
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            for reply in [
                "{\"return\": {}}\n",
                "{\"event\": \"X\"}\n{\"return\": \"\"}\n",
                "{\"return\": \"bad port\\r\\n\"}\n",
            ] {
                let mut line = String::new();
                r.read_line(&mut line).expect("cmd");
                got.push(line);
                c.write_all(reply.as_bytes()).expect("reply");
            }
            let mut line = String::new();
            r.read_line(&mut line).expect("quit");
            got.push(line);
            // QEMU closes the monitor on quit without answering
            drop(c);
            drop(r);
            got
        });
        let mut q = Qmp::connect(&p, Duration::from_secs(5)).expect("connect");
        q.hmp("hostfwd_add net0 tcp::8080-:80").expect("ok");
        let e = q.hmp("hostfwd_add net0 tcp::8080-:80").expect_err("fails");
        assert_eq!(e, "bad port");
        q.quit().expect("quit tolerates the close");
        let got = server.join().expect("server");
        assert!(got[0].contains("qmp_capabilities"));
        assert!(got[1].contains("hostfwd_add net0 tcp::8080-:80"));
        assert!(got[3].contains("\"quit\""));
    }
}
