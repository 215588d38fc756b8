//! Scratch memory the kernels reuse from call to call.

/// Scratch buffers for the `_into` kernels. Keep one per layer (or per thread of callers) and
/// pass it to every call: after the first call with a given shape, no kernel allocates.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    pub(crate) sums: Vec<f64>,
    pub(crate) totals: Vec<f64>,
    pub(crate) shift: Vec<f64>,
    pub(crate) coef: Vec<f32>,
}

impl Workspace {
    /// An empty workspace; it grows to what the first calls need.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently held.
    pub fn capacity_bytes(&self) -> usize {
        self.sums.capacity() * 8 + self.totals.capacity() * 8 + self.shift.capacity() * 8 + self.coef.capacity() * 4
    }
}

/// Resizes `v` to `n` values of `fill` without giving memory back.
pub(crate) fn sized<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) -> &mut [T] {
    v.clear();
    v.resize(n, fill);
    &mut v[..]
}

/// `n` values of `v` from a 64-byte boundary (the allocator promises 16 bytes), as they
/// were: callers zero or fill what they use.
///
/// The strips of the reductions over rows (see `strips`) load their shifts and partial sums
/// and store the sums in 64-byte vectors, one per line when the arrays start on a line and
/// two lines each otherwise. Measured on the statistics' strips over NC 4096x4096 (1 thread,
/// 3 runs): 2.70-2.87 ms with the arrays on lines, 2.91-3.00 with them 16 bytes in.
pub(crate) fn lined(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    const SLACK: usize = 64 / 8 - 1;
    if v.len() < n + SLACK {
        v.resize(n + SLACK, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(SLACK);
    &mut v[off..off + n]
}

/// Tensors of fewer elements than this stay in L1/L2 whatever the placement: [`placed`]
/// spends neither its search nor its page of slack on them.
const PLACE_MIN_WORK: usize = 1 << 16;

/// Spare values [`placed`] allocates beyond `n`: room to move the start anywhere in a page.
const PLACE_SLACK: usize = 4096 / 4;

/// `n` zeroed values of `v` holding `parts` arrays of `n / parts` one after the other (the
/// per-channel constants of a pass), placed so that every array starts `skew` bytes (a
/// multiple of 4 below 64, see `simd::constants_skew`) past a 64-byte boundary as far as it
/// can get, modulo 4 KB, from each of the `streams` the pass reads and writes (for tensors
/// of `work` elements and more; below that, plainly).
///
/// Where the constants land against the streams decides how fast a rows pass runs, and an
/// allocator leaves that to chance. Measured (`x`, `y`, `dy`, `dx` page-aligned alike, as
/// large buffers are; 1 thread, in one process, alternating, medians of 63-4,000 calls;
/// the constants 16 bytes into a line, as the allocator had put them, then placed): NC
/// 256x1024 training forward 0.071 -> 0.062 ms, forward + backward 0.180 -> 0.161, eval 0.037
/// -> 0.028; NC 4096x4096 9.8 -> 9.5, 28.7 -> 27.6, 6.4 -> 6.2 ms; NHWC 64x14x14x256 eval
/// 0.67-0.72 -> 0.58-0.66 (2 threads 0.36 -> 0.32); constants 64-byte aligned but within 64
/// bytes of the streams: NC 256x1024 0.068 / 0.184 / 0.035, NC 4096x4096 10.7 / 29.2 / 7.5.
/// Channels-first passes and rows held in registers do not read these arrays per value and
/// are unchanged (NCHW and NHWC 32x56x56x64 within 1%); NHWC 64x14x14x256 forward + backward
/// is within 3% either way.
pub(crate) fn placed<'a>(v: &'a mut Vec<f32>, n: usize, parts: usize, work: usize, streams: &[*const f32], skew: usize) -> &'a mut [f32] {
    debug_assert!(skew < 64 && skew.is_multiple_of(4), "skew {skew}");
    if work < PLACE_MIN_WORK {
        return sized(v, n, 0.0);
    }
    // Exactly: the forward's three arrays and the backward's four take turns in one buffer,
    // and doubling it on the way (with the slack) would outgrow the step's scratch.
    v.clear();
    v.reserve_exact(n + PLACE_SLACK);
    let all = sized(v, n + PLACE_SLACK, 0.0);
    let target = farthest_line(4 * n / parts.max(1), parts, streams) + skew;
    // A byte offset below 4 KB, a multiple of 4: both addresses are 4-byte aligned.
    let off = target.wrapping_sub(all.as_ptr() as usize) % 4096 / 4;
    &mut all[off..off + n]
}

/// The 64-byte line offset within a 4 KB page at which `parts` arrays `stride` bytes apart
/// keep the largest distance (circular, modulo 4 KB) from every stream.
fn farthest_line(stride: usize, parts: usize, streams: &[*const f32]) -> usize {
    let dist = |a: usize, b: usize| {
        let d = (a % 4096).abs_diff(b % 4096);
        d.min(4096 - d)
    };
    let score = |t: usize| (0..parts).flat_map(|k| streams.iter().map(move |&p| dist(t + k * stride, p as usize))).min().unwrap_or(0);
    (0..64).map(|l| l * 64).max_by_key(|&t| score(t)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Circular distance modulo 4 KB.
    fn dist(a: usize, b: usize) -> usize {
        let d = (a % 4096).abs_diff(b % 4096);
        d.min(4096 - d)
    }

    #[test]
    fn placed_arrays_start_on_lines_away_from_the_streams() {
        let x = vec![0.0f32; 3 << 16];
        let mut v = Vec::new();
        for (c, parts) in [(1024, 3), (256, 4), (4096, 3), (100, 1)] {
            for skew in [0usize, 3, 17, 700] {
                let (s0, s1) = (x[skew..].as_ptr(), x[2 * skew + 5..].as_ptr());
                let n = parts * c;
                let got = placed(&mut v, n, parts, 1 << 20, &[s0, s1], 0);
                assert_eq!(got.len(), n);
                assert!(got.iter().all(|&g| g == 0.0), "not zeroed");
                let base = got.as_ptr() as usize;
                assert_eq!(base % 64, 0, "c {c} skew {skew}: not on a cache line");
                let worst = (0..parts).flat_map(|k| [s0, s1].map(|s| dist(base + 4 * c * k, s as usize))).min().unwrap();
                // Some line of the page is at least this far from every array start and
                // stream pair; the chosen one must do as well.
                let best = (0..64).map(|l| (0..parts).flat_map(|k| [s0, s1].map(|s| dist(64 * l + 4 * c * k, s as usize))).min().unwrap()).max().unwrap();
                assert_eq!(worst, best, "c {c} skew {skew}");
                got.fill(1.0);
            }
        }
    }

    /// A skew moves every array that far past its line, and no farther from the streams.
    #[test]
    fn placed_arrays_take_the_skew_asked_for() {
        let x = vec![0.0f32; 3 << 16];
        let mut v = Vec::new();
        for skew in [0, 4, 16, 60] {
            for (c, parts) in [(256, 3), (1024, 4)] {
                let s0 = x[3..].as_ptr();
                let got = placed(&mut v, parts * c, parts, 1 << 20, &[s0], skew);
                assert_eq!(got.len(), parts * c);
                for k in 0..parts {
                    assert_eq!(got[k * c..].as_ptr() as usize % 64, skew, "c {c}, array {k}, skew {skew}");
                }
                let line = got.as_ptr() as usize - skew;
                let unskewed = placed(&mut v, parts * c, parts, 1 << 20, &[s0], 0).as_ptr() as usize;
                assert_eq!(line % 4096, unskewed % 4096, "the same line of the page, skewed");
            }
        }
    }

    #[test]
    fn lined_values_start_on_a_line_and_stay_allocated() {
        let mut v: Vec<f64> = Vec::new();
        for n in [1, 7, 8, 100, 4096, 100, 4096] {
            let got = lined(&mut v, n);
            assert_eq!(got.len(), n);
            assert_eq!(got.as_ptr() as usize % 64, 0, "n {n}: not on a cache line");
            got.fill(n as f64);
        }
        let (ptr, cap) = (v.as_ptr(), v.capacity());
        lined(&mut v, 4096).fill(0.0);
        assert_eq!((v.as_ptr(), v.capacity()), (ptr, cap), "grew again for a size it held");
    }

    #[test]
    fn small_work_is_not_placed() {
        let mut v = Vec::new();
        let got = placed(&mut v, 300, 3, 1000, &[], 0);
        assert_eq!(got.len(), 300);
        assert_eq!(v.len(), 300, "no slack below the size that asks for it");
    }
}
