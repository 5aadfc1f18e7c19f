//! Fuzz target: the guest agent's tar unpack behind `PushTar` (guest/agent/src/tarx.rs),
//! into a fresh directory per input. An error is fine; a panic, or any change outside the
//! destination directory, is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vcontainer_fuzz::{fix_tar_checksums, Scratch};

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    fix_tar_checksums(&mut tar);
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let _ = vcontainer_agent::fuzzing::push_tar(&scratch.dest, &mut tar.as_slice());
    scratch.assert_outside_untouched();
});
