//! Host-side HTTP checks of containers reached through port forwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `GET /index.html` on host `port`; None when nothing answers.
pub fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Polls `GET /index.html` on host `port` until the body contains `want`, for up to `secs`.
pub fn wait_http(port: u16, want: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if http_get(port).is_some_and(|b| b.contains(want)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// A busybox httpd serving `text` on `port` inside the container.
pub fn httpd(port: u16, text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && httpd -f -p {port} -h /www")
}

/// The part of `ps` output after the runtime's own table: our forwards table.
pub fn forwards_section(ps: &str) -> &str {
    ps.find("Host Port Forwards")
        .map(|i| &ps[i..])
        .unwrap_or("")
}

/// The IPv4 addresses something listens on for TCP `port` on this host (from /proc/net/tcp),
/// e.g. to check that a forward is on loopback only.
pub fn tcp_listen_addrs(port: u16) -> Vec<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, p) = local.split_once(':')?;
            if state != "0A" || u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            // the kernel prints the address in host byte order (little endian here)
            let raw = u32::from_str_radix(addr, 16).ok()?;
            Some(std::net::Ipv4Addr::from(raw.swap_bytes()))
        })
        .collect()
}
