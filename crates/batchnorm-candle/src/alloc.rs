//! Keeping freed tensor memory for reuse (glibc).

/// Blocks up to this size come from the heap: glibc's largest allowed threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Asks glibc to serve blocks of up to 32 MB from the heap and to keep freed memory there
/// for reuse (`mallopt(M_MMAP_THRESHOLD, 32 MB)`, `mallopt(M_TRIM_THRESHOLD, INT_MAX)`), so
/// that a training loop reuses the last step's pages instead of faulting fresh ones in.
/// Returns whether glibc took both settings; `false`, and nothing changed, where the C
/// library is not glibc.
///
/// Every candle training step allocates and frees tensor-sized buffers (this layer's
/// output and input gradient, the gradient store's zeros and sums). Under glibc's defaults
/// some of them come from fresh `mmap`s whose pages fault in, and are zeroed, again every
/// step, which can cost more than the layer itself: a training step of NCHW 64x256x14x14
/// through this layer took 21.5 ms with about 12,000 page faults a step, and 4.8 ms with
/// this setting (2 threads, the project's machine). Call it first thing, before any tensor
/// exists; memory freed at the peak then stays with the process until it ends. The same
/// can be had from the environment:
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296`.
///
/// ```
/// let kept = batchnorm_candle::keep_freed_memory();
/// assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters. Both are asked for whatever the
    // first answers.
    unsafe {
        let heap = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1;
        let kept = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1;
        heap && kept
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
