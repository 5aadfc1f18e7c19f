//! Fuzz the frame decoder and the control-message parser with arbitrary bytes: they face a
//! peer we do not trust (a guest can be broken or hostile), so no input may panic or allocate
//! more than the frame bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vcontainer_proto::{decode_frame, read_frame, Request, Response, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode_frame(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        let _ = frame.parse::<Request>();
        let _ = frame.parse::<Response>();
        rest = &rest[used..];
    }
    let mut cursor = std::io::Cursor::new(data);
    while let Ok(Some(frame)) = read_frame(&mut cursor) {
        assert!(frame.payload.len() <= MAX_PAYLOAD);
    }
});
