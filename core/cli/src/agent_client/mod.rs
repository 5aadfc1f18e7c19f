//! Host-side client of the guest agent protocol (one connection per operation).
