//! Counters split into per-thread shards, summed when read.
//!
//! Each thread bumps the shard it was given on its first count (round-robin over as many shards
//! as the machine has cores), on cache lines no other shard shares, so workers never contend
//! for a line: a bump is one uncontended relaxed add. Reads (a scrape) sum every shard.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Cells per cache line pair: 128 bytes, as adjacent-line prefetching pairs lines up.
const PER_LINE: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Line([AtomicU64; PER_LINE]);

/// Shards: one per core, so each worker thread (one per core by default) has one to itself.
static SHARDS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 64)));

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn shard() -> usize {
    SHARD.with(|shard| {
        let index = shard.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % *SHARDS;
        shard.set(index);
        index
    })
}

/// A fixed number of `u64` counters, sharded per thread.
pub(crate) struct Cells {
    lines: Box<[Line]>,
    lines_per_shard: usize,
}

impl Cells {
    pub(crate) fn new(cells: usize) -> Cells {
        let lines_per_shard = cells.div_ceil(PER_LINE).max(1);
        Cells {
            lines: (0..lines_per_shard * *SHARDS)
                .map(|_| Line::default())
                .collect(),
            lines_per_shard,
        }
    }

    /// Adds `n` to `cell` in the calling thread's shard.
    #[inline]
    pub(crate) fn add(&self, cell: usize, n: u64) {
        let line = shard() * self.lines_per_shard + cell / PER_LINE;
        self.lines[line].0[cell % PER_LINE].fetch_add(n, Ordering::Relaxed);
    }

    /// `cell` summed over the shards.
    pub(crate) fn sum(&self, cell: usize) -> u64 {
        (0..self.lines.len() / self.lines_per_shard)
            .map(|shard| {
                self.lines[shard * self.lines_per_shard + cell / PER_LINE].0[cell % PER_LINE]
                    .load(Ordering::Relaxed)
            })
            .fold(0, u64::wrapping_add)
    }
}

/// Upper bounds of the duration buckets, in microseconds (the last bucket, `+Inf`, is implied):
/// from half a millisecond, where a no-filter request through the gateway lands, to 10 s.
pub(crate) const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Cells a histogram takes: one per bucket with `+Inf`, then the sum in microseconds (the count
/// is the buckets' total).
pub(crate) const HISTOGRAM_CELLS: usize = BOUNDS_US.len() + 2;

/// Records `us` in the histogram whose cells start at `at`.
#[inline]
pub(crate) fn observe(cells: &Cells, at: usize, us: u64) {
    let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
    cells.add(at + bucket, 1);
    cells.add(at + BOUNDS_US.len() + 1, us);
}

/// A histogram as read: per-bucket counts (not cumulative) with upper bounds in seconds, the
/// count and the sum in seconds.
pub(crate) struct HistogramRead {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

pub(crate) fn read_histogram(cells: &Cells, at: usize) -> HistogramRead {
    let buckets: Vec<(f64, u64)> = BOUNDS_US
        .iter()
        .map(|&bound| bound as f64 / 1e6)
        .chain(std::iter::once(f64::INFINITY))
        .enumerate()
        .map(|(index, bound)| (bound, cells.sum(at + index)))
        .collect();
    HistogramRead {
        count: buckets.iter().map(|(_, count)| count).sum(),
        sum: cells.sum(at + BOUNDS_US.len() + 1) as f64 / 1e6,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let cells = std::sync::Arc::new(Cells::new(20));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        cells.add(3, 1);
                        cells.add(17, 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("the counting thread ends");
        }
        assert_eq!(cells.sum(3), 8000);
        assert_eq!(cells.sum(17), 16_000);
        assert_eq!(cells.sum(0), 0);
    }

    #[test]
    fn a_duration_lands_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let cells = Cells::new(HISTOGRAM_CELLS);
        observe(&cells, 0, 500);
        observe(&cells, 0, 501);
        observe(&cells, 0, 20_000_000);
        let read = read_histogram(&cells, 0);
        assert_eq!(read.buckets[0], (0.0005, 1));
        assert_eq!(read.buckets[1], (0.001, 1));
        assert_eq!(read.buckets[14], (f64::INFINITY, 1));
        assert_eq!(read.count, 3);
        assert!((read.sum - 20.001001).abs() < 1e-9);
    }
}
