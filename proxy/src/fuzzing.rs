//! What the fuzz targets in tests/fuzz drive, behind the `fuzzing` feature: the
//! proxy's parsers of what peers and operators send it.

/// The upstream HTTP/1.1 response reader (head, interim answers, body framing,
/// chunked decoding, trailers) on arbitrary bytes.
pub fn h1_response(answer: &[u8]) {
    crate::http::h1_client::fuzz::response(answer);
}

/// The HTTP/1.1 request encoder: what it writes must parse back as the request.
pub fn h1_request(method: &[u8], target: &[u8], fields: &[(&[u8], &[u8])]) {
    crate::http::h1_client::fuzz::request(method, target, fields);
}

/// Protocol detection on a connection's first bytes, each prefix as it arrives.
pub fn detect(first_bytes: &[u8]) {
    crate::detect::classify_every_prefix(first_bytes);
}

/// The proxy's environment configuration (the injected sidecar's), from
/// `NAME=value` lines.
pub fn env_config(lines: &str) {
    let vars: std::collections::HashMap<&str, &str> =
        lines.lines().filter_map(|l| l.split_once('=')).collect();
    let _ = crate::config::Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()));
}

/// The proxy's YAML configuration file.
pub fn yaml_config(text: &str) {
    let _ = crate::config::Config::parse(text, "fuzz");
}
