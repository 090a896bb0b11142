//! Least request: power of two choices on requests in flight, so a slow endpoint
//! (which accumulates in-flight requests) gets fewer new ones. The draws are
//! weighted, which is how endpoint weights are honoured.

use std::sync::Arc;

use super::Candidate;

pub(crate) fn cost<E: Candidate>(endpoint: &Arc<E>) -> f64 {
    f64::from(endpoint.load().in_flight())
}

#[cfg(test)]
mod tests {
    use crate::balance::tests::endpoints;
    use crate::balance::{Algorithm, Balancer};

    #[test]
    fn prefers_the_endpoint_with_fewer_requests_in_flight() {
        let (eps, _reg) = endpoints(&[100, 100]);
        for _ in 0..5 {
            eps[0].stats.load.start();
        }
        let b = Balancer::new(Algorithm::LeastRequest, &eps);
        let busy = (0..200)
            .filter(|_| b.pick(&eps, None, None) == Some(0))
            .count();
        assert_eq!(busy, 0);
    }
}
