//! How a tensor is cut into tasks. The cut depends on the shape alone, never on the number
//! of threads, and partial results are combined in task order: that is what makes every
//! result bitwise identical whatever the thread count.

use crate::layout::Dims;
use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread: spawning would cost more
/// than the work. Running sequentially does the same arithmetic in the same order.
pub(crate) const SEQUENTIAL_BELOW: usize = 1 << 15;

/// Aim for at least this many elements per task.
const MIN_TASK: usize = 1 << 14;

/// Most blocks a reduction is cut into per channel (channels-first) or in all (rows).
const MAX_BLOCKS: usize = 32;

/// The decomposition of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Blocks per channel (channels-first: ranges of the outer axis) or row blocks (rows).
    pub blocks: usize,
    /// Outer indices (channels-first) or rows (rows layout) per block.
    pub block_len: usize,
}

impl Plan {
    pub(crate) fn new(d: Dims) -> Plan {
        let outer = d.outer.max(1);
        let blocks = if d.is_rows() {
            (d.len() / MIN_TASK).clamp(1, MAX_BLOCKS)
        } else {
            // Enough (channel, block) tasks to feed the threads, each still large.
            let want = MAX_BLOCKS.div_ceil(d.channels.max(1));
            let room = (d.per_channel() / MIN_TASK).max(1);
            want.min(room).max(1)
        }
        .min(outer);
        let block_len = outer.div_ceil(blocks);
        Plan { blocks: outer.div_ceil(block_len), block_len }
    }

    /// The outer range of block `b`.
    pub(crate) fn range(&self, b: usize, outer: usize) -> std::ops::Range<usize> {
        let lo = (b * self.block_len).min(outer);
        lo..((b + 1) * self.block_len).min(outer)
    }
}

/// Maps `f` over the chunks of `out` (each `chunk` long), in parallel when worth it.
pub(crate) fn for_each_chunk<T, F>(out: &mut [T], chunk: usize, work: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if work < SEQUENTIAL_BELOW || out.len() <= chunk {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// A pointer to an output buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only ever take disjoint sub-slices (see `slice`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(s: &mut [f32]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len() }
    }

    /// # Safety
    /// No two live slices obtained from the same `SharedMut` may overlap, and the buffer it
    /// was made from must outlive them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "SharedMut::slice out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}
