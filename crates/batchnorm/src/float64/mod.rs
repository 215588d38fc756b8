//! Float64 tensors: the training forward, the eval forward and the backward for float64
//! storage, with PyTorch's semantics (as the float32 kernels), for callers that keep their
//! activations in double precision (candle's `F64`, gradient checks, scientific code).
//!
//! Float64 accumulation gives a float64 tensor no margin, so every sum here is compensated
//! (each addition's and each product's rounding error kept and summed beside it; see
//! `compensated`): the batch mean and variance come out within a few units in the last
//! place of their exact values for any batch size and any offset of the mean, where a plain
//! float64 sum of a million values can be off in its tenth digit. The reduction order is
//! fixed by the shape (`sums`), so results are bitwise identical on any number of threads.
//! Each pass reads its tensors once: the statistics one read of `x`, the normalising pass a
//! read and a write, the backward two reads of `x` and `dy` and a write of `dx`.

/// Defines a generic `fn $name<..>(args)` whose body is compiled three times, for the
/// baseline target, for AVX2+FMA and for AVX-512, and picks the widest the CPU has at run
/// time (`simd::multiversion` with an AVX-512 copy first). The float64 loops keep eight or
/// more vectors of sums and their compensations live beside the terms' temporaries: AVX2's
/// 16 registers spill them, AVX-512's 32 do not. The copies run the same IEEE operations
/// (every fused multiply-add explicit), so their results are bitwise alike.
macro_rules! wide {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$($g:ident : $b:path),+>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if crate::simd::has_avx512() {
                    // SAFETY: the CPU supports the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

mod backward;
mod compensated;
mod forward_eval;
mod forward_train;
mod pointwise;
#[cfg(target_arch = "x86_64")]
mod streamed;
mod sums;

pub use backward::backward_f64_into;
pub use forward_eval::forward_eval_f64_into;
pub use forward_train::forward_train_f64_into;
