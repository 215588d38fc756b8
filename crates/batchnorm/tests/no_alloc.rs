//! The `_into` kernels (the converted eval and the float64 kernels too) allocate nothing in
//! the steady state.

use batchnorm::*;
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

thread_local! {
    /// The counter of the test whose pool this thread belongs to: each test counts its own
    /// threads' allocations, not the harness's or another test's running beside it.
    static COUNTER: Cell<Option<&'static AtomicUsize>> = const { Cell::new(None) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        if let Ok(Some(c)) = COUNTER.try_with(Cell::get) {
            c.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Training steps on a pool of `threads` threads after the first allocate nothing, counted
/// in `allocs`.
fn steady_state(threads: usize, allocs: &'static AtomicUsize, shapes: &[(Layout, Vec<usize>)]) {
    // A worker registers with crossbeam's epoch collector (an allocation) the first time it
    // steals, which can fall in any step: each one registers before it counts.
    let start = move |_| {
        drop(crossbeam_epoch::pin());
        COUNTER.with(|c| c.set(Some(allocs)));
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).start_handler(start).build().unwrap();
    pool.install(|| {
        for (layout, shape) in shapes.iter().cloned() {
            let d = Dims::new(layout, &shape).unwrap();
            let x: Vec<f32> = (0..d.len()).map(|i| (i % 13) as f32).collect();
            let mut y = vec![0.0; d.len()];
            let mut dx = vec![0.0; d.len()];
            let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
            let mut saved = SavedStats::with_channels(d.channels);
            let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
            let mut ws = Workspace::new();
            let (rm, rv) = (vec![0.5f32; d.channels], vec![2.0f32; d.channels]);
            let copy = |s: &[f32], o: &mut [f32]| o.copy_from_slice(s);
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let (mut y64, mut dx64) = (vec![0.0f64; d.len()], vec![0.0f64; d.len()]);
            let (mut dw64, mut db64) = (vec![0.0f64; d.channels], vec![0.0f64; d.channels]);
            let mut moments64 = vec![Moments::EMPTY; d.channels];
            let mut saved64 = SavedStats::with_channels(d.channels);
            let (rm64, rv64) = (vec![0.5f64; d.channels], vec![2.0f64; d.channels]);
            let mut step = |bn: &mut BatchNorm| {
                bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap();
                bn.backward_into(&x, &y, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).unwrap();
                param_grads_into(&x, &y, d, &saved, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
                bn.forward_eval_into(&x, d, &mut y, &mut saved).unwrap();
                // The converted eval's blocks (float32 "converted" by copying).
                forward_eval_converted_into(&x, d, None, None, &rm, &rv, 1e-5, &mut y, copy, copy, &mut ws).unwrap();
                // The float64 kernels, through the same workspace.
                forward_train_f64_into(&x64, d, None, None, 1e-5, &mut y64, &mut moments64, &mut saved64, &mut ws).unwrap();
                backward_f64_into(&x64, &y64, d, None, &saved64, &mut dx64, Some(&mut dw64), Some(&mut db64), &mut ws).unwrap();
                forward_eval_f64_into(&x64, d, None, None, &rm64, &rv64, 1e-5, &mut y64, &mut ws).unwrap();
            };
            step(&mut bn);
            let before = allocs.load(Ordering::SeqCst);
            for _ in 0..3 {
                step(&mut bn);
            }
            assert_eq!(allocs.load(Ordering::SeqCst) - before, 0, "{layout} {shape:?} allocated on {threads} threads");
        }
    });
}

#[test]
fn steady_state_training_steps_do_not_allocate() {
    static ALLOCS: AtomicUsize = AtomicUsize::new(0);
    steady_state(
        1,
        &ALLOCS,
        &[
            (Layout::Nc, vec![60, 100]),
            (Layout::Nchw, vec![8, 4, 32, 32]),
            (Layout::Nchw, vec![4, 64, 8, 8]),
            (Layout::Nchw, vec![1, 8, 96, 96]), // channel-by-channel tasks
            (Layout::Nhwc, vec![8, 16, 16, 32]),
            (Layout::Nc, vec![16, 2100]), // backward in column tiles
        ],
    );
}

/// The parallel paths reuse the workspace too: blocks of rows and their merge, column
/// groups, channel tasks, tiles.
#[test]
fn steady_state_training_steps_on_four_threads_do_not_allocate() {
    static ALLOCS: AtomicUsize = AtomicUsize::new(0);
    steady_state(
        4,
        &ALLOCS,
        &[
            (Layout::Nc, vec![512, 1024]),       // 4 blocks, their parts merged in column tasks
            (Layout::Nc, vec![256, 1024]),       // 2 blocks: column groups
            (Layout::Nc, vec![100, 400]),        // 1 block: column groups
            (Layout::Nchw, vec![2, 16, 96, 96]), // channel-by-channel tasks
            (Layout::Nhwc, vec![8, 32, 32, 16]),
            (Layout::Nc, vec![16, 2100]), // column tiles
        ],
    );
}
