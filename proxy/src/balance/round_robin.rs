//! Smooth weighted round robin, computed once per endpoint set: weights are expanded
//! into a schedule that spreads each endpoint's turns evenly (nginx's smooth WRR),
//! and requests walk it with one atomic cursor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Candidate;

#[derive(Debug)]
pub(crate) struct RoundRobin {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

/// Schedules longer than this approximate the weight ratios.
const MAX_SCHEDULE: u32 = 4096;

impl RoundRobin {
    pub(crate) fn new<E: Candidate>(endpoints: &[Arc<E>], ready: &[u32]) -> RoundRobin {
        RoundRobin {
            schedule: schedule(endpoints, ready),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in the schedule that `ok` accepts.
    pub(crate) fn pick(&self, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        for _ in 0..len {
            let n = self.cursor.fetch_add(1, Ordering::Relaxed);
            let idx = self.schedule[n % len] as usize;
            if ok(idx) {
                return Some(idx);
            }
        }
        None
    }
}

fn schedule<E: Candidate>(endpoints: &[Arc<E>], ready: &[u32]) -> Vec<u32> {
    let ready: Vec<(u32, u32)> = ready
        .iter()
        .map(|&i| (i, endpoints[i as usize].weight().max(1)))
        .collect();
    if ready.is_empty() {
        return Vec::new();
    }
    let g = ready.iter().fold(0u32, |g, (_, w)| gcd(g, *w)).max(1);
    let total: u32 = ready.iter().map(|(_, w)| w / g).sum();
    let scale = if total > MAX_SCHEDULE {
        f64::from(total) / f64::from(MAX_SCHEDULE)
    } else {
        1.0
    };
    let weights: Vec<(u32, i64)> = ready
        .iter()
        .map(|(i, w)| (*i, ((f64::from(w / g) / scale).round() as i64).max(1)))
        .collect();
    let sum: i64 = weights.iter().map(|(_, w)| w).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for _ in 0..sum {
        let mut best = 0;
        for (k, (_, w)) in weights.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= sum;
        out.push(weights[best].0);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::balance::tests::endpoints;
    use crate::balance::{Algorithm, Balancer};

    #[test]
    fn follows_weights_exactly_and_smoothly() {
        let (eps, _reg) = endpoints(&[100, 300, 200]);
        let b = Balancer::new(Algorithm::RoundRobin, &eps);
        let picks: Vec<usize> = (0..600)
            .map(|_| b.pick(&eps, None, None).expect("an endpoint"))
            .collect();
        let mut counts = HashMap::new();
        for p in &picks {
            *counts.entry(*p).or_insert(0) += 1;
        }
        assert_eq!(counts[&0], 100);
        assert_eq!(counts[&1], 300);
        assert_eq!(counts[&2], 200);
        // Smooth: the heaviest endpoint never gets more than 2 turns in a row here.
        let longest = picks
            .windows(3)
            .filter(|w| w.iter().all(|&p| p == 1))
            .count();
        assert_eq!(longest, 0);
    }
}
