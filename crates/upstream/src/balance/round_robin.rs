//! `round_robin`: each instance in turn, weights ignored. One shared cursor: the order is the
//! service's, whichever worker serves the request. An ineligible instance is skipped.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::first_from;

#[derive(Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    #[inline]
    pub(crate) fn pick(&self, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        first_from(turn % count, count, eligible)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_in_turn_skipping_the_ineligible() {
        let cursor = RoundRobin::default();
        let picks: Vec<_> = (0..4).map(|_| cursor.pick(3, &|_| true)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
        let picks: Vec<_> = (0..3)
            .map(|_| cursor.pick(3, &|index| index != 2))
            .collect();
        assert_eq!(picks, [Some(1), Some(0), Some(0)]);
        assert_eq!(cursor.pick(3, &|_| false), None);
    }
}
