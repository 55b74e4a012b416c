//! `weighted`: smooth weighted round robin, as nginx's. Each turn every instance gains its
//! weight, the one with the most is picked and loses the total: weights 5, 1, 1 give
//! `a a b a c a a`, not `a a a a a b c`.
//!
//! The sequence depends only on the weights, so it is computed once, when the service is
//! built, and a shared atomic cursor walks it: no lock on the request path, and the order is
//! the service's whichever worker serves the request. An ineligible instance is skipped: its
//! turns go to the next entries of the sequence, which keeps the others' proportions.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::instance::Instance;

pub(crate) struct Weighted {
    sequence: Box<[u16]>,
    next: AtomicUsize,
}

impl Weighted {
    pub(crate) fn new(instances: &[Instance]) -> Weighted {
        let weights: Vec<i64> = instances.iter().map(|i| i64::from(i.weight)).collect();
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let total: i64 = weights.iter().map(|weight| weight / divisor).sum();
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (index, weight) in weights.iter().enumerate() {
                current[index] += weight / divisor;
                if current[index] > current[best] {
                    best = index;
                }
            }
            current[best] -= total;
            // At most 256 instances (the configuration's bound).
            sequence.push(best as u16);
        }
        Weighted {
            sequence: sequence.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn pick(&self, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let length = self.sequence.len();
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        (0..length)
            .map(|offset| usize::from(self.sequence[(turn + offset) % length]))
            .find(|&index| eligible(index))
            .or_else(|| super::first_from(0, count, eligible))
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::instances;

    #[test]
    fn the_sequence_is_nginx_s_smooth_one() {
        let weighted = Weighted::new(&instances(&[5, 1, 1]));
        let picks: Vec<_> = (0..7)
            .map(|_| weighted.pick(3, &|_| true).expect("a pick"))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let weighted = Weighted::new(&instances(&[4, 2, 2]));
        assert_eq!(weighted.sequence.len(), 4, "reduced by the common divisor");
    }

    #[test]
    fn an_ineligible_instance_s_turns_go_to_the_others() {
        let weighted = Weighted::new(&instances(&[3, 2, 1]));
        let counts =
            crate::balance::tests::counts((0..600).map(|_| weighted.pick(3, &|index| index != 0)));
        assert_eq!(counts.get(&0), None);
        assert_eq!(counts[&1] + counts[&2], 600);
        assert!(counts[&1] > counts[&2]);
    }
}
