//! Power of two choices over a peak-EWMA of latency, weighted by requests in flight
//! (the default balancer). The estimate itself lives in [`super::Load`], beside the
//! in-flight count, because both survive snapshot swaps; the choice is
//! [`super::Balancer::p2c`] with cost `ewma × (in_flight + 1)`. An endpoint with no
//! measurement yet is tried first while idle, then priced at `default_rtt` per
//! request in flight.

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::balance::tests::endpoints;
    use crate::balance::{Algorithm, Balancer, DEFAULT_DECAY};

    #[test]
    fn a_fast_endpoint_under_load_shares_with_a_slower_idle_one() {
        let (eps, _reg) = endpoints(&[100, 100]);
        eps[0].stats.load.observe(
            Duration::from_millis(1),
            DEFAULT_DECAY,
            crate::clock::now_nanos(),
        );
        eps[1].stats.load.observe(
            Duration::from_millis(10),
            DEFAULT_DECAY,
            crate::clock::now_nanos(),
        );
        for _ in 0..20 {
            eps[0].stats.load.start();
        }
        let b = Balancer::new(Algorithm::default(), &eps);
        assert_eq!(b.pick(&eps, None, None), Some(1));
    }

    #[test]
    fn an_endpoint_without_a_sample_is_tried_before_measured_ones() {
        let (eps, _reg) = endpoints(&[100, 100]);
        eps[0].stats.load.observe(
            Duration::from_millis(1),
            DEFAULT_DECAY,
            crate::clock::now_nanos(),
        );
        let b = Balancer::new(Algorithm::default(), &eps);
        assert_eq!(b.pick(&eps, None, None), Some(1));
        // Once a request is in flight to it, it costs `default_rtt` (30 ms) again.
        eps[1].stats.load.start();
        assert_eq!(b.pick(&eps, None, None), Some(0));
    }
}
