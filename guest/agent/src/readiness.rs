//! Socket readiness checks for services (`ServiceStartRequest::probe_socket`), done in the
//! agent without starting a process: under TCG one `ctr version` costs about a second of
//! emulated Go start-up, which dominated the time to a ready containerd.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vcontainer_proto::SocketProbe;

/// Pause between two tries of a socket check: connecting to a missing socket costs
/// microseconds, so the check can follow the service closely.
pub(crate) const SOCKET_INTERVAL: Duration = Duration::from_millis(10);

/// One try: true when the socket accepts a connection and (with `http_path`) answers the
/// GET with a 2xx status within `limit`.
pub(crate) fn socket_ready(probe: &SocketProbe, limit: Duration) -> bool {
    let Ok(mut stream) = UnixStream::connect(Path::new(&probe.path)) else {
        return false;
    };
    let Some(http_path) = &probe.http_path else {
        return true;
    };
    http_ok(&mut stream, http_path, limit).unwrap_or(false)
}

/// A service that listens before it serves holds the request until it serves, so this
/// waits (up to `limit`) instead of polling.
fn http_ok(stream: &mut UnixStream, path: &str, limit: Duration) -> io::Result<bool> {
    let limit = limit.max(Duration::from_millis(10));
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    // "HTTP/1.x NNN" is all that matters.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && head[8] == b' ' && head[9] == b'2')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn probe(path: &Path, http_path: Option<&str>) -> SocketProbe {
        SocketProbe {
            path: path.to_string_lossy().into_owned(),
            http_path: http_path.map(str::to_owned),
        }
    }

    /// Serves one connection: reads the request head, then answers `reply` (if any).
    fn serve_once(listener: UnixListener, reply: Option<&'static str>) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            assert!(
                request.starts_with(b"GET /_ping HTTP/1.0\r\n"),
                "{request:?}"
            );
            if let Some(reply) = reply {
                let _ = conn.write_all(reply.as_bytes());
            }
        })
    }

    #[test]
    fn missing_socket_is_not_ready_and_a_listening_one_is() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.sock");
        assert!(!socket_ready(
            &probe(&path, None),
            Duration::from_millis(50)
        ));
        let _listener = UnixListener::bind(&path).expect("bind");
        assert!(socket_ready(&probe(&path, None), Duration::from_millis(50)));
    }

    #[test]
    fn http_probe_needs_a_2xx_answer() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.sock");
        let limit = Duration::from_secs(5);
        for (reply, ready) in [
            (Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"), true),
            (Some("HTTP/1.0 503 Service Unavailable\r\n\r\n"), false),
            (Some("garbage"), false),
            (None, false),
        ] {
            let _ = std::fs::remove_file(&path);
            let server = serve_once(UnixListener::bind(&path).expect("bind"), reply);
            assert_eq!(
                socket_ready(&probe(&path, Some("/_ping")), limit),
                ready,
                "{reply:?}"
            );
            server.join().expect("server");
        }
    }

    #[test]
    fn a_silent_listener_times_out_as_not_ready() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let started = std::time::Instant::now();
        assert!(!socket_ready(
            &probe(&path, Some("/_ping")),
            Duration::from_millis(100)
        ));
        // far above the 100 ms limit, so only a probe that ignores it (and hangs) fails,
        // not a slow machine
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
