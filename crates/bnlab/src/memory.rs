//! How the lab's process gets memory for its tensors.
//!
//! candle gives every op a freshly allocated output and frees it once backprop is done.
//! glibc serves blocks of a few MB or more with `mmap` and hands them back to the kernel
//! on `free`, so every training step faults in (and the kernel zeroes) each activation and
//! gradient page again: in a profile of one batch-norm training step of 32x64x56x56 in candle
//! more than half the time was page faults. Keeping freed blocks in the heap instead makes
//! the next step reuse the same, already mapped, pages. Measured (2 threads, this project's
//! `cargo bench -p batchnorm-candle --bench layer`): a batch-norm training step 56 -> 15 ms,
//! candle_nn's 302 -> 83 ms; `bnlab train --model cnn --channels 32,64 --bn --steps 300
//! --batch-size 128` 62.9 -> 45.2 s at the same peak memory (398 vs 401 MB).

/// Blocks up to this size come from the heap (glibc's largest allowed threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the
/// kernel after every free (glibc only; elsewhere nothing changes). Peak memory is the same;
/// memory freed at the peak is kept until the process ends.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
