//! Framing: length + type + payload, with a hard size bound.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest payload of one frame. Data streams are cut into chunks of at most this size, so
/// the bound costs nothing in throughput while keeping a hostile length from allocating.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Bytes before the payload: 4 (length, big endian) + 1 (type).
pub const HEADER_LEN: usize = 5;

/// What a frame's payload is. The numeric values are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// JSON [`crate::Request`] (host -> guest) or [`crate::Response`] (guest -> host).
    Control = 1,
    /// Bytes for the program's stdin (host -> guest).
    Stdin = 2,
    /// Bytes the program wrote to stdout, or the PTY output in tty mode (guest -> host).
    Stdout = 3,
    /// Bytes the program wrote to stderr (guest -> host).
    Stderr = 4,
    /// A chunk of a tar stream (either direction).
    Tar = 5,
    /// No more stdin: the agent closes the program's stdin.
    StdinEnd = 6,
    /// The program's stdout is closed.
    StdoutEnd = 7,
    /// The program's stderr is closed.
    StderrEnd = 8,
    /// The tar stream is complete.
    TarEnd = 9,
    /// One step of the authentication that opens every connection (binary, see
    /// [`crate::auth`]).
    Auth = 10,
}

impl FrameType {
    /// The frame type for a wire byte; `None` for an unknown type.
    pub fn from_wire(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Control,
            2 => Self::Stdin,
            3 => Self::Stdout,
            4 => Self::Stderr,
            5 => Self::Tar,
            6 => Self::StdinEnd,
            7 => Self::StdoutEnd,
            8 => Self::StderrEnd,
            9 => Self::TarEnd,
            10 => Self::Auth,
            _ => return None,
        })
    }

    /// End-of-stream markers carry no payload.
    pub fn is_end_marker(self) -> bool {
        matches!(
            self,
            Self::StdinEnd | Self::StdoutEnd | Self::StderrEnd | Self::TarEnd
        )
    }
}

/// Everything that can go wrong while encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    Oversize { len: usize, max: usize },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("end-of-stream frame of type {kind:?} carries {len} payload bytes")]
    PayloadOnEndMarker { kind: FrameType, len: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("expected an authentication frame, got a {kind:?} frame of {len} bytes")]
    NotAuth { kind: FrameType, len: usize },
    #[error("expected a control frame, got {0:?}")]
    NotControl(FrameType),
    #[error("malformed control message: {0}")]
    BadMessage(#[from] serde_json::Error),
    #[error(
        "protocol version mismatch: host speaks version {host}, guest agent speaks version {agent}; \
         rebuild the guest blobs (or the tool) so that both match"
    )]
    VersionMismatch { host: u32, agent: u32 },
    #[error("I/O error on the agent connection: {0}")]
    Io(#[from] io::Error),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A data or end frame. Fails if the payload is over the bound or on an end marker.
    pub fn new(kind: FrameType, payload: Vec<u8>) -> Result<Self, ProtoError> {
        check_payload(kind, payload.len())?;
        Ok(Self { kind, payload })
    }

    /// A control frame holding `message` as JSON.
    pub fn control<M: Serialize>(message: &M) -> Result<Self, ProtoError> {
        let payload = serde_json::to_vec(message)?;
        Self::new(FrameType::Control, payload)
    }

    /// Parse the payload of a control frame as `M`.
    pub fn parse<M: DeserializeOwned>(&self) -> Result<M, ProtoError> {
        if self.kind != FrameType::Control {
            return Err(ProtoError::NotControl(self.kind));
        }
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// Encode to wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        // `new` bounded the length, so it fits in u32.
        encode_header(&mut out, self.kind, self.payload.len());
        out.extend_from_slice(&self.payload);
        out
    }
}

fn check_payload(kind: FrameType, len: usize) -> Result<(), ProtoError> {
    if len > MAX_PAYLOAD {
        return Err(ProtoError::Oversize {
            len,
            max: MAX_PAYLOAD,
        });
    }
    if kind.is_end_marker() && len != 0 {
        return Err(ProtoError::PayloadOnEndMarker { kind, len });
    }
    Ok(())
}

fn encode_header(out: &mut Vec<u8>, kind: FrameType, len: usize) {
    // Callers have checked len <= MAX_PAYLOAD, which is far below u32::MAX.
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len32.to_be_bytes());
    out.push(kind as u8);
}

/// Encode one frame into bytes (header + payload).
pub fn encode_frame(kind: FrameType, payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    check_payload(kind, payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_header(&mut out, kind, payload.len());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decode one frame from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, `Ok(Some((frame, used)))`
/// with the number of bytes consumed otherwise. The header is validated before the payload
/// is awaited, so an oversize or unknown frame is an error as soon as its 5 bytes are seen.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let (len, kind) = parse_header(header)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((
        Frame {
            kind,
            payload: payload.to_vec(),
        },
        HEADER_LEN + len,
    )))
}

fn parse_header(header: &[u8]) -> Result<(usize, FrameType), ProtoError> {
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[..4]);
    let len = u32::from_be_bytes(len_bytes) as usize;
    let kind = FrameType::from_wire(header[4]).ok_or(ProtoError::UnknownType(header[4]))?;
    check_payload(kind, len)?;
    Ok((len, kind))
}

/// Write one frame with a single `write_all`, so that frames from several threads sharing a
/// stream behind a mutex never interleave.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    kind: FrameType,
    payload: &[u8],
) -> Result<(), ProtoError> {
    let bytes = encode_frame(kind, payload)?;
    writer.write_all(&bytes)?;
    writer.flush()?;
    Ok(())
}

/// Read one frame. `Ok(None)` means the peer closed the connection cleanly between frames;
/// a close inside a frame is [`ProtoError::Truncated`].
pub fn read_frame<R: Read + ?Sized>(reader: &mut R) -> Result<Option<Frame>, ProtoError> {
    let Some((len, kind)) = read_header(reader)? else {
        return Ok(None);
    };
    let payload = read_payload(reader, len)?;
    Ok(Some(Frame { kind, payload }))
}

/// Read one authentication frame of exactly `len` payload bytes (see [`crate::auth`]).
/// Anything else fails as soon as its header is seen, before a payload byte is read or
/// allocated: an unauthenticated peer gets nothing but a closed connection.
pub fn read_auth_frame<R: Read + ?Sized>(
    reader: &mut R,
    len: usize,
) -> Result<Option<Vec<u8>>, ProtoError> {
    let Some((got_len, kind)) = read_header(reader)? else {
        return Ok(None);
    };
    if kind != FrameType::Auth || got_len != len {
        return Err(ProtoError::NotAuth { kind, len: got_len });
    }
    read_payload(reader, len).map(Some)
}

fn read_header<R: Read + ?Sized>(reader: &mut R) -> Result<Option<(usize, FrameType)>, ProtoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    parse_header(&header).map(Some)
}

fn read_payload<R: Read + ?Sized>(reader: &mut R, len: usize) -> Result<Vec<u8>, ProtoError> {
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ProtoError::Truncated
        } else {
            ProtoError::Io(e)
        }
    })?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, Response};

    fn roundtrip(kind: FrameType, payload: &[u8]) {
        let bytes = encode_frame(kind, payload).expect("encode");
        let (frame, used) = decode_frame(&bytes).expect("decode").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(frame.kind, kind);
        assert_eq!(frame.payload, payload);
        let mut cursor = io::Cursor::new(bytes);
        let frame2 = read_frame(&mut cursor).expect("read").expect("frame");
        assert_eq!(frame2, frame);
        assert!(read_frame(&mut cursor).expect("eof").is_none());
    }

    #[test]
    fn data_frames_round_trip() {
        roundtrip(FrameType::Stdout, b"hello\n");
        roundtrip(FrameType::Stderr, b"");
        roundtrip(FrameType::Stdin, &[0, 255, 3, 4]);
        roundtrip(FrameType::Tar, &vec![7u8; MAX_PAYLOAD]);
        roundtrip(FrameType::TarEnd, b"");
    }

    #[test]
    fn header_is_big_endian_length_then_type() {
        let bytes = encode_frame(FrameType::Stderr, b"abc").expect("encode");
        assert_eq!(bytes, vec![0, 0, 0, 3, 4, b'a', b'b', b'c']);
    }

    #[test]
    fn control_round_trip() {
        let req = Request::Exec(crate::ExecRequest::new(["sh", "-c", "echo 'a b'; exit 7"]));
        let frame = Frame::control(&req).expect("encode");
        let bytes = frame.to_bytes();
        let (back, _) = decode_frame(&bytes).expect("decode").expect("complete");
        assert_eq!(back.parse::<Request>().expect("parse"), req);
        let resp = Response::Exited {
            status: crate::ExitStatus::Signal(9),
        };
        let back: Response = Frame::control(&resp).expect("enc").parse().expect("parse");
        assert_eq!(back, resp);
    }

    #[test]
    fn truncated_input_waits_or_fails() {
        let bytes = encode_frame(FrameType::Stdout, b"0123456789").expect("encode");
        for cut in 0..bytes.len() {
            assert!(decode_frame(&bytes[..cut]).expect("no error").is_none());
            let mut cursor = io::Cursor::new(bytes[..cut].to_vec());
            let result = read_frame(&mut cursor);
            if cut == 0 {
                assert!(result.expect("clean eof").is_none());
            } else {
                assert!(matches!(result, Err(ProtoError::Truncated)), "cut {cut}");
            }
        }
    }

    #[test]
    fn oversize_is_refused_without_allocating() {
        let huge = [0xff, 0xff, 0xff, 0xff, FrameType::Stdout as u8];
        assert!(matches!(
            decode_frame(&huge),
            Err(ProtoError::Oversize { .. })
        ));
        // read_frame must fail on the header alone, not try to read 4 GiB.
        let mut cursor = io::Cursor::new(huge.to_vec());
        assert!(matches!(
            read_frame(&mut cursor),
            Err(ProtoError::Oversize { .. })
        ));
        let one_too_many = vec![0u8; MAX_PAYLOAD + 1];
        assert!(matches!(
            encode_frame(FrameType::Tar, &one_too_many),
            Err(ProtoError::Oversize { .. })
        ));
    }

    #[test]
    fn auth_frames_are_checked_before_their_payload_is_read() {
        let good = encode_frame(FrameType::Auth, &[7u8; 4]).expect("encode");
        let mut cursor = io::Cursor::new(good);
        assert_eq!(
            read_auth_frame(&mut cursor, 4).expect("read"),
            Some(vec![7u8; 4])
        );
        // a control frame (a bare request) or a wrong length: refused after the header
        for (kind, len) in [(FrameType::Control, 4), (FrameType::Auth, 5)] {
            let mut bytes = encode_frame(kind, &vec![1u8; len]).expect("encode");
            bytes.truncate(HEADER_LEN);
            let mut cursor = io::Cursor::new(bytes);
            assert!(matches!(
                read_auth_frame(&mut cursor, 4),
                Err(ProtoError::NotAuth { .. })
            ));
        }
        assert_eq!(
            read_auth_frame(&mut io::Cursor::new(Vec::new()), 4).expect("eof"),
            None
        );
    }

    #[test]
    fn unknown_type_is_an_error() {
        for bad in [0u8, 11, 200, 255] {
            let bytes = [0, 0, 0, 0, bad];
            assert!(matches!(
                decode_frame(&bytes),
                Err(ProtoError::UnknownType(b)) if b == bad
            ));
        }
    }

    #[test]
    fn end_markers_have_no_payload() {
        assert!(encode_frame(FrameType::StdinEnd, b"x").is_err());
        let bytes = [0, 0, 0, 1, FrameType::TarEnd as u8, b'x'];
        assert!(matches!(
            decode_frame(&bytes),
            Err(ProtoError::PayloadOnEndMarker { .. })
        ));
    }

    #[test]
    fn garbage_control_payload_is_an_error() {
        let frame = Frame::new(FrameType::Control, b"{not json".to_vec()).expect("frame");
        assert!(matches!(
            frame.parse::<Request>(),
            Err(ProtoError::BadMessage(_))
        ));
        let data = Frame::new(FrameType::Stdout, b"{}".to_vec()).expect("frame");
        assert!(matches!(
            data.parse::<Request>(),
            Err(ProtoError::NotControl(FrameType::Stdout))
        ));
    }
}
