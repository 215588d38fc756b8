//! A training step holds no more memory than its results: `y` and `dx` (and per-channel
//! vectors), plus scratch of a few float64 values per channel. Its own test binary, so no
//! other test's allocations are counted.

use batchnorm::*;
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Tracking;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

#[test]
fn a_training_step_holds_its_outputs_and_per_channel_scratch_only() {
    // One thread: rayon's own bookkeeping is not ours to count.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for (layout, shape) in [
            (Layout::Nc, vec![2048, 1024]),       // rows: block partial sums
            (Layout::Nchw, vec![2, 64, 96, 96]),  // channel-by-channel tasks
            (Layout::Nchw, vec![64, 128, 7, 7]),  // short runs: memory-order blocks
            (Layout::Nhwc, vec![16, 32, 32, 64]), // rows
        ] {
            let d = Dims::new(layout, &shape).unwrap();
            let x: Vec<f32> = (0..d.len()).map(|i| (i % 13) as f32).collect();
            let dy: Vec<f32> = (0..d.len()).map(|i| (i % 7) as f32).collect();
            let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
            let base = LIVE.load(Ordering::SeqCst);
            PEAK.store(base, Ordering::SeqCst);
            let (y, saved) = bn.forward_train(&x, d).unwrap();
            let g = bn.backward(&x, &dy, d, &saved).unwrap();
            let extra = PEAK.load(Ordering::SeqCst) - base;
            let outputs = (y.len() + g.dx.len()) * 4;
            // Per channel: saved mean/invstd, moments, gradients, shifts, sums of up to 32
            // blocks, coefficients; far below one value per element for these shapes. Plus a
            // page of slack to place the coefficients in (twice while that buffer grows from
            // the forward's three arrays to the backward's four).
            let scratch_bound = 600 * d.channels + 4096 + 2 * 4096;
            assert!(
                extra <= outputs + scratch_bound,
                "{layout} {shape:?}: peak {extra} bytes over the inputs, outputs {outputs}, scratch bound {scratch_bound}"
            );
            assert!(extra >= outputs, "the step must hold y and dx");
            eprintln!("{layout} {shape:?}: outputs {outputs} B, scratch {} B ({} channels)", extra - outputs, d.channels);
            drop((y, g));
        }
    });
}
