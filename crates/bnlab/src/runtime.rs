//! Process-wide settings the lab makes once, before any thread starts: candle's thread
//! count, how freed tensor memory is reused, and when a matrix multiply goes parallel.
//! Each was measured on this project's 2-core machine; none changes a result.

/// Matrix products with fewer multiply-adds than this (per block of gemm's work) run on
/// one thread. gemm's default (48 * 48 * 256) splits the Figure-1 MLP's 60x784x100
/// products over both cores, and the hand-off costs more than it saves: 3,000 training
/// steps of that MLP with BN took 3.11 s at the default, 2.48 s at 1e7 and 2.32 s on one
/// thread, while a CNN step (batch 128, 32 and 64 channels) stayed the same (15.9 vs 16.1 s
/// for 100 steps).
const GEMM_THREADING_THRESHOLD: usize = 10_000_000;

/// Applies every setting below; call first thing in `main`.
pub fn configure() {
    settle_thread_count();
    reuse_freed_memory();
    gemm_common::gemm::set_threading_threshold(GEMM_THREADING_THRESHOLD);
}

/// candle asks for its thread count on every parallel op and, unless RAYON_NUM_THREADS is
/// set, answers by parsing /proc/cpuinfo each time: settle it once.
///
/// candle's element-wise ops also have a pool of their own (CANDLE_NUM_THREADS, else
/// RAYON_NUM_THREADS) whose workers spin between ops; they then compete for the cores with
/// the rayon threads that run matrix products and the batch-norm kernels. Unless the user
/// sets CANDLE_NUM_THREADS, that pool gets no worker (element-wise ops run on the calling
/// thread; matrix products and batch norm keep every thread). Measured at 2 threads: the
/// Figure-1 MLP with BN 1235 -> 1307-1332 steps/s, a CNN step (batch 128, 32 and 64
/// channels) 100 steps 16.3 -> 15.7 s.
fn settle_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the
/// kernel after every free ([`batchnorm_candle::keep_freed_memory`]; glibc only, elsewhere
/// nothing changes).
///
/// candle gives every op a freshly allocated output and frees it once backprop is done.
/// glibc serves blocks of a few MB or more with `mmap` and hands them back to the kernel on
/// `free`, so every training step faults in (and the kernel zeroes) each activation and
/// gradient page again: in a profile of one batch-norm training step of 32x64x56x56 in
/// candle more than half the time was page faults. Measured (2 threads): that step 56 ->
/// 15 ms, candle_nn's 302 -> 83 ms (`cargo bench -p batchnorm-candle --bench layer`, which
/// makes this setting itself unless `BN_ALLOC` says otherwise); `bnlab train --model cnn
/// --channels 32,64 --bn --steps 300 --batch-size 128` 62.9 -> 47.5 s, peak memory 398 vs
/// 400 MB. Memory freed at the peak is kept until the process ends.
fn reuse_freed_memory() {
    batchnorm_candle::keep_freed_memory();
}
