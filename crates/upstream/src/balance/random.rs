//! `random`: an instance drawn at random in proportion to its weight, among the eligible.

use crate::instance::Instance;

pub(crate) fn pick(instances: &[Instance], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    // Weighted reservoir sampling in one pass: each eligible instance replaces the choice with
    // the chance of its weight over the weights seen so far.
    let mut total = 0u64;
    let mut chosen = None;
    for (index, instance) in instances.iter().enumerate() {
        if !eligible(index) {
            continue;
        }
        let weight = u64::from(instance.weight);
        total += weight;
        if fastrand::u64(..total) < weight {
            chosen = Some(index);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{counts, instances};

    #[test]
    fn in_proportion_to_the_weights() {
        let instances = instances(&[1, 2, 3]);
        let counts = counts((0..6000).map(|_| pick(&instances, &|_| true)));
        for (index, expected) in [(0, 1000), (1, 2000), (2, 3000)] {
            let got = counts[&index] as i64;
            assert!((got - expected).abs() < expected / 5, "{counts:?}");
        }
        assert_eq!(pick(&instances, &|index| index == 1), Some(1));
        assert_eq!(pick(&instances, &|_| false), None);
    }
}
