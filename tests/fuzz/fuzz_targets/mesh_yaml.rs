//! The control plane's mesh YAML: any text is either a mesh that validates or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_api::mesh::MeshSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(mesh) = MeshSpec::from_yaml(text, "fuzz")
    {
        let _ = mesh.validate();
    }
});
