//! The CA's CSR handling (`Identity.Certify`): any bytes as a CSR PEM are either
//! signed for the identity asked for or refused, never a panic.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use weft_api::spiffe::SpiffeId;
use weft_control::identity::ca::{CertificateAuthority, generate_root};

static CA: LazyLock<(CertificateAuthority, SpiffeId)> = LazyLock::new(|| {
    let (cert, key) = generate_root("Weft fuzz CA").expect("a root");
    let ca = CertificateAuthority::from_pem(&cert, &key, Duration::from_secs(3600))
        .expect("the CA loads its own root");
    let id = SpiffeId::new("cluster.local", "default", "fuzz").expect("a valid id");
    (ca, id)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(pem) = std::str::from_utf8(data) {
        let (ca, id) = &*CA;
        let _ = ca.issue(pem, id);
    }
});
