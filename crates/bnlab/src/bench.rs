//! `bnlab bench`: our kernels on the shared benchmark suite (or on the shapes `--shapes`
//! names), side by side with PyTorch's CPU BatchNorm (when a Python with torch is given), at
//! 1 and 2 threads, medians of repeated runs, with the plain-copy bandwidth of the same run;
//! and the paper's MLP end to end (training steps per second, with and without BN).

use crate::data::Source;
use crate::floor::{floor_ms, stream_copy};
use crate::paper::{self, PaperArgs};
use crate::report;
use crate::train::Run;
use anyhow::{bail, Context, Result};
use batchnorm::{backward_f64_into, forward_eval_f64_into, forward_train_f64_into, BatchNorm, BatchNormConfig, Dims, Layout, Moments, SavedStats, Workspace};
use std::path::{Path, PathBuf};
use std::time::Instant;

const TORCH_BN: &str = include_str!("../../../bench/torch_bn.py");
const TORCH_MLP: &str = include_str!("../../../bench/torch_mlp.py");

/// The shape suite of `bench/README` (kind, layout, shape).
pub const SUITE: [(&str, Layout, &[usize]); 8] = [
    ("mlp", Layout::Nc, &[60, 100]),
    ("mlp", Layout::Nc, &[256, 1024]),
    ("mlp", Layout::Nc, &[4096, 4096]),
    ("cnn", Layout::Nchw, &[32, 64, 56, 56]),
    ("cnn", Layout::Nchw, &[64, 256, 14, 14]),
    ("cnn", Layout::Nchw, &[128, 512, 7, 7]),
    ("cnn", Layout::Nhwc, &[32, 56, 56, 64]),
    ("cnn", Layout::Nhwc, &[64, 14, 14, 256]),
];

/// Operations and their memory-traffic floor in multiples of the tensor's bytes.
pub const OPS: [(&str, f64); 3] = [("train_fwd", 2.0), ("train_fwd_bwd", 5.0), ("eval", 2.0)];

pub struct BenchArgs {
    pub threads: Vec<usize>,
    /// Rounds of the whole set of shapes, ours and PyTorch's interleaved; each entry is the median
    /// over rounds (the machines are noisy).
    pub rounds: usize,
    pub torch: Option<PathBuf>,
    pub e2e_steps: u64,
    /// Time the float64 kernels (and PyTorch's float64 BatchNorm) instead: no floor (its
    /// skeleton is float32's).
    pub f64: bool,
    /// The shapes to time, in their layouts' axis order ([`shapes`]).
    pub shapes: Vec<(Layout, Vec<usize>)>,
    pub out: Option<PathBuf>,
}

/// Bytes a timing holds per value of the tensor at most: our four tensors (`x`, `dy`, `y`,
/// `dx`) and the floor's four, float32; or, for float64, the four in float64 with the float32
/// values they were widened from.
const BYTES_PER_VALUE: u64 = 40;

/// The shapes `bnlab bench --shapes` names (`LAYOUT:DxDx...`, see [`batchnorm::parse_shape`]),
/// or the suite where it names none. Fails, before anything is timed, on a shape that does
/// not parse, holds no values, or needs more memory than the machine has available.
pub fn shapes(specs: &[String]) -> Result<Vec<(Layout, Vec<usize>)>> {
    if specs.is_empty() {
        return Ok(SUITE.iter().map(|(_, l, s)| (*l, s.to_vec())).collect());
    }
    let available = available_memory();
    specs
        .iter()
        .map(|spec| {
            let (layout, shape) = batchnorm::parse_shape(spec).map_err(|e| anyhow::anyhow!("--shapes: {e}"))?;
            let n = shape.iter().product::<usize>() as u64;
            if n == 0 {
                bail!("--shapes: {spec:?} holds no values");
            }
            if let Some(a) = available.filter(|&a| n.saturating_mul(BYTES_PER_VALUE) > a) {
                bail!(
                    "--shapes: timing {spec:?} needs about {:.1} GB ({BYTES_PER_VALUE} bytes a value), more than the {:.1} GB available",
                    n as f64 * BYTES_PER_VALUE as f64 / 1e9,
                    a as f64 / 1e9
                );
            }
            Ok((layout, shape))
        })
        .collect()
}

/// The memory the system says is available (Linux's `MemAvailable`), if it says.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// A shape's sizes as the tables write them: `32x56x56x64`.
fn dims_name(shape: &[usize]) -> String {
    shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("x")
}

/// A shape as `bnlab bench --shapes` and `torch_bn.py --shapes` write it: `NHWC:32x56x56x64`.
fn shape_spec(layout: Layout, shape: &[usize]) -> String {
    format!("{}:{}", layout.name(), dims_name(shape))
}

/// Median seconds of `reps` calls after one warm-up call.
pub fn median(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    middle(
        (0..reps.max(1))
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// The middle value of `v` once sorted (the upper one of an even count); `v` is not empty.
pub fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Repetitions per measurement of a tensor of `n` values, as torch_bn.py: enough for about
/// 0.2 s of work, 5 to 200.
fn reps(n: usize) -> usize {
    ((2e9 / (n as f64 * 4.0 * 10.0)) as usize).clamp(5, 200)
}

/// Median milliseconds of our three operations on one shape and of their floors (see
/// [`floor_ms`]), in the current rayon pool: `[fwd, fwd + bwd, eval, floors of the same]`.
pub fn time_ours_and_floor(layout: Layout, shape: &[usize]) -> [f64; 6] {
    let d = Dims::new(layout, shape).expect("a shape checked by `shapes`");
    let [a, b, c] = time_ours(layout, shape);
    let [f, g, h] = floor_ms(d, reps(d.len()));
    [a, b, c, f, g, h]
}

/// The input and upstream gradient every timing of a shape of `n` values uses: values in
/// [-0.5, 0.5) that repeat every 1,000 and 997.
fn suite_data(n: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let dy = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 1e-3 - 0.5).collect();
    (x, dy)
}

/// Median milliseconds of our three operations on one shape (in the current rayon pool).
pub fn time_ours(layout: Layout, shape: &[usize]) -> [f64; 3] {
    let d = Dims::new(layout, shape).expect("a shape checked by `shapes`");
    let n = d.len();
    let (x, dy) = suite_data(n);
    let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
    let mut saved = SavedStats::with_channels(d.channels);
    let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).expect("config");
    let reps = reps(n);
    let fwd = median(|| bn.forward_train_into(&x, d, &mut y, &mut saved).expect("fwd"), reps);
    let fb = median(
        || {
            bn.forward_train_into(&x, d, &mut y, &mut saved).expect("fwd");
            bn.backward_into(&x, &dy, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).expect("bwd");
        },
        reps,
    );
    let ev = median(|| bn.forward_eval_into(&x, d, &mut y, &mut saved).expect("eval"), reps);
    [fwd * 1e3, fb * 1e3, ev * 1e3]
}

/// Median milliseconds of the float64 kernels on one shape (in the current rayon pool):
/// `[fwd, fwd + bwd, eval]`, the same data as [`time_ours`] widened.
pub fn time_ours_f64(layout: Layout, shape: &[usize]) -> [f64; 3] {
    let d = Dims::new(layout, shape).expect("a shape checked by `shapes`");
    let (n, c) = (d.len(), d.channels);
    let widen = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
    let (x, dy) = suite_data(n);
    let (x, dy) = (widen(x), widen(dy));
    let (mut y, mut dx) = (vec![0.0f64; n], vec![0.0f64; n]);
    let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
    let (w, b, rm, rv) = (vec![1.0; c], vec![0.0; c], vec![0.0; c], vec![1.0; c]);
    let mut m = vec![Moments::EMPTY; c];
    let mut saved = SavedStats::with_channels(c);
    let mut ws = Workspace::new();
    let reps = reps(2 * n);
    let mut fwd = |y: &mut [f64], saved: &mut SavedStats, ws: &mut Workspace| {
        forward_train_f64_into(&x, d, Some(&w), Some(&b), 1e-5, y, &mut m, saved, ws).expect("fwd");
    };
    let t_fwd = median(|| fwd(&mut y, &mut saved, &mut ws), reps);
    let t_fb = median(
        || {
            fwd(&mut y, &mut saved, &mut ws);
            backward_f64_into(&x, &dy, d, Some(&w), &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).expect("bwd");
        },
        reps,
    );
    let t_ev = median(|| forward_eval_f64_into(&x, d, Some(&w), Some(&b), &rm, &rv, 1e-5, &mut y, &mut ws).expect("eval"), reps);
    [t_fwd * 1e3, t_fb * 1e3, t_ev * 1e3]
}

/// Read + write GB/s of a parallel copy of a 256 MB buffer, one chunk per thread, two ways:
/// `[memcpy, streaming stores]`.
///
/// The tables' "copy" is the plain copy the issue's `torch_bn.py` takes as its bandwidth
/// reference (PyTorch's `copy_`), or `memcpy` where that is faster. Both write through the
/// cache: each destination line is read before it is written, so they move 3 bytes for every
/// 2 they count. A copy with streaming stores moves 2, and the kernels write large outputs
/// that way: on the project's machine (medians of 21, alternating) memcpy 20-21 GB/s against
/// 30-33 with streaming stores at 1 thread, 26-27 against 38-43 at 2 (PyTorch's `copy_` 24
/// and 31), which is how an eval of a 64 MB tensor, a read and a write like a copy, runs at
/// 120-140% "of copy". The tables give the streaming copy's share beside it.
pub fn copy_bandwidth() -> [f64; 2] {
    use rayon::prelude::*;
    let n = 64 << 20;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads());
    let memcpy = median(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s)), 20);
    let stream = median(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| stream_copy(s, d)), 20);
    [memcpy, stream].map(|t| 2.0 * (n * 4) as f64 / t / 1e9)
}

/// Median nanoseconds for one cache line to go from one thread to another and back (a
/// ping-pong of one atomic between two threads, 5 batches of 4,000 round trips).
///
/// On the project's machine this swings between spells within seconds: 61-135 ns in some,
/// 390-410 in others, as if its two CPUs sat on different core complexes; in the slow ones
/// whatever two threads pass each other costs several times more, and a 1 MB tensor (NC
/// 256x1024) takes as long at 2 threads as at 1 (see `SEQUENTIAL_BELOW` in
/// `batchnorm/src/parallel.rs`). The 2-thread tables give it so that such rounds show.
pub fn core_round_trip_ns() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const TRIPS: u64 = 4000;
    const BATCHES: u64 = 5;
    // Spinning alone, a machine with one CPU would pass the ball once per time slice.
    let wait_for = |ball: &AtomicU64, v: u64| {
        let mut spins = 0u32;
        while ball.load(Ordering::Acquire) != v {
            spins += 1;
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    };
    let ball = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..BATCHES * TRIPS {
                wait_for(&ball, 2 * i + 1);
                ball.store(2 * i + 2, Ordering::Release);
            }
        });
        let batches = (0..BATCHES)
            .map(|b| {
                let t = Instant::now();
                for i in b * TRIPS..(b + 1) * TRIPS {
                    ball.store(2 * i + 1, Ordering::Release);
                    wait_for(&ball, 2 * i + 2);
                }
                t.elapsed().as_secs_f64() * 1e9 / TRIPS as f64
            })
            .collect();
        middle(batches)
    })
}

/// The smallest and largest of some positive measurements.
fn low_high(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)))
}

/// Round trips above this many nanoseconds mark a slow spell (see [`core_round_trip_ns`]).
const SLOW_ROUND_TRIP_NS: f64 = 250.0;

/// The rounds' round trips between two threads for a table's heading: their median and range,
/// and how many rounds fell in a slow spell.
fn round_trip_note(trips: &[f64]) -> String {
    if trips.is_empty() {
        return String::new();
    }
    let (lo, hi) = low_high(trips);
    let slow = trips.iter().filter(|&&t| t > SLOW_ROUND_TRIP_NS).count();
    let range = if trips.len() > 1 { format!(" ({lo:.0}-{hi:.0} over the rounds)") } else { String::new() };
    let spell = if slow > 0 {
        format!(
            "; {slow} of {} round(s) above {SLOW_ROUND_TRIP_NS:.0} ns, where what threads pass each other costs several times more and small tensors gain little from more threads",
            trips.len()
        )
    } else {
        String::new()
    };
    format!(". A cache line between two threads and back: {:.0} ns{range}{spell}", middle(trips.to_vec()))
}

/// The range of the rounds' copy bandwidths, when there are several, and a warning when it is
/// wide: on a shared machine the memory bandwidth moves with the neighbours (this project's
/// machine has shown 24-36 GB/s at 2 threads from one run to the next within an hour), and
/// every entry moves with it.
fn copy_spread(copies: &[f64]) -> String {
    if copies.len() < 2 {
        return String::new();
    }
    let (lo, hi) = low_high(copies);
    let warn = if hi > 1.15 * lo { ", more than 15% apart: the machine was noisy, single entries may be off as much" } else { "" };
    format!("; {lo:.1}-{hi:.1} over the rounds{warn}")
}

/// Entry-wise median over rounds of (per-shape times, copy bandwidth).
fn median_rounds<const K: usize>(rounds: &[(Vec<[f64; K]>, f64)]) -> (Vec<[f64; K]>, f64) {
    let n = rounds[0].0.len();
    let times = (0..n).map(|i| std::array::from_fn(|k| middle(rounds.iter().map(|r| r.0.get(i).map_or(f64::NAN, |x| x[k])).collect()))).collect();
    (times, middle(rounds.iter().map(|r| r.1).collect()))
}

/// Runs an embedded Python script with `python`; returns its stdout.
fn python(python: &Path, script: &str, name: &str, args: &[String]) -> Result<String> {
    let path = std::env::temp_dir().join(format!("bnlab-{}-{name}", std::process::id()));
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    let out = std::process::Command::new(python).arg(&path).args(args).output().with_context(|| format!("cannot run {}", python.display()))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!("{} {name} failed: {}", python.display(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// PyTorch's medians (ms) per shape and its copy bandwidth.
fn time_torch(py: &Path, threads: usize, f64: bool, shapes: &[(Layout, Vec<usize>)]) -> Result<(Vec<[f64; 3]>, f64)> {
    let specs = shapes.iter().map(|(l, s)| shape_spec(*l, s)).collect::<Vec<_>>().join(",");
    let mut args = vec!["--threads".into(), threads.to_string(), "--json".into(), "--shapes".into(), specs];
    if f64 {
        args.extend(["--dtype".into(), "float64".into()]);
    }
    let out = python(py, TORCH_BN, "torch_bn.py", &args)?;
    let rows_line = out.lines().rev().find(|l| l.starts_with('[')).context("torch_bn.py printed no JSON")?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(rows_line)?;
    let copy = out.lines().find(|l| l.starts_with("copy")).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let ms = rows
        .iter()
        .map(|r| {
            let g = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            [g("train_fwd_ms"), g("train_fwd_bwd_ms"), g("eval_ms")]
        })
        .collect();
    Ok((ms, copy))
}

/// Training steps per second of the paper's MLP in bnlab, without and with BN, in this
/// process as it is set up (`bnlab bench-e2e`).
pub fn e2e_ours(steps: u64) -> Result<(f64, f64)> {
    let data = Source::Builtin.load()?;
    let mut rates = Vec::new();
    for bn in [false, true] {
        let a = PaperArgs { steps, eval_every: steps, quiet: true, ..PaperArgs::new(Source::Builtin, None) };
        let mut run = Run::new(paper::config(&a, bn), data.clone(), None)?;
        run.cfg.steps = 50;
        run.train(&mut |_, _| Ok(vec![]))?;
        run.cfg.steps = 50 + steps;
        let t = Instant::now();
        run.train(&mut |_, _| Ok(vec![]))?;
        rates.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    Ok((rates[0], rates[1]))
}

/// [`e2e_ours`] in a fresh `bnlab` process limited to `threads` threads, as a training run
/// with that many threads would be (candle sizes its pools once per process).
fn e2e_child(threads: usize, steps: u64) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("cannot find the bnlab executable")?;
    let out = std::process::Command::new(&exe)
        .args(["bench-e2e", "--steps", &steps.to_string()])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        bail!("end-to-end timing failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    rates(&String::from_utf8_lossy(&out.stdout)).context("end-to-end timing printed no JSON")
}

/// `(no_bn, bn)` steps per second from the last line of an end-to-end timing
/// (`{"no_bn": .., "bn": ..}`, as `bnlab bench-e2e` and torch_mlp.py print it).
fn rates(out: &str) -> Result<(f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("{}"))?;
    Ok((v["no_bn"].as_f64().unwrap_or(f64::NAN), v["bn"].as_f64().unwrap_or(f64::NAN)))
}

pub fn run(a: &BenchArgs) -> Result<PathBuf> {
    if let Some(py) = &a.torch {
        // Before minutes of our own timings, not after: a wrong interpreter fails at once.
        python(py, "import torch\n", "check_torch.py", &[])
            .with_context(|| format!("--torch {}: not a Python with torch (python3 -m venv .venv && .venv/bin/pip install torch numpy)", py.display()))?;
    }
    let dir = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("bench-{}", report::timestamp())));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let mut md = String::new();
    let mut csv = String::from("threads,shape,layout,op,ours_ms,torch_ms,speedup,floor_ms,speedup_at_floor,ours_GBps,copy_GBps,pct_of_copy,pct_of_floor,memcpy_GBps,stream_GBps,pct_of_stream_copy,round_trip_ns\n");
    for &t in &a.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let mut our_rounds = Vec::new();
        let mut copies = Vec::new();
        let mut torch_rounds = Vec::new();
        let mut trips = Vec::new();
        for r in 0..a.rounds.max(1) {
            if t > 1 {
                trips.push(core_round_trip_ns());
            }
            eprintln!("round {}/{}: our kernels with {t} thread(s)...", r + 1, a.rounds.max(1));
            let time = |l: Layout, s: &[usize]| {
                if a.f64 {
                    let [f, g, e] = time_ours_f64(l, s);
                    [f, g, e, f64::NAN, f64::NAN, f64::NAN]
                } else {
                    time_ours_and_floor(l, s)
                }
            };
            let (times, [memcpy, stream]) = pool.install(|| (a.shapes.iter().map(|(l, s)| time(*l, s)).collect::<Vec<_>>(), copy_bandwidth()));
            let mut plain = memcpy;
            if let Some(py) = &a.torch {
                eprintln!("round {}/{}: PyTorch with {t} thread(s)...", r + 1, a.rounds.max(1));
                let round = time_torch(py, t, a.f64, &a.shapes)?;
                plain = plain.max(round.1);
                torch_rounds.push(round);
            }
            copies.push([memcpy, stream]);
            our_rounds.push((times, plain));
        }
        let (ours, copy) = median_rounds(&our_rounds);
        let torch = (!torch_rounds.is_empty()).then(|| median_rounds(&torch_rounds));
        let [memcpy, stream] = [0, 1].map(|k| middle(copies.iter().map(|c| c[k]).collect()));
        md.push_str(&format!(
            "\n### {}{t} thread(s), median of {} round(s): copy {copy:.1} GB/s (read + write: {}{}); with streaming stores {stream:.1}{}\n\n",
            if a.f64 { "float64 tensors, " } else { "" },
            a.rounds.max(1),
            torch.as_ref().map_or("memcpy".to_string(), |(_, c)| format!("each round's faster of memcpy and PyTorch's copy_, medians {memcpy:.1} and {c:.1}")),
            copy_spread(&our_rounds.iter().map(|r| r.1).collect::<Vec<_>>()),
            round_trip_note(&trips),
        ));
        let trip = if trips.is_empty() { f64::NAN } else { middle(trips.clone()) };
        let headers = [
            "shape",
            "layout",
            "op",
            "ours ms",
            "PyTorch ms",
            "speedup",
            "floor ms",
            "speedup at floor",
            "ours GB/s",
            "% of copy",
            "% of streaming copy",
            "% of floor",
        ];
        let mut rows = Vec::new();
        for (i, (layout, shape)) in a.shapes.iter().enumerate() {
            let bytes = shape.iter().product::<usize>() as f64 * if a.f64 { 8.0 } else { 4.0 };
            let name = dims_name(shape);
            for (k, (op, floor)) in OPS.iter().enumerate() {
                let ms = ours[i][k];
                let gbps = floor * bytes / (ms * 1e-3) / 1e9;
                let tms = torch.as_ref().map_or(f64::NAN, |(r, _)| r.get(i).map_or(f64::NAN, |r| r[k]));
                let speed = tms / ms;
                let fms = ours[i][3 + k];
                let best = tms / fms;
                rows.push(vec![
                    name.clone(),
                    layout.name().to_string(),
                    op.to_string(),
                    format!("{ms:.3}"),
                    if tms.is_finite() { format!("{tms:.3}") } else { "-".into() },
                    if speed.is_finite() { format!("{speed:.2}x") } else { "-".into() },
                    if fms.is_finite() { format!("{fms:.3}") } else { "-".into() },
                    if best.is_finite() { format!("{best:.2}x") } else { "-".into() },
                    format!("{gbps:.1}"),
                    format!("{:.0}%", 100.0 * gbps / copy),
                    format!("{:.0}%", 100.0 * gbps / stream),
                    if fms.is_finite() { format!("{:.0}%", 100.0 * fms / ms) } else { "-".into() },
                ]);
                csv.push_str(&format!(
                    "{t},{name},{},{op},{ms},{tms},{speed},{fms},{best},{gbps},{copy},{},{},{memcpy},{stream},{},{trip}\n",
                    layout.name(),
                    100.0 * gbps / copy,
                    100.0 * fms / ms,
                    100.0 * gbps / stream
                ));
            }
        }
        md.push_str(&report::md_table(&headers, &rows));
        if a.e2e_steps > 0 {
            let (nb, b) = e2e_child(t, a.e2e_steps)?;
            md.push_str(&format!(
                "\nFigure-1 MLP (784-100-100-100-10, sigmoid, batch 60, SGD), {} steps: bnlab {nb:.0} steps/s without BN, {b:.0} with BN (BN costs {:.2}x per step)",
                a.e2e_steps,
                nb / b
            ));
            if let Some(py) = &a.torch {
                let out = python(py, TORCH_MLP, "torch_mlp.py", &["--threads".into(), t.to_string(), "--steps".into(), a.e2e_steps.to_string()])?;
                let (tnb, tb) = rates(&out)?;
                md.push_str(&format!("; PyTorch {tnb:.0} without BN, {tb:.0} with BN (bnlab / PyTorch: {:.2}x without, {:.2}x with BN)", nb / tnb, b / tb));
            }
            md.push_str(".\n");
        }
    }
    println!("{md}");
    batchnorm::write_atomic(&dir.join("bench.md"), md.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    batchnorm::write_atomic(&dir.join("bench.csv"), csv.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_spread_gives_the_range_and_warns_when_wide() {
        assert_eq!(copy_spread(&[25.0]), "");
        assert_eq!(copy_spread(&[25.0, 24.0, 26.0]), "; 24.0-26.0 over the rounds");
        let wide = copy_spread(&[21.0, 25.0, 36.0]);
        assert!(wide.starts_with("; 21.0-36.0 over the rounds, more than 15% apart"), "{wide}");
    }

    /// `--dtype f64` times the float64 kernels: three positive medians, and no floor.
    #[test]
    fn float64_timings_run_the_float64_kernels() {
        for (layout, shape) in [(Layout::Nc, &[60usize, 100][..]), (Layout::Nhwc, &[2, 5, 5, 8])] {
            let t = time_ours_f64(layout, shape);
            assert!(t.iter().all(|ms| ms.is_finite() && *ms > 0.0), "{shape:?}: {t:?}");
        }
    }

    #[test]
    fn round_trips_are_measured_and_slow_rounds_counted() {
        let t = core_round_trip_ns();
        assert!(t.is_finite() && t > 1.0 && t < 1e6, "{t} ns");
        assert_eq!(round_trip_note(&[]), "");
        assert_eq!(round_trip_note(&[90.0]), ". A cache line between two threads and back: 90 ns");
        let note = round_trip_note(&[100.0, 400.0, 80.0]);
        assert!(note.starts_with(". A cache line between two threads and back: 100 ns (80-400 over the rounds); 1 of 3 round(s) above 250 ns"), "{note}");
    }
}
