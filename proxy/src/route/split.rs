//! Weighted choice among a route's backends: a random draw over cumulative
//! weights, so each request costs one random number and a short scan.

use rand::Rng as _;

#[derive(Debug)]
pub(crate) struct Split {
    /// Running totals of the weights, in backend order.
    cumulative: Box<[u64]>,
}

impl Split {
    /// None when there is nothing to choose from (every weight 0, or no backends).
    pub(crate) fn new(weights: &[u32]) -> Option<Split> {
        let mut total = 0u64;
        let cumulative: Box<[u64]> = weights
            .iter()
            .map(|w| {
                total += u64::from(*w);
                total
            })
            .collect();
        (total > 0).then_some(Split { cumulative })
    }

    /// The index of the chosen backend.
    pub(crate) fn pick(&self) -> usize {
        if self.cumulative.len() == 1 {
            return 0;
        }
        let total = self.cumulative.last().copied().unwrap_or(1);
        let draw = rand::rng().random_range(0..total);
        self.cumulative.partition_point(|c| *c <= draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weights_take_nothing_and_the_rest_split_by_weight() {
        assert!(Split::new(&[0, 0]).is_none());
        let split = Split::new(&[90, 0, 10]).expect("a split");
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[split.pick()] += 1;
        }
        assert_eq!(counts[1], 0);
        // 18 000 expected; 5 standard deviations is about 210.
        assert!((17_700..=18_300).contains(&counts[0]), "{counts:?}");
    }
}
