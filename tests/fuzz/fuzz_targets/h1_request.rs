//! The proxy's HTTP/1.1 request encoder: any request `http` accepts is written as
//! a head that parses back to the same method, target and fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // method \0 target \0 name \0 value \0 name \0 value ...
    let mut parts = data.split(|b| *b == 0);
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let rest: Vec<&[u8]> = parts.collect();
    let fields: Vec<(&[u8], &[u8])> = rest.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    weft_proxy::fuzzing::h1_request(method, target, &fields);
});
