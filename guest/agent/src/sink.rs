//! The sending half of a connection, shared by the threads of one operation.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vcontainer_proto::{write_frame, FrameType, ProtoError, Response, MAX_PAYLOAD};

/// Writes whole frames under a lock, so stdout and stderr pumps never interleave bytes of
/// two frames. After [`FrameSink::close`] everything is dropped: the final `Exited` must be
/// the last frame the host sees.
#[derive(Clone)]
pub struct FrameSink {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    closed: Arc<AtomicBool>,
}

impl FrameSink {
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self {
            writer: Arc::new(Mutex::new(writer)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Send raw bytes as one or more frames of `kind` (cut at the frame bound).
    pub fn data(&self, kind: FrameType, bytes: &[u8]) -> Result<(), ProtoError> {
        if bytes.is_empty() {
            return self.frame(kind, bytes);
        }
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            self.frame(kind, chunk)?;
        }
        Ok(())
    }

    /// Send one frame (an end marker when `bytes` is empty and `kind` is one).
    pub fn frame(&self, kind: FrameType, bytes: &[u8]) -> Result<(), ProtoError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        write_frame(&mut *writer, kind, bytes)
    }

    pub fn respond(&self, response: &Response) -> Result<(), ProtoError> {
        let frame = vcontainer_proto::Frame::control(response)?;
        self.frame(FrameType::Control, &frame.payload)
    }

    /// Send the last response of the operation and drop anything sent after it.
    pub fn finish(&self, response: &Response) -> Result<(), ProtoError> {
        let frame = vcontainer_proto::Frame::control(response)?;
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        write_frame(&mut *writer, FrameType::Control, &frame.payload)
    }
}
