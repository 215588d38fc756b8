//! Prints a digest of every output the kernels write for a set of shapes, so that two
//! builds or two CPUs can be compared bit for bit: `scripts/check-isas` runs it natively and
//! under QEMU as an AVX2-only CPU (Haswell), as one with neither AVX2 nor AVX-512 (qemu64,
//! the portable loops) and, with `--aarch64`, built for 64-bit Arm, and fails where any
//! line differs.
//!
//! cargo run --release -p batchnorm --example digest [-- NC:256x1024 NHWC:8x14x14x256 ...]
//!
//! Each line: the shape, then `name=digest` for each output (FNV-1a over the values' bits):
//! the float32 training forward (`y`, the saved mean and 1/std, the moments), its backward
//! (`dx`, `dweight`, `dbias`), the parameter gradients alone, the eval forward with the
//! batch's statistics, the converted eval (float32 stored as bytes), and the same three
//! float64 kernels. The default shapes are chosen to reach the kernels' dispatches: tiny
//! tensors, channels-first runs short and long, rows of 1 to 8192 channels (held in
//! registers, whole lines, whole vectors only, odd widths), tensors under and over the 8 (one
//! thread), 11 and 16 MB from which the passes stream their outputs.

use batchnorm::{
    backward_f64_into, backward_into, forward_eval_converted_into, forward_eval_f64_into, forward_eval_into, forward_train_f64_into, forward_train_into,
    param_grads_into, parse_shape, Dims, Moments, SavedStats, Workspace,
};

/// The default shapes (see the module's notes); about 200 MB of float32 in all.
const DEFAULT: &[&str] = &[
    "NC:3x1",
    "NC:60x100",
    "NC:7x13",
    "NC:256x1024",
    "NC:4096x1024",
    "NC:1024x4104",
    "NC:512x8192",
    "NC:65536x100",
    "NC:21000x200",
    "NCHW:2x3x5x7",
    "NCHW:32x64x14x14",
    "NCHW:32x64x56x56",
    "NCHW:2x64x128x128",
    "NCDHW:2x32x8x28x28",
    "NCHW:128x512x7x7",
    "NCHW:4x8x1x1000",
    "NCL:8x16x4999",
    "NHWC:2x3x3x5",
    "NHWC:8x28x28x64",
    "NHWC:64x14x14x256",
    "NHWC:32x56x56x64",
    "NHWC:8x72x80x101",
    "NHWC:32x28x28x48",
    "NLC:16x300x24",
];

/// FNV-1a over a sequence of 64-bit words.
fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn f32s(v: &[f32]) -> u64 {
    fnv(v.iter().map(|x| x.to_bits() as u64))
}

fn f64s(v: &[f64]) -> u64 {
    fnv(v.iter().map(|x| x.to_bits()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let specs: Vec<String> = if args.is_empty() { DEFAULT.iter().map(|s| s.to_string()).collect() } else { args };
    for spec in specs {
        let (layout, shape) = match parse_shape(&spec) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        let d = Dims::new(layout, &shape).expect("checked by parse_shape");
        match digests(d) {
            Ok(line) => println!("{spec} {line}"),
            Err(e) => {
                eprintln!("error: {spec}: {e}");
                std::process::exit(2);
            }
        }
    }
}

/// The digests of every kernel's outputs on one shape, as `name=hex` pairs.
fn digests(d: Dims) -> batchnorm::Result<String> {
    let (n, c) = (d.len(), d.channels);
    // Values with a mean far from zero and a spread that needs the shifted sums, a few
    // thousand distinct values; dy and the parameters vary per element and channel.
    let x: Vec<f32> = (0..n).map(|i| 40.0 + ((i * 7919) % 4099) as f32 * 0.013 - (i % 17) as f32 * 0.25).collect();
    let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 1e-3 - 0.5).collect();
    let w: Vec<f32> = (0..c).map(|j| 0.5 + (j % 7) as f32 * 0.25).collect();
    let b: Vec<f32> = (0..c).map(|j| (j % 5) as f32 * 0.1 - 0.2).collect();
    let mut ws = Workspace::new();
    let mut out = Vec::new();
    let mut put = |name: &str, h: u64| out.push(format!("{name}={h:016x}"));

    let (mut y, mut moments, mut saved) = (vec![0.0f32; n], vec![Moments::EMPTY; c], SavedStats::with_channels(c));
    forward_train_into(&x, d, Some(&w), Some(&b), 1e-5, &mut y, &mut moments, &mut saved, &mut ws)?;
    put("y", f32s(&y));
    put("mean", f64s(&saved.mean));
    put("invstd", f64s(&saved.invstd));
    put("moments", fnv(moments.iter().flat_map(|m| [m.count.to_bits(), m.mean.to_bits(), m.m2.to_bits()])));
    let (mut dx, mut dw, mut db) = (vec![0.0f32; n], vec![0.0f32; c], vec![0.0f32; c]);
    backward_into(&x, &dy, d, Some(&w), &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws)?;
    put("dx", f32s(&dx));
    put("dw", f32s(&dw));
    put("db", f32s(&db));
    let (mut pw, mut pb) = (vec![0.0f32; c], vec![0.0f32; c]);
    param_grads_into(&x, &dy, d, &saved, Some(&mut pw), Some(&mut pb), &mut ws)?;
    put("pgrads", fnv([f32s(&pw), f32s(&pb)]));
    let mean: Vec<f32> = moments.iter().map(|m| m.mean as f32).collect();
    let var: Vec<f32> = moments.iter().map(|m| m.var_biased() as f32).collect();
    forward_eval_into(&x, d, Some(&w), Some(&b), &mean, &var, 1e-5, &mut y, &mut ws)?;
    put("eval", f32s(&y));
    let xb: Vec<[u8; 4]> = x.iter().map(|v| v.to_le_bytes()).collect();
    let mut yb = vec![[0u8; 4]; n];
    let widen = |s: &[[u8; 4]], o: &mut [f32]| o.iter_mut().zip(s).for_each(|(o, v)| *o = f32::from_le_bytes(*v));
    let narrow = |s: &[f32], o: &mut [[u8; 4]]| o.iter_mut().zip(s).for_each(|(o, v)| *o = v.to_le_bytes());
    forward_eval_converted_into(&xb, d, Some(&w), Some(&b), &mean, &var, 1e-5, &mut yb, widen, narrow, &mut ws)?;
    put("eval_conv", fnv(yb.iter().map(|v| u32::from_le_bytes(*v) as u64)));

    // Float64 from the same values, made less round so the compensated sums have work.
    let x64: Vec<f64> = x.iter().enumerate().map(|(i, &v)| v as f64 + (i % 13) as f64 * 1e-9).collect();
    let dy64: Vec<f64> = dy.iter().map(|&v| v as f64).collect();
    let (w64, b64): (Vec<f64>, Vec<f64>) = (w.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
    let (mut y64, mut m64, mut s64) = (vec![0.0f64; n], vec![Moments::EMPTY; c], SavedStats::with_channels(c));
    forward_train_f64_into(&x64, d, Some(&w64), Some(&b64), 1e-5, &mut y64, &mut m64, &mut s64, &mut ws)?;
    put("y64", f64s(&y64));
    put("stats64", fnv([f64s(&s64.mean), f64s(&s64.invstd)]));
    let (mut dx64, mut dw64, mut db64) = (vec![0.0f64; n], vec![0.0f64; c], vec![0.0f64; c]);
    backward_f64_into(&x64, &dy64, d, Some(&w64), &s64, &mut dx64, Some(&mut dw64), Some(&mut db64), &mut ws)?;
    put("dx64", f64s(&dx64));
    put("grads64", fnv([f64s(&dw64), f64s(&db64)]));
    let mean64: Vec<f64> = m64.iter().map(|m| m.mean).collect();
    let var64: Vec<f64> = m64.iter().map(Moments::var_biased).collect();
    forward_eval_f64_into(&x64, d, Some(&w64), Some(&b64), &mean64, &var64, 1e-5, &mut y64, &mut ws)?;
    put("eval64", f64s(&y64));
    Ok(out.join(" "))
}
