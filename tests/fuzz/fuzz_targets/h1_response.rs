//! The proxy's upstream HTTP/1.1 response reader (head, interim answers, framing,
//! chunked decoding, trailers) on arbitrary bytes: an error or a response, never
//! a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_proxy::fuzzing::h1_response(data);
});
