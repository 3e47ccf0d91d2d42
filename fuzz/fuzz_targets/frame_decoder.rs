//! Fuzzes `FrameDecoder` with arbitrary bytes pushed in arbitrary splits: it must never
//! panic, and every frame it accepts must be one well-formed MessagePack value.
//!
//! Input layout: byte 0 picks the maximum frame size, byte 1 seeds the split sizes, the
//! rest is the stream.

#![no_main]

use cairn_net::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let mut decoder = FrameDecoder::with_max_frame(usize::from(*max) * 64 + 1);
    let mut split = u32::from(*seed) | 1;
    let mut rest = stream;
    while !rest.is_empty() {
        // A cheap LCG for the split sizes.
        split = split.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let take = 1 + (split >> 16) as usize % rest.len();
        decoder.push(&rest[..take]);
        rest = &rest[take..];
        loop {
            match decoder.pop() {
                Ok(Some(frame)) => {
                    assert!(!frame.payload().is_empty());
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.is_poisoned());
                    return;
                }
            }
        }
    }
    let _ = decoder.finish();
});
