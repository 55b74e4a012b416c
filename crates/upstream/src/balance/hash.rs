//! `hash`: consistent hashing on a ring. Each instance owns points on a ring of `u64`s
//! (`POINTS_PER_WEIGHT` per unit of weight, placed by hashing its address), and a key goes to
//! the owner of the first point at or after the key's hash. An instance that joins takes over
//! only the keys just before its own points, about `1 / (n + 1)` of them; one that leaves (or
//! is ineligible) hands its keys to the owners of the next points, and the others keep theirs.
//!
//! The points depend on the instance's address only, not on its place in the list, so a key
//! keeps its instance across a reload that adds or removes others. The hash is SipHash with
//! fixed keys (`std::hash::DefaultHasher::new()`), the same in every process and gateway.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::instance::Instance;

/// Points on the ring per unit of weight: enough that three instances get shares within a few
/// percent of their weights.
const POINTS_PER_WEIGHT: u32 = 160;

pub(crate) struct Ring {
    /// Sorted by point.
    points: Box<[(u64, u16)]>,
}

/// The hash of a request's key.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl Ring {
    pub(crate) fn new(instances: &[Instance]) -> Ring {
        let mut points = Vec::new();
        for (index, instance) in instances.iter().enumerate() {
            for point in 0..POINTS_PER_WEIGHT * instance.weight {
                let mut hasher = DefaultHasher::new();
                instance.url.authority.as_str().hash(&mut hasher);
                point.hash(&mut hasher);
                // At most 256 instances (the configuration's bound).
                points.push((hasher.finish(), index as u16));
            }
        }
        points.sort_unstable();
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    pub(crate) fn pick(&self, key: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(point, _)| *point < key);
        let length = self.points.len();
        (0..length)
            .map(|offset| usize::from(self.points[(start + offset) % length].1))
            .find(|&index| eligible(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{counts, instances};

    #[test]
    fn shares_follow_the_weights_and_a_fourth_instance_moves_about_a_quarter_of_the_keys() {
        let three = Ring::new(&instances(&[1, 1, 2]));
        let keys: Vec<u64> = (0..4000u32)
            .map(|key| key_hash(&key.to_le_bytes()))
            .collect();
        let counts = counts(keys.iter().map(|&key| three.pick(key, &|_| true)));
        for (index, expected) in [(0, 1000), (1, 1000), (2, 2000)] {
            let got = counts[&index] as i64;
            assert!((got - expected).abs() < expected / 5, "{counts:?}");
        }

        let equal = Ring::new(&instances(&[1, 1, 1]));
        let four = Ring::new(&instances(&[1, 1, 1, 1]));
        let moved = keys
            .iter()
            .filter(|&&key| equal.pick(key, &|_| true) != four.pick(key, &|_| true))
            .count();
        assert!((800..1200).contains(&moved), "{moved} of 4000 moved");
        let to_the_new_one = keys
            .iter()
            .filter(|&&key| four.pick(key, &|_| true) == Some(3))
            .count();
        assert_eq!(moved, to_the_new_one, "only to the new instance");
    }

    #[test]
    fn an_ineligible_instance_s_keys_go_to_the_next_and_no_other_key_moves() {
        let ring = Ring::new(&instances(&[1, 1, 1]));
        for key in (0..1000u32).map(|key| key_hash(&key.to_le_bytes())) {
            let before = ring.pick(key, &|_| true).expect("a pick");
            let after = ring.pick(key, &|index| index != 1).expect("a pick");
            if before != 1 {
                assert_eq!(before, after);
            } else {
                assert_ne!(after, 1);
            }
        }
    }
}
