//! The `_into` kernels allocate nothing in the steady state.

use batchnorm::*;
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_training_steps_do_not_allocate() {
    // One thread: rayon's own bookkeeping is not ours to count.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for (layout, shape) in [
            (Layout::Nc, vec![60, 100]),
            (Layout::Nchw, vec![8, 4, 32, 32]),
            (Layout::Nchw, vec![4, 64, 8, 8]),
            (Layout::Nchw, vec![1, 8, 96, 96]), // channel-by-channel tasks
            (Layout::Nhwc, vec![8, 16, 16, 32]),
            (Layout::Nc, vec![16, 2100]), // backward in column tiles
        ] {
            let d = Dims::new(layout, &shape).unwrap();
            let x: Vec<f32> = (0..d.len()).map(|i| (i % 13) as f32).collect();
            let mut y = vec![0.0; d.len()];
            let mut dx = vec![0.0; d.len()];
            let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
            let mut saved = SavedStats::with_channels(d.channels);
            let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
            let mut ws = Workspace::new();
            let mut step = |bn: &mut BatchNorm| {
                bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap();
                bn.backward_into(&x, &y, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).unwrap();
                param_grads_into(&x, &y, d, &saved, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
                bn.forward_eval_into(&x, d, &mut y, &mut saved).unwrap();
            };
            step(&mut bn);
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..3 {
                step(&mut bn);
            }
            assert_eq!(ALLOCS.load(Ordering::SeqCst) - before, 0, "{layout} {shape:?} allocated");
        }
    });
}
