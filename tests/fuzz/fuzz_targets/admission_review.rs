//! The webhook's AdmissionReview parsing and injection: any request body gets a
//! review (allowed, patched or denied) or an error, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weft_inject::admission::review;
use weft_inject::config::InjectConfig;
use weft_inject::inject::Injector;

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| Injector::new(InjectConfig::default()));

fuzz_target!(|data: &[u8]| {
    let _ = review(&INJECTOR, data);
});
