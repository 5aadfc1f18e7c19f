//! Host port forwards for containers started through the exposed engine API (issue 15
//! item 4): `docker -H unix://.../docker.sock run -d -p 8080:80 img` never passes through
//! `vdkr run`, so nothing would forward host 8080 to the guest. The memres supervisor
//! therefore watches the engine's own event stream (`GET /events` of the Docker Engine API,
//! over the same relayed guest socket as the clients) and, for each container that starts,
//! reads its published ports (`GET /containers/{id}/json`) and adds the same QEMU forwards
//! and `port-forwards.json` records that `vdkr run -d -p` makes; when the container dies
//! they are removed again. The forwards listen on 127.0.0.1 only, whatever address the
//! client asked for.
//!
//! The requests are HTTP/1.0, so the engine answers without chunked encoding and ends the
//! answer by closing: the event stream is then plain JSON lines, and no HTTP client crate
//! with its own runtime is needed for two GETs. Ports the runner forwards itself (`vdkr
//! run -p`) are already taken in QEMU and recorded, so the watcher's attempt fails harmlessly.

use std::io::{self, BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde::Deserialize;
use vcontainer_proto::{read_frame, write_frame, FrameType};

use super::engine_api::Relay;
use super::forwards as ports;
use super::instance::Instance;
use super::transport::AgentStream;

/// Why one watch or inspect failed (logged; the watcher retries).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("connecting to the engine socket: {0}")]
    Connect(String),
    #[error("talking to the engine: {0}")]
    Io(#[from] io::Error),
    #[error("the engine answered {0}")]
    Status(String),
    #[error("decoding the engine's answer: {0}")]
    Json(#[from] serde_json::Error),
}

/// `/events` of containers (the filter, URL-encoded: `{"type":["container"]}`). Not also
/// filtered by event: podman's service matches an `event` filter against its own names
/// ("died"), so `die` would drop every death there; the actions are picked here instead.
const EVENTS_PATH: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// The first wait between attempts while the engine is not up yet (it starts after the VM)
/// or after its stream ended (the engine was restarted); doubled after each failure in a
/// row up to [`RETRY_MAX`], so an engine that never answers costs little.
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Starts the watcher thread for the VM's life (the supervisor's process).
pub fn spawn(relay: Relay) -> io::Result<()> {
    thread::Builder::new()
        .name("engine-events".into())
        .spawn(move || {
            let mut wait = RETRY;
            loop {
                match watch(&relay) {
                    Ok(()) => {
                        tracing::debug!("engine events: the stream ended");
                        wait = RETRY;
                    }
                    Err(e) => {
                        tracing::debug!("engine events: {e}");
                        wait = next_wait(wait);
                    }
                }
                thread::sleep(wait);
            }
        })
        .map(drop)
}

fn next_wait(wait: Duration) -> Duration {
    (wait * 2).min(RETRY_MAX)
}

/// One event stream, until it ends. Once it is subscribed, the running containers are
/// reconciled with the records: while the watcher waited for the engine, or before a
/// reconnect, containers may have started (no forward yet) or died (a forward left).
fn watch(relay: &Relay) -> Result<(), EventsError> {
    let mut body = get(relay, EVENTS_PATH)?;
    if let Err(e) = reconcile(relay) {
        tracing::debug!("engine events: running containers: {e}");
    }
    let mut line = String::new();
    loop {
        line.clear();
        if body.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let Ok(event) = serde_json::from_str::<Event>(line.trim()) else {
            continue;
        };
        let id = event.id();
        if id.is_empty() {
            continue;
        }
        match event.action.as_str() {
            "start" => {
                if let Err(e) = forward_published(relay, &id) {
                    tracing::debug!("engine events: ports of {id}: {e}");
                }
            }
            "die" | "died" => release(&relay.state_dir, &[id]),
            _ => {}
        }
    }
}

/// One event of `/events` (docker's and podman's compat API both use these fields).
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
    #[serde(default)]
    id: String,
}

#[derive(Debug, Default, Deserialize)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
}

impl Event {
    fn id(&self) -> String {
        if self.actor.id.is_empty() {
            self.id.clone()
        } else {
            self.actor.id.clone()
        }
    }
}

/// One row of `/containers/json` (running containers).
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
    /// `/web` (docker's and podman's compat API keep the leading slash).
    #[serde(rename = "Names", default)]
    names: Vec<String>,
}

/// Forwards the published ports of every running container (already forwarded ones are
/// skipped by [`forward_published`]) and releases the forwards of recorded containers that
/// no longer run. The records are read *before* the list: a record is written once its
/// container runs, so one written after the list must not be taken for a dead container's.
fn reconcile(relay: &Relay) -> Result<(), EventsError> {
    let recorded = ports::load(&relay.state_dir);
    let mut answer = Vec::new();
    get(relay, "/containers/json")?.read_to_end(&mut answer)?;
    let listed: Vec<Listed> = serde_json::from_slice(&answer)?;
    for c in &listed {
        if let Err(e) = forward_published(relay, &c.id) {
            tracing::debug!("engine events: ports of {}: {e}", c.id);
        }
    }
    let gone = not_running(&recorded, &listed);
    if !gone.is_empty() {
        release(&relay.state_dir, &gone);
    }
    Ok(())
}

/// The containers of `recorded` forwards (by id, else by name) that are not in `listed`;
/// static forwards (no container) are never among them.
fn not_running(recorded: &[ports::ForwardRecord], listed: &[Listed]) -> Vec<String> {
    let runs = |r: &ports::ForwardRecord| {
        listed.iter().any(|c| {
            let by_id = r
                .container_id
                .as_deref()
                .is_some_and(|id| !id.is_empty() && c.id.starts_with(id));
            let by_name = r.container_id.is_none()
                && c.names
                    .iter()
                    .any(|n| Some(n.trim_start_matches('/')) == r.container.as_deref());
            by_id || by_name
        })
    };
    let mut gone: Vec<String> = recorded
        .iter()
        .filter(|r| r.container.is_some() || r.container_id.is_some())
        .filter(|r| !runs(r))
        .filter_map(|r| r.container_id.clone().or_else(|| r.container.clone()))
        .collect();
    gone.sort();
    gone.dedup();
    gone
}

/// The part of `/containers/{id}/json` the forwards need.
#[derive(Debug, Deserialize)]
struct Inspected {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "HostConfig", default)]
    host_config: HostConfig,
}

#[derive(Debug, Default, Deserialize)]
struct HostConfig {
    #[serde(rename = "PortBindings", default)]
    port_bindings: serde_json::Value,
}

/// The forwards a started container asks for, on 127.0.0.1, or None when the answer does
/// not describe a container.
fn published(inspect_json: &[u8]) -> Result<Option<ports::Published>, EventsError> {
    let c: Inspected = serde_json::from_slice(inspect_json)?;
    // the same reading as `vdkr start`'s (`ports::parse_published`), from the same fields
    let line = format!(
        "{} {} {}",
        c.id,
        c.name,
        serde_json::to_string(&c.host_config.port_bindings)?
    );
    Ok(ports::parse_published(&line).map(|mut p| {
        for w in &mut p.wanted {
            w.forward.host_addr = Ipv4Addr::LOCALHOST;
        }
        p
    }))
}

/// Adds and records the forwards of container `id` that no one holds yet.
fn forward_published(relay: &Relay, id: &str) -> Result<(), EventsError> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(());
    }
    let mut answer = Vec::new();
    get(relay, &format!("/containers/{id}/json"))?.read_to_end(&mut answer)?;
    let Some(p) = published(&answer)? else {
        return Ok(());
    };
    if p.wanted.is_empty() {
        return Ok(());
    }
    let Some(instance) = Instance::find(&relay.state_dir) else {
        return Ok(());
    };
    // a port `vdkr run -p` (or `memres start -p`) forwards already is refused by QEMU here
    match ports::forward_published(&instance, p) {
        Ok(()) => {}
        Err(ports::PublishError::Add(e)) => tracing::debug!("engine events: {id}: {e:#}"),
        Err(ports::PublishError::Record(e)) => {
            tracing::warn!("engine events: recording the forwards of {id}: {e:#}")
        }
    }
    Ok(())
}

/// Removes the forwards recorded for containers `ids` (by whoever added them: they stopped).
fn release(state_dir: &Path, ids: &[String]) {
    let Some(instance) = Instance::find(state_dir) else {
        return;
    };
    let (_, problems) = ports::release(&instance, ids);
    for p in problems {
        tracing::debug!("engine events: releasing {ids:?}: {p}");
    }
}

/// `GET path` over a new relayed connection; the body after a 2xx status line and the
/// headers, as a reader that ends when the engine closes.
fn get(relay: &Relay, path: &str) -> Result<BufReader<Frames>, EventsError> {
    let mut agent = relay.connect_guest().map_err(EventsError::Connect)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: engine\r\n\r\n");
    // no end marker after it: the engine would take the half-close for a client gone
    write_frame(&mut agent, FrameType::Stdin, request.as_bytes()).map_err(io::Error::other)?;
    let mut reader = BufReader::new(Frames {
        agent,
        pending: Vec::new(),
        at: 0,
    });
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if !code.starts_with('2') {
        return Err(EventsError::Status(status.trim().to_string()));
    }
    let mut header = String::new();
    loop {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    Ok(reader)
}

/// The engine's bytes out of the agent's `Stdout` frames, as a plain reader.
struct Frames {
    agent: AgentStream,
    pending: Vec<u8>,
    at: usize,
}

impl Read for Frames {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.pending.len() {
            match read_frame(&mut self.agent).map_err(io::Error::other)? {
                Some(f) if f.kind == FrameType::Stdout => {
                    self.pending = f.payload;
                    self.at = 0;
                }
                Some(f) if f.kind == FrameType::StdoutEnd => return Ok(0),
                Some(_) => {}
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        let _ = self.agent.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Protocol;
    use std::os::unix::net::UnixStream;

    #[test]
    fn published_ports_listen_on_loopback_only() {
        let json = br#"{"Id":"3f2a9c","Name":"/web","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}],"53/udp":[{"HostIp":"","HostPort":"5353"}]}}}"#;
        let p = published(json).expect("json").expect("a container");
        assert_eq!((p.id.as_str(), p.name.as_str()), ("3f2a9c", "web"));
        let got: Vec<_> = p
            .wanted
            .iter()
            .map(|w| {
                (
                    w.forward.host,
                    w.forward.protocol,
                    w.forward.host_addr,
                    w.container_port,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (5353, Protocol::Udp, Ipv4Addr::LOCALHOST, 53),
                (8080, Protocol::Tcp, Ipv4Addr::LOCALHOST, 80)
            ]
        );
        let none = published(br#"{"Id":"ab","Name":"/q","HostConfig":{"PortBindings":null}}"#)
            .expect("json")
            .expect("a container");
        assert!(none.wanted.is_empty());
        assert!(published(b"not json").is_err());
    }

    fn record(name: Option<&str>, id: Option<&str>, host: u16) -> ports::ForwardRecord {
        ports::ForwardRecord {
            host,
            guest: host,
            protocol: Protocol::Tcp,
            container: name.map(Into::into),
            container_id: id.map(Into::into),
            container_port: Some(80),
            host_addr: Ipv4Addr::LOCALHOST,
        }
    }

    #[test]
    fn forwards_of_containers_that_died_unseen_are_found_and_static_ones_kept() {
        let recorded = [
            record(None, None, 1000),                  // static: memres start -p
            record(Some("web"), Some("3f2a9c"), 8080), // runs (id prefix)
            record(Some("db"), Some("77aa01"), 5432),  // died while unwatched
            record(Some("db"), Some("77aa01"), 5433),  // same container, one operand
            record(Some("cache"), None, 6379),         // id unknown, runs by name
            record(Some("queue"), None, 5672),         // id unknown, gone
        ];
        let listed: Vec<Listed> = serde_json::from_str(
            r#"[{"Id":"3f2a9c0d11ee","Names":["/web"]},{"Id":"9999","Names":["/cache"]}]"#,
        )
        .expect("list");
        assert_eq!(not_running(&recorded, &listed), ["77aa01", "queue"]);
        // nothing runs: every container's forward goes, the static one stays
        assert_eq!(
            not_running(&recorded, &[]),
            ["3f2a9c", "77aa01", "cache", "queue"]
        );
        // a listed container's name does not save a record of another id
        let listed: Vec<Listed> =
            serde_json::from_str(r#"[{"Id":"1234","Names":["/db"]}]"#).expect("list");
        assert!(not_running(&recorded, &listed).contains(&"77aa01".to_string()));
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        let mut w = RETRY;
        for _ in 0..10 {
            w = next_wait(w);
        }
        assert_eq!(w, RETRY_MAX);
        assert_eq!(next_wait(RETRY), RETRY * 2);
    }

    #[test]
    fn events_of_docker_and_podman_name_the_container() {
        let docker: Event = serde_json::from_str(
            r#"{"status":"start","id":"abc","Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web"}}}"#,
        )
        .expect("docker event");
        assert_eq!(
            (docker.action.as_str(), docker.id().as_str()),
            ("start", "abc")
        );
        let bare: Event =
            serde_json::from_str(r#"{"Action":"die","id":"def"}"#).expect("bare event");
        assert_eq!(bare.id(), "def");
    }

    #[test]
    fn frames_read_as_a_byte_stream_until_the_end_marker() {
        let (a, mut guest) = UnixStream::pair().expect("pair");
        write_frame(
            &mut guest,
            FrameType::Stdout,
            b"HTTP/1.0 200 OK\r\nA: b\r\n\r\n{\"x\"",
        )
        .expect("w");
        write_frame(&mut guest, FrameType::Stdout, b":1}\nnext\n").expect("w");
        write_frame(&mut guest, FrameType::StdoutEnd, &[]).expect("w");
        let mut r = BufReader::new(Frames {
            agent: AgentStream::Unix(a),
            pending: Vec::new(),
            at: 0,
        });
        let mut all = String::new();
        r.read_to_string(&mut all).expect("read");
        assert!(all.ends_with("\r\n\r\n{\"x\":1}\nnext\n"), "{all:?}");
    }
}
