//! Injected faults: a delay before the request goes on, or an abort answered by
//! the proxy, each for a percentage of requests.

use std::time::Duration;

use http::StatusCode;
use rand::Rng as _;

/// Chances are kept in parts per million, so percentages like 0.1 % stay exact.
const MILLION: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Chance(u32);

impl Chance {
    /// `percent` in 0..=100 (checked by the caller).
    pub(crate) fn percent(percent: f64) -> Chance {
        let ppm = (percent * 10_000.0).round().clamp(0.0, f64::from(MILLION));
        // In range by the clamp.
        Chance(ppm as u32)
    }

    pub(crate) fn roll(self) -> bool {
        match self.0 {
            0 => false,
            MILLION => true,
            ppm => rand::rng().random_range(0..MILLION) < ppm,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Fault {
    pub(crate) delay: Option<(Duration, Chance)>,
    pub(crate) abort: Option<(StatusCode, Chance)>,
}

impl Fault {
    /// The delay this request gets, if it is chosen for one.
    pub(crate) fn delay(&self) -> Option<Duration> {
        self.delay
            .and_then(|(d, chance)| chance.roll().then_some(d))
    }

    /// The status this request is aborted with, if it is chosen for one.
    pub(crate) fn abort(&self) -> Option<StatusCode> {
        self.abort
            .and_then(|(s, chance)| chance.roll().then_some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chances_follow_their_percentage() {
        assert!(!Chance::percent(0.0).roll());
        assert!(Chance::percent(100.0).roll());
        let quarter = Chance::percent(25.0);
        let hits = (0..40_000).filter(|_| quarter.roll()).count();
        // 10 000 expected; 5 standard deviations is about 440.
        assert!((9_500..=10_500).contains(&hits), "{hits}");
    }
}
