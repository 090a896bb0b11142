//! The proxy's own configuration, as YAML (file mode) and as the injected
//! sidecar's environment (`NAME=value` lines): an error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        weft_proxy::fuzzing::yaml_config(text);
        weft_proxy::fuzzing::env_config(text);
    }
});
