//! Reading what a peer's certificate says about it: its one URI SAN.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The single URI SAN of `cert`, if it has exactly one; Weft certificates never
/// carry more, and a certificate naming two identities proves neither.
pub(crate) fn uri_san(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(u), None) => Some(u.to_string()),
        _ => None,
    }
}
