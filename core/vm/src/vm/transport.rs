//! Host <-> guest agent transports: in-kernel vsock (vhost-vsock) or hybrid vsock
//! (vhost-user-vsock served by vhost-device-vsock, reached through a Unix socket).
//!
//! The guest side is the same AF_VSOCK listener either way; only how the host connects and how
//! QEMU is told about the device differ. Also here: where the sockets live (Unix socket paths
//! are limited to 107 bytes, a deep state dir would overflow it) and how vhost-vsock CIDs are
//! claimed without collisions.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vcontainer_proto::auth::Secret;

use super::error::{Result, VmError};

/// Environment variable forcing the transport (`vsock` or `hybrid`).
pub const TRANSPORT_ENV: &str = "VCONTAINER_TRANSPORT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// In-kernel vhost-vsock, host connects with AF_VSOCK.
    Vsock,
    /// vhost-user-vsock + vhost-device-vsock, host connects to a Unix socket.
    Hybrid,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Vsock => "vsock",
            TransportKind::Hybrid => "hybrid",
        })
    }
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vsock" | "vhost-vsock" => Ok(TransportKind::Vsock),
            "hybrid" | "vhost-user" => Ok(TransportKind::Hybrid),
            other => Err(format!("unknown transport {other:?} (use vsock or hybrid)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportChoice {
    pub kind: TransportKind,
    pub reason: String,
}

/// Ok when /dev/vhost-vsock can be opened read-write, else why not.
pub fn vhost_vsock_usable() -> std::result::Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-vsock")
        .map(|_| ())
        .map_err(|e| format!("/dev/vhost-vsock: {e}"))
}

/// Pick the transport: explicit choice > $VCONTAINER_TRANSPORT > vhost-vsock when usable > hybrid.
pub fn choose(forced: Option<TransportKind>) -> Result<TransportChoice> {
    let env = std::env::var(TRANSPORT_ENV).ok().filter(|v| !v.is_empty());
    decide(forced, env.as_deref(), vhost_vsock_usable())
}

fn decide(
    forced: Option<TransportKind>,
    env: Option<&str>,
    vhost: std::result::Result<(), String>,
) -> Result<TransportChoice> {
    let (kind, why) = match (forced, env) {
        (Some(k), _) => (k, "forced by the caller".to_string()),
        (None, Some(v)) => (
            v.parse()
                .map_err(|e| VmError::Other(format!("{TRANSPORT_ENV}: {e}")))?,
            format!("{TRANSPORT_ENV}={v}"),
        ),
        (None, None) => {
            return Ok(match vhost {
                Ok(()) => TransportChoice {
                    kind: TransportKind::Vsock,
                    reason: "/dev/vhost-vsock is usable".into(),
                },
                Err(e) => TransportChoice {
                    kind: TransportKind::Hybrid,
                    reason: format!("{e}; using vhost-device-vsock"),
                },
            })
        }
    };
    if kind == TransportKind::Vsock {
        if let Err(e) = vhost {
            return Err(VmError::TransportUnavailable("vsock".into(), e));
        }
    }
    Ok(TransportChoice { kind, reason: why })
}

// ---------------------------------------------------------------------------------------------
// socket placement

/// sun_path holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;
/// Longest socket file name we create, plus room for vhost-device-vsock's `_<port>` suffix
/// (it names guest-initiated listeners `<uds-path>_<port>`).
const LONGEST_SOCKET_NAME: usize = "vhost-vsock.sock".len() + 6;

/// Where the Unix sockets of one VM live: the state dir when short enough, otherwise a
/// private per-user runtime dir named after a hash of the state dir.
pub fn socket_dir(state_dir: &Path) -> Result<PathBuf> {
    if state_dir.as_os_str().len() + 1 + LONGEST_SOCKET_NAME <= SUN_PATH_MAX {
        return Ok(state_dir.to_path_buf());
    }
    let hash = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let name = hex::encode(&hash[..8]);
    let uid = nix::unistd::getuid().as_raw();
    let base = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() && d.as_os_str().len() < 40 && d.is_dir() => {
            d.join("vcontainer")
        }
        _ => std::env::temp_dir().join(format!("vcontainer-{uid}")),
    };
    private_dir(&base, uid)?;
    let dir = base.join(name);
    private_dir(&dir, uid)?;
    if dir.as_os_str().len() + 1 + LONGEST_SOCKET_NAME > SUN_PATH_MAX {
        return Err(VmError::Other(format!(
            "no short enough directory for the VM's Unix sockets (tried {})",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Create `dir` with mode 0700, or accept an existing one only when we own it and nobody else
/// can write to it or replace it (it is in a world-writable /tmp): [`crate::trust`].
pub(super) fn private_dir(dir: &Path, uid: u32) -> Result<()> {
    let checker = crate::trust::Checker { me: uid };
    checker.check_new(dir, crate::trust::Subject::SocketDir)?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(VmError::io(format!("creating {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| VmError::io(format!("checking {}", dir.display()), e))?;
    if meta.file_type().is_symlink() {
        return Err(VmError::Other(format!(
            "socket dir {} is a symbolic link; remove it",
            dir.display()
        )));
    }
    checker.check(dir, crate::trust::Subject::SocketDir)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// vhost-vsock CIDs

/// `_IOW(VHOST_VIRTIO, 0x60, __u64)`.
const VHOST_VSOCK_SET_GUEST_CID: libc::c_ulong = 0x4008_AF60;

/// An open /dev/vhost-vsock with a guest CID registered on it. The kernel refuses a CID that
/// another open device holds (EADDRINUSE), so holding this file *is* the reservation; QEMU
/// gets the fd (`vhostfd=`) and sets the same CID again, which the kernel accepts for the same
/// device.
#[derive(Debug)]
pub struct ClaimedCid {
    pub cid: u32,
    pub device: File,
}

/// Claim a free CID, starting at a value derived from `seed` to keep retries few.
pub fn claim_cid(seed: &[u8]) -> Result<ClaimedCid> {
    let hash = Sha256::digest(seed);
    let start = 3 + (u32::from_le_bytes([hash[0], hash[1], hash[2], 0]) % 1_000_000);
    let mut last = String::new();
    for cid in start..start + 256 {
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
            .map_err(|e| VmError::TransportUnavailable("vsock".into(), e.to_string()))?;
        let cid64: u64 = cid.into();
        // SAFETY: the ioctl reads one u64 from the pointer, which lives across the call.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), VHOST_VSOCK_SET_GUEST_CID, &cid64) };
        if rc == 0 {
            return Ok(ClaimedCid { cid, device });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EADDRINUSE) {
            return Err(VmError::TransportUnavailable(
                "vsock".into(),
                format!("VHOST_VSOCK_SET_GUEST_CID {cid}: {err}"),
            ));
        }
        last = err.to_string();
    }
    Err(VmError::TransportUnavailable(
        "vsock".into(),
        format!("no free guest CID in {start}..{}: {last}", start + 256),
    ))
}

// ---------------------------------------------------------------------------------------------
// connecting

/// How the host reaches the agent of one running VM (kept in vm.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    /// vhost-device-vsock's host-side Unix socket.
    Hybrid { uds_path: PathBuf },
    /// The guest's CID for AF_VSOCK.
    Vsock { cid: u32 },
}

impl Endpoint {
    pub fn kind(&self) -> TransportKind {
        match self {
            Endpoint::Hybrid { .. } => TransportKind::Hybrid,
            Endpoint::Vsock { .. } => TransportKind::Vsock,
        }
    }

    /// Open one authenticated connection to guest `port`: the transport's own handshake,
    /// then the agent authentication with `secret` (see docs/security.md), both bounded by
    /// `handshake_timeout` (vhost-device-vsock may hold a connection open while the guest is
    /// not listening yet). The returned stream has no timeouts set.
    pub fn connect(
        &self,
        port: u32,
        handshake_timeout: Duration,
        secret: &Secret,
    ) -> Result<AgentStream> {
        let fail = |detail: String| VmError::Connect { port, detail };
        let mut stream = match self {
            Endpoint::Hybrid { uds_path } => {
                let mut s = UnixStream::connect(uds_path)
                    .map_err(|e| fail(format!("{}: {e}", uds_path.display())))?;
                s.set_read_timeout(Some(handshake_timeout))
                    .map_err(|e| fail(e.to_string()))?;
                s.set_write_timeout(Some(handshake_timeout))
                    .map_err(|e| fail(e.to_string()))?;
                hybrid_handshake(&mut s, port).map_err(fail)?;
                AgentStream::Unix(s)
            }
            Endpoint::Vsock { cid } => {
                let s = vsock::VsockStream::connect_with_cid_port(*cid, port)
                    .map_err(|e| fail(format!("vsock cid {cid}: {e}")))?;
                s.set_read_timeout(Some(handshake_timeout))
                    .map_err(|e| fail(e.to_string()))?;
                s.set_write_timeout(Some(handshake_timeout))
                    .map_err(|e| fail(e.to_string()))?;
                AgentStream::Vsock(s)
            }
        };
        crate::agent_client::authenticate(&mut stream, secret).map_err(VmError::Auth)?;
        stream
            .set_read_timeout(None)
            .map_err(|e| fail(e.to_string()))?;
        stream
            .set_write_timeout(None)
            .map_err(|e| fail(e.to_string()))?;
        Ok(stream)
    }
}

/// `CONNECT <port>\n` -> `OK <n>\n`. Reads byte by byte so no payload byte is swallowed.
pub fn hybrid_handshake<S: Read + Write>(s: &mut S, port: u32) -> std::result::Result<(), String> {
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| match e.kind() {
            // vhost-device-vsock closes at once when the guest refuses: same as below
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                "closed by vhost-device-vsock (the guest is not listening yet)".to_string()
            }
            _ => format!("sending CONNECT: {e}"),
        })?;
    let mut line = Vec::with_capacity(16);
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => {
                return Err(if line.is_empty() {
                    "closed by vhost-device-vsock (the guest is not listening yet)".into()
                } else {
                    format!("closed after {:?}", String::from_utf8_lossy(&line))
                })
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                line.push(b[0]);
                if line.len() > 64 {
                    return Err("overlong handshake reply".into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && line.is_empty() => {
                return Err("reset by vhost-device-vsock (the guest is not listening yet)".into())
            }
            Err(e) => return Err(format!("waiting for OK: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&line);
    match line.strip_prefix("OK ") {
        Some(n) if n.trim().parse::<u32>().is_ok() => Ok(()),
        _ => Err(format!("unexpected handshake reply {line:?}")),
    }
}

/// One connection to the guest agent, whichever transport carries it.
#[derive(Debug)]
pub enum AgentStream {
    Unix(UnixStream),
    Vsock(vsock::VsockStream),
}

impl AgentStream {
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            AgentStream::Unix(s) => s.set_read_timeout(t),
            AgentStream::Vsock(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            AgentStream::Unix(s) => s.set_write_timeout(t),
            AgentStream::Vsock(s) => s.set_write_timeout(t),
        }
    }

    /// A second handle on the same connection (e.g. one thread writes stdin, one reads output).
    pub fn try_clone(&self) -> io::Result<AgentStream> {
        Ok(match self {
            AgentStream::Unix(s) => AgentStream::Unix(s.try_clone()?),
            AgentStream::Vsock(s) => AgentStream::Vsock(s.try_clone()?),
        })
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            AgentStream::Unix(s) => s.shutdown(how),
            AgentStream::Vsock(s) => s.shutdown(how),
        }
    }
}

impl crate::agent_client::AgentConn for AgentStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn crate::agent_client::AgentConn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for AgentStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AgentStream::Unix(s) => s.read(buf),
            AgentStream::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for AgentStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AgentStream::Unix(s) => s.write(buf),
            AgentStream::Vsock(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            AgentStream::Unix(s) => s.flush(),
            AgentStream::Vsock(s) => s.flush(),
        }
    }
}

impl AsRawFd for AgentStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            AgentStream::Unix(s) => s.as_raw_fd(),
            AgentStream::Vsock(s) => s.as_raw_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use vcontainer_proto::auth;

    fn secret() -> Secret {
        Secret::from_bytes(&[1; auth::SECRET_LEN]).expect("32 bytes")
    }

    #[test]
    fn choice_order() {
        let no = || Err("/dev/vhost-vsock: No such file".to_string());
        let c = decide(None, None, no()).expect("auto");
        assert_eq!(c.kind, TransportKind::Hybrid);
        assert!(c.reason.contains("No such file"));
        let c = decide(None, None, Ok(())).expect("auto");
        assert_eq!(c.kind, TransportKind::Vsock);
        let c = decide(None, Some("hybrid"), Ok(())).expect("env");
        assert_eq!(c.kind, TransportKind::Hybrid);
        assert!(c.reason.contains(TRANSPORT_ENV));
        assert!(
            decide(None, Some("vsock"), no()).is_err(),
            "vsock forced but unusable"
        );
        assert!(decide(None, Some("carrier-pigeon"), Ok(())).is_err());
        let c = decide(Some(TransportKind::Hybrid), Some("vsock"), Ok(())).expect("forced");
        assert_eq!(c.kind, TransportKind::Hybrid);
    }

    #[test]
    fn claiming_a_cid_without_vhost_vsock_says_why() {
        if vhost_vsock_usable().is_err() {
            let e = claim_cid(b"x").expect_err("no device");
            assert!(matches!(e, VmError::TransportUnavailable(..)), "{e}");
        } else {
            // two claims never get the same CID while both are held
            let a = claim_cid(b"same seed").expect("first");
            let b = claim_cid(b"same seed").expect("second");
            assert_ne!(a.cid, b.cid);
        }
    }

    #[test]
    fn short_state_dir_keeps_its_sockets() {
        let d = Path::new("/home/u/.vpdmn/x86_64");
        assert_eq!(socket_dir(d).expect("short"), d);
    }

    #[test]
    fn long_state_dir_moves_sockets_to_a_private_short_dir() {
        let long = PathBuf::from(format!("/tmp/{}/x86_64", "d".repeat(100)));
        let dir = socket_dir(&long).expect("runtime dir");
        assert_ne!(dir, long);
        assert!(dir.join("vhost-vsock.sock").as_os_str().len() <= SUN_PATH_MAX);
        let mode = std::fs::metadata(&dir)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // stable: the same state dir gets the same socket dir
        assert_eq!(socket_dir(&long).expect("again"), dir);
        let other = PathBuf::from(format!("/tmp/{}/aarch64", "d".repeat(100)));
        assert_ne!(socket_dir(&other).expect("other"), dir);
    }

    #[test]
    fn a_socket_dir_others_can_write_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().expect("tmp");
        let uid = nix::unistd::geteuid().as_raw();
        let dir = tmp.path().join("sockets");
        private_dir(&dir, uid).expect("new dir");
        private_dir(&dir, uid).expect("our own again");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let msg = private_dir(&dir, uid).expect_err("0777").to_string();
        assert!(
            msg.starts_with(&format!("refusing socket dir {}: ", dir.display())),
            "{msg}"
        );
        assert!(
            msg.contains("mode 0777") && msg.contains("fix: chmod go-w"),
            "{msg}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(private_dir(&link, uid).is_err());
    }

    #[test]
    fn hybrid_handshake_against_a_fake_vhost_device_vsock() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            // 1st: answers OK and echoes; 2nd: closes at once (guest not listening)
            let (mut c, _) = listener.accept().expect("accept");
            let mut req = [0u8; 12];
            c.read_exact(&mut req).expect("request");
            assert_eq!(&req, b"CONNECT 1024");
            let mut nl = [0u8; 1];
            c.read_exact(&mut nl).expect("newline");
            c.write_all(b"OK 1073741824\n").expect("reply");
            // then the agent's side of the authentication, then raw bytes
            let hello = vcontainer_proto::read_auth_frame(&mut c, auth::HOST_HELLO_LEN)
                .expect("hello")
                .expect("some");
            let (version, hn) = auth::check_host_hello(&secret(), &hello).expect("valid");
            let an = [3u8; auth::NONCE_LEN];
            let reply = auth::agent_reply(&secret(), version, &hn, &an);
            vcontainer_proto::write_frame(&mut c, vcontainer_proto::FrameType::Auth, &reply)
                .expect("reply");
            let proof = vcontainer_proto::read_auth_frame(&mut c, auth::HOST_PROOF_LEN)
                .expect("proof")
                .expect("some");
            auth::check_host_proof(&secret(), &hn, &an, &proof).expect("valid proof");
            c.write_all(b"payload").expect("payload");
            let (c2, _) = listener.accept().expect("accept 2");
            drop(c2);
        });
        let ep = Endpoint::Hybrid {
            uds_path: path.clone(),
        };
        let mut s = ep
            .connect(1024, Duration::from_secs(5), &secret())
            .expect("connect");
        let mut payload = [0u8; 7];
        s.read_exact(&mut payload).expect("payload");
        assert_eq!(&payload, b"payload", "no byte of the stream was eaten");
        let err = ep
            .connect(1024, Duration::from_secs(5), &secret())
            .expect_err("closed");
        assert!(err.to_string().contains("not listening"), "{err}");
        server.join().expect("server");
        drop(tmp);
        let gone = ep
            .connect(1024, Duration::from_secs(1), &secret())
            .expect_err("no socket");
        assert!(matches!(gone, VmError::Connect { port: 1024, .. }));
    }

    #[test]
    fn bad_handshake_reply_is_an_error() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 13];
            b.read_exact(&mut buf).expect("req");
            b.write_all(b"ERR nope\n").expect("reply");
        });
        let e = hybrid_handshake(&mut a, 1024).expect_err("bad reply");
        assert!(e.contains("ERR nope"), "{e}");
        t.join().expect("thread");
    }
}
