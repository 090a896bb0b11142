//! Port lists as operators write them, in annotations, `WEFT_*` variables and the
//! proxy's config: `3306,8000-8099`. The injector and the proxy parse them here,
//! so both accept and refuse the same lists.

use std::fmt;

/// One port or an inclusive range; a single port is `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// `80` or `8000-8099`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a port list was refused, naming the item at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortListError {
    #[error("{0:?} is not a port (1-65535) or range")]
    NotAPort(String),
    #[error("{0:?}: the range runs backwards")]
    Backwards(String),
}

/// A sorted, de-duplicated list of ports and ranges; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(Vec<PortRange>);

/// Ports handled as opaque TCP when the operator names none: the well-known ports of
/// protocols where the server speaks first (SMTP 25 and 587, MySQL 3306, NATS 4222,
/// Galera 4444, Elasticsearch transport 9300, memcached's binary greeting 11211), so
/// protocol detection never waits on a silent client, and of brokers and databases
/// whose traffic is never HTTP (PostgreSQL 5432, AMQP 5672, Redis 6379, Kafka 9092).
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4222,4444,5432,5672,6379,9092,9300,11211";

impl PortList {
    /// [`DEFAULT_OPAQUE_PORTS`] as a list.
    pub fn default_opaque() -> PortList {
        PortList::parse(DEFAULT_OPAQUE_PORTS)
            .unwrap_or_else(|e| unreachable!("the built-in opaque port list parses: {e}"))
    }

    /// Parses `"3306, 5432,8000-8099"`: items separated by commas, spaces around
    /// them allowed; an empty string is an empty list.
    pub fn parse(text: &str) -> Result<PortList, PortListError> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let port = |s: &str| match s.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(PortListError::NotAPort(item.to_string())),
            };
            let range = match item.split_once('-') {
                Some((a, b)) => PortRange {
                    first: port(a)?,
                    last: port(b)?,
                },
                None => PortRange::single(port(item)?),
            };
            if range.first > range.last {
                return Err(PortListError::Backwards(item.to_string()));
            }
            ranges.push(range);
        }
        Ok(PortList::from_ranges(ranges))
    }

    pub fn from_ranges(mut ranges: Vec<PortRange>) -> PortList {
        ranges.sort();
        ranges.dedup();
        PortList(ranges)
    }

    /// This list with `port` added.
    pub fn with(mut self, port: u16) -> PortList {
        self.0.push(PortRange::single(port));
        PortList::from_ranges(self.0)
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    pub fn contains(&self, port: u16) -> bool {
        // A handful of ranges at most: a scan beats anything cleverer.
        self.0.iter().any(|r| r.contains(port))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lowest port in both lists, if any: two lists that must not overlap (an
    /// app port cannot speak only HTTP/1.1 and only HTTP/2) are refused by it.
    pub fn first_shared(&self, other: &PortList) -> Option<u16> {
        self.0
            .iter()
            .flat_map(|a| {
                other.0.iter().filter_map(move |b| {
                    let first = a.first.max(b.first);
                    (first <= a.last.min(b.last)).then_some(first)
                })
            })
            .min()
    }
}

/// The list syntax `parse` reads: `3306,8000-8099`.
impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_merged_and_printed_back() {
        let l = PortList::parse(" 5432,3306, 8000-8010,3306").expect("valid list");
        assert_eq!(l.to_string(), "3306,5432,8000-8010");
        assert!(l.contains(8005) && !l.contains(8011));
        assert_eq!(l.clone().with(1).to_string(), "1,3306,5432,8000-8010");
        assert!(PortList::parse("").expect("empty").is_empty());
    }

    #[test]
    fn the_first_shared_port_of_two_lists() {
        let l = |t: &str| PortList::parse(t).expect("valid list");
        assert_eq!(l("80,8000-8010").first_shared(&l("8005-9000")), Some(8005));
        assert_eq!(l("9000,8080").first_shared(&l("1-8080")), Some(8080));
        assert_eq!(l("80,8000-8010").first_shared(&l("81-7999,8011")), None);
        assert_eq!(l("").first_shared(&l("80")), None);
    }

    #[test]
    fn bad_items_are_named() {
        for (bad, err) in [
            ("0", PortListError::NotAPort("0".into())),
            ("70000", PortListError::NotAPort("70000".into())),
            ("80,x", PortListError::NotAPort("x".into())),
            ("1-2-3", PortListError::NotAPort("1-2-3".into())),
            ("9000-8000", PortListError::Backwards("9000-8000".into())),
        ] {
            assert_eq!(PortList::parse(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn the_default_opaque_ports_name_the_server_first_and_broker_ports() {
        let list = PortList::default_opaque();
        for port in [25, 3306, 4222, 5432, 5672, 6379, 9092, 11211] {
            assert!(list.contains(port), "{port}");
        }
        assert!(!list.contains(80) && !list.contains(8080));
        assert_eq!(list.to_string(), DEFAULT_OPAQUE_PORTS);
    }
}
