//! When the host may first connect to vhost-device-vsock's Unix socket during a hybrid boot.
//!
//! Why this exists: vhost-device-vsock 0.3.0 (with vhost-user-backend 0.20) loses its vring
//! worker thread for good when a host connection reaches `<state>/vsock.sock` after QEMU has
//! handed it the guest memory (SET_MEM_TABLE) but before the rx/tx vrings are set up (their
//! SET_VRING_KICK). Its backend-event handler then walks a queue that is not ready, gets
//! `QueueNotReady`, returns it as an error, and vhost-user-backend's epoll loop ends on that
//! error. The process stays alive, so the kernel keeps accepting connections on the socket,
//! but nothing reads them again: every `CONNECT 1024` waits for an `OK` that never comes,
//! though the guest agent is listening. The window is a few milliseconds on an idle host,
//! long enough on a loaded one (several TCG guests booting at once) for the boot loop's
//! connection polling to land in it now and then.
//!
//! The window opens only when the guest driver starts the device, and QEMU runs that whole
//! start (SET_MEM_TABLE, the vring messages, then a synchronous SET_VRING_ENABLE that the
//! backend answers only after it has handled the messages before it) holding the big QEMU
//! lock, which QMP needs too. So once QMP reports the device's vhost backend as started, the
//! vrings are ready and connecting is safe; before that the host must not connect at all
//! (the agent cannot listen before the driver is up, so no boot time is lost).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::qmp::Qmp;

/// Waits, one non-blocking step at a time, until QEMU reports the vhost-user-vsock device as
/// started by the guest.
pub struct VhostStartGate {
    qmp_socket: PathBuf,
    qmp: Option<Qmp>,
    device_path: Option<String>,
    open: bool,
    /// What the last step saw, for a boot timeout's report.
    state: String,
}

impl VhostStartGate {
    pub fn new(qmp_socket: &Path) -> Self {
        VhostStartGate {
            qmp_socket: qmp_socket.to_path_buf(),
            qmp: None,
            device_path: None,
            open: false,
            state: "QMP not asked yet".into(),
        }
    }

    /// What the gate is waiting for (or why it opened).
    pub fn state(&self) -> &str {
        &self.state
    }

    /// One QMP round trip; true once the host may connect to the hybrid socket. QMP errors
    /// (QEMU not listening yet, a closed monitor) keep the gate closed and are retried; the
    /// caller bounds the wait by its boot deadline and QEMU's liveness.
    pub fn poll(&mut self) -> bool {
        if self.open {
            return true;
        }
        match self.step() {
            Ok(Some(why)) => {
                self.open = true;
                self.state = why;
                // free the monitor: QEMU serves one QMP client at a time
                self.qmp = None;
            }
            Ok(None) => {}
            Err(e) => {
                self.state = e;
                self.qmp = None;
            }
        }
        self.open
    }

    /// Ok(Some(reason)) when open, Ok(None) while the device is not started yet.
    fn step(&mut self) -> Result<Option<String>, String> {
        let qmp = match &mut self.qmp {
            Some(q) => q,
            None => self
                .qmp
                .insert(Qmp::connect(&self.qmp_socket, Duration::from_secs(2))?),
        };
        let path = match &self.device_path {
            Some(p) => p.clone(),
            None => match qmp.execute("x-query-virtio", None) {
                Ok(list) => {
                    let p = vsock_device_path(&list).ok_or_else(|| {
                        format!("no vsock device among the virtio devices {list}")
                    })?;
                    self.device_path.insert(p).clone()
                }
                // an old QEMU (< 7.2): nothing to wait on, connect as before (racy)
                Err(e) if e.contains("CommandNotFound") => {
                    return Ok(Some(format!("QEMU cannot report the device state ({e})")))
                }
                Err(e) => return Err(e),
            },
        };
        let status = qmp.execute("x-query-virtio-status", Some(json!({ "path": path })))?;
        if vhost_started(&status) {
            return Ok(Some("the guest started the vhost-user-vsock device".into()));
        }
        self.state = format!(
            "the guest has not started the vhost-user-vsock device yet (status {})",
            device_status(&status)
        );
        Ok(None)
    }
}

/// The QOM path of the (vhost-user-)vsock device in an `x-query-virtio` answer.
fn vsock_device_path(list: &Value) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|d| {
            d.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.contains("vsock"))
        })?
        .get("path")?
        .as_str()
        .map(str::to_string)
}

/// True when `x-query-virtio-status` says the vhost backend was started.
fn vhost_started(status: &Value) -> bool {
    status.get("vhost-started").and_then(Value::as_bool) == Some(true)
}

/// The virtio status bits QEMU names, shortened (`ACKNOWLEDGE,DRIVER,...`), for reports.
fn device_status(status: &Value) -> String {
    let names: Vec<&str> = status
        .pointer("/status/statuses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| {
                    let s = s.split(':').next().unwrap_or(s);
                    s.strip_prefix("VIRTIO_CONFIG_S_").unwrap_or(s)
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A QMP server answering each command line with the next reply, recording the commands.
    fn fake_qemu(path: &Path, replies: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            c.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .expect("greet");
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut got = Vec::new();
            for reply in std::iter::once("{\"return\": {}}").chain(replies) {
                let mut line = String::new();
                if r.read_line(&mut line).expect("cmd") == 0 {
                    break;
                }
                got.push(line);
                c.write_all(format!("{reply}\n").as_bytes()).expect("reply");
            }
            got
        })
    }

    const LIST: &str = r#"{"return": [{"name": "virtio-blk", "path": "/machine/peripheral-anon/device[0]/virtio-backend"}, {"name": "vhost-vsock", "path": "/machine/peripheral-anon/device[3]/virtio-backend"}]}"#;
    const NOT_STARTED: &str = r#"{"return": {"vhost-started": false, "status": {"statuses": ["VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found"]}}}"#;
    const STARTED: &str = r#"{"return": {"vhost-started": true, "status": {"statuses": []}}}"#;

    #[test]
    fn opens_only_once_qemu_reports_the_vhost_backend_started() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("qmp.sock");
        let mut gate = VhostStartGate::new(&p);
        assert!(!gate.poll(), "no QEMU yet: closed");
        assert!(gate.state().contains("qmp.sock"), "{}", gate.state());
        let server = fake_qemu(&p, vec![LIST, NOT_STARTED, NOT_STARTED, STARTED]);
        assert!(!gate.poll());
        assert!(gate.state().contains("ACKNOWLEDGE"), "{}", gate.state());
        assert!(!gate.poll());
        assert!(gate.poll(), "started: open");
        assert!(gate.poll(), "stays open without asking again");
        let got = server.join().expect("server");
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[1].contains("\"x-query-virtio\""));
        assert!(got[2].contains("x-query-virtio-status"));
        assert!(
            got[4].contains("device[3]/virtio-backend"),
            "asks about the vsock device: {}",
            got[4]
        );
    }

    #[test]
    fn an_old_qemu_without_the_query_does_not_block_the_boot() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("qmp.sock");
        let server = fake_qemu(
            &p,
            vec![
                r#"{"error": {"class": "CommandNotFound", "desc": "The command x-query-virtio has not been found"}}"#,
            ],
        );
        let mut gate = VhostStartGate::new(&p);
        assert!(gate.poll());
        assert!(gate.state().contains("CommandNotFound"), "{}", gate.state());
        server.join().expect("server");
    }

    #[test]
    fn parsing() {
        let list: Value = serde_json::from_str::<Value>(LIST).expect("json")["return"].clone();
        assert_eq!(
            vsock_device_path(&list).as_deref(),
            Some("/machine/peripheral-anon/device[3]/virtio-backend")
        );
        assert_eq!(vsock_device_path(&json!([])), None);
        let s: Value = serde_json::from_str::<Value>(NOT_STARTED).expect("json")["return"].clone();
        assert!(!vhost_started(&s));
        assert_eq!(device_status(&s), "ACKNOWLEDGE");
        assert!(!vhost_started(&json!({})));
        assert!(vhost_started(&json!({"vhost-started": true})));
    }
}
