//! `least_connections`: the instance with the fewest requests in flight for its weight, ties
//! broken at random (so that instances at rest do not all send the next burst to the first).
//! In flight counts every worker's requests: the counters are shared.

use crate::instance::Instance;

pub(crate) fn pick(instances: &[Instance], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    let mut ties = 0u32;
    for (index, instance) in instances.iter().enumerate() {
        if !eligible(index) {
            continue;
        }
        let load = u64::from(instance.in_flight());
        let weight = u64::from(instance.weight);
        match best {
            // load / weight against the best's, without division.
            Some((_, best_load, best_weight)) if load * best_weight > best_load * weight => {}
            Some((_, best_load, best_weight)) if load * best_weight == best_load * weight => {
                ties += 1;
                // Each of the tied is kept with the same chance (reservoir sampling).
                if fastrand::u32(..=ties) == 0 {
                    best = Some((index, load, weight));
                }
            }
            _ => {
                ties = 0;
                best = Some((index, load, weight));
            }
        }
    }
    best.map(|(index, ..)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{counts, instances};

    #[test]
    fn the_fewest_in_flight_for_its_weight_and_ties_at_random() {
        let instances = instances(&[1, 1, 2]);
        let _busy = [instances[0].start(), instances[0].start()];
        let _one = instances[1].start();
        let _two = [instances[2].start(), instances[2].start()];
        // 2/1, 1/1, 2/2: a tie between the last two.
        let counts = counts((0..400).map(|_| pick(&instances, &|_| true)));
        assert_eq!(counts.get(&0), None);
        assert!(counts[&1] > 120 && counts[&2] > 120, "{counts:?}");
        assert_eq!(pick(&instances, &|index| index == 0), Some(0));
    }
}
