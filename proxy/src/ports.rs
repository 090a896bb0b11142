//! Port sets given by the operator (opaque ports, probe ports): the injector's list
//! syntax (`3306,8000-8099`), also accepted in the YAML config as that string or as
//! a list of ports and ranges.

use std::fmt;

use serde::Deserialize;

use weft_api::ports::PortList;

/// A sorted set of ports and inclusive ranges; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortSet(PortList);

impl PortSet {
    /// Parses `7191,8000-8099`; spaces around items are allowed, empty means none.
    pub(crate) fn parse(text: &str) -> Result<PortSet, String> {
        PortList::parse(text)
            .map(PortSet)
            .map_err(|e| e.to_string())
    }

    /// The well-known server-first and broker ports (`weft_api::ports`), opaque
    /// unless the operator gives a list of their own.
    pub(crate) fn default_opaque() -> PortSet {
        PortSet(PortList::default_opaque())
    }

    pub(crate) fn contains(&self, port: u16) -> bool {
        self.0.contains(port)
    }

    /// The lowest port in both sets, if any.
    pub(crate) fn first_shared(&self, other: &PortSet) -> Option<u16> {
        self.0.first_shared(&other.0)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `"3306,8000-8099"` or `[3306, "8000-8099"]`.
impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Port(u16),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<Item>),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Item::Port(p) => p.to_string(),
                    Item::Text(t) => t,
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        PortSet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_are_members() {
        let set = PortSet::parse("5432, 8000-8099,3306").expect("valid");
        for p in [3306, 5432, 8000, 8050, 8099] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 3307, 7999, 8100] {
            assert!(!set.contains(p), "{p}");
        }
        assert_eq!(set.to_string(), "3306,5432,8000-8099");
    }

    #[test]
    fn empty_means_none() {
        let set = PortSet::parse("").expect("valid");
        assert!(set.is_empty());
        assert!(!set.contains(80));
    }

    #[test]
    fn bad_items_are_named() {
        for (text, needle) in [
            ("80,http", "\"http\""),
            ("0", "\"0\""),
            ("70000", "\"70000\""),
            ("90-80", "backwards"),
        ] {
            let err = PortSet::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn yaml_takes_a_string_or_a_list() {
        let a: PortSet = yaml_serde::from_str("\"5432,8000-8001\"").expect("string");
        let b: PortSet = yaml_serde::from_str("[5432, \"8000-8001\"]").expect("list");
        assert_eq!(a, b);
        assert!(yaml_serde::from_str::<PortSet>("[x]").is_err());
    }
}
