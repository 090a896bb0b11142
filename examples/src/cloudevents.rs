//! CloudEvents 1.0 over HTTP in binary content mode: the event's attributes travel as
//! `ce-*` headers and its data as the request body.

use http::HeaderMap;

pub const SPECVERSION: &str = "ce-specversion";
pub const ID: &str = "ce-id";
pub const SOURCE: &str = "ce-source";
pub const TYPE: &str = "ce-type";
pub const SUBJECT: &str = "ce-subject";

/// The only CloudEvents version these examples speak.
pub const SPEC_VERSION_1_0: &str = "1.0";

/// The attributes of a received event that the examples keep.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attributes {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Why a request is not a binary-mode CloudEvent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEvent {
    #[error("missing or empty {0} header")]
    Missing(&'static str),
    #[error("unsupported {SPECVERSION} {0:?}; expected \"1.0\"")]
    SpecVersion(String),
}

/// Reads and checks the required attributes (CloudEvents 1.0 §3.1: id, source,
/// specversion, type) from the headers.
pub fn attributes(headers: &HeaderMap) -> Result<Attributes, InvalidEvent> {
    let required = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or(InvalidEvent::Missing(name))
    };
    let version = required(SPECVERSION)?;
    if version != SPEC_VERSION_1_0 {
        return Err(InvalidEvent::SpecVersion(version));
    }
    Ok(Attributes {
        id: required(ID)?,
        source: required(SOURCE)?,
        kind: required(TYPE)?,
        subject: required(SUBJECT).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn complete_headers_are_an_event() {
        let h = headers(&[
            (SPECVERSION, "1.0"),
            (ID, "e1"),
            (SOURCE, "/orders"),
            (TYPE, "order.placed"),
        ]);
        let a = attributes(&h).expect("valid event");
        assert_eq!(a.id, "e1");
        assert_eq!(a.kind, "order.placed");
        assert_eq!(a.subject, None);
    }

    #[test]
    fn each_missing_attribute_is_named() {
        let full = [
            (SPECVERSION, "1.0"),
            (ID, "e1"),
            (SOURCE, "/o"),
            (TYPE, "t"),
        ];
        for skip in 0..full.len() {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                attributes(&headers(&partial)),
                Err(InvalidEvent::Missing(full[skip].0))
            );
        }
        let blank = headers(&[(SPECVERSION, "1.0"), (ID, " "), (SOURCE, "/o"), (TYPE, "t")]);
        assert_eq!(attributes(&blank), Err(InvalidEvent::Missing(ID)));
    }

    #[test]
    fn other_spec_versions_are_rejected() {
        let h = headers(&[
            (SPECVERSION, "0.3"),
            (ID, "e1"),
            (SOURCE, "/o"),
            (TYPE, "t"),
        ]);
        assert_eq!(attributes(&h), Err(InvalidEvent::SpecVersion("0.3".into())));
    }
}
