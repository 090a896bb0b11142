//! Protocol detection on a connection's first bytes: every prefix is classified
//! without a panic, and a decision never changes as more bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_proxy::fuzzing::detect(data);
});
