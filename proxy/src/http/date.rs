//! The Date field of this second, formatted once a second per thread (as hyper
//! does), and kept out of HPACK's dynamic table.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// Today's Date field.
pub(crate) fn now() -> Option<HeaderValue> {
    thread_local! {
        static CACHED: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        match &*cached {
            Some((at, value)) if *at == secs => Some(value.clone()),
            _ => {
                let mut value = HeaderValue::try_from(httpdate::fmt_http_date(now)).ok()?;
                unindexed(&mut value);
                *cached = Some((secs, value.clone()));
                Some(value)
            }
        }
    })
}

/// Whether `value` is the Date of this second: what the next proxy would write
/// itself.
pub(crate) fn is_now(value: &[u8]) -> bool {
    now().is_some_and(|now| now.as_bytes() == value)
}

/// Marks a value h2 must send as a literal, never entering HPACK's dynamic table.
/// For Date: h2's encoder keeps every value a name had in one chain and walks it
/// from the oldest on each lookup, so a Date that changes every second leaves up
/// to ~60 stale entries in a 4 KiB table, all compared byte by byte on every
/// answer of a long-lived connection. A literal costs a few bytes more instead.
pub(crate) fn unindexed(value: &mut HeaderValue) {
    value.set_sensitive(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_kept_out_of_the_table() {
        let date = now().expect("a date");
        assert!(date.is_sensitive());
        let text = date.to_str().expect("ascii");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }

    #[test]
    fn only_this_seconds_date_is_now() {
        let date = now().expect("a date");
        // The second may turn between the two reads; then the next one is now.
        assert!(is_now(date.as_bytes()) || is_now(now().expect("a date").as_bytes()));
        assert!(!is_now(b"Thu, 01 Jan 1970 00:00:00 GMT"));
        assert!(!is_now(b""));
    }
}
