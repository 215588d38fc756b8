//! Runs batch-norm conformance cases (safetensors files; see the repository's
//! `tests/data/conformance/FORMAT.md`) against this crate.

use crate::config::{BatchNormConfig, Momentum, RunningVar};
use crate::error::{BnError, Result};
use crate::io::{write_atomic, OwnedTensor};
use crate::layer::BatchNorm;
use crate::layout::{Dims, Layout};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What running one case gave.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// File stem of the case.
    pub name: String,
    /// Why the case failed; empty when it passed.
    pub failures: Vec<String>,
    /// Computed tensors under the expectations' names (`expect.y.0`, ...), with shapes.
    pub outputs: Vec<(String, OwnedTensor)>,
    /// `num_batches_tracked` after the last step.
    pub num_batches_tracked: i64,
    /// `Some("degenerate")` when the layer refused the input.
    pub error: Option<String>,
}

impl CaseOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

struct Case<'a> {
    st: SafeTensors<'a>,
    md: HashMap<String, String>,
}

impl Case<'_> {
    fn meta(&self, k: &str) -> Result<&str> {
        self.md.get(k).map(|s| s.as_str()).ok_or_else(|| BnError::State(format!("metadata `{k}` missing")))
    }
    fn flag(&self, k: &str) -> Result<bool> {
        match self.meta(k)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(BnError::State(format!("metadata `{k}` = {v:?} is not true/false"))),
        }
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T> {
        let v = self.meta(k)?;
        v.parse().map_err(|_| BnError::State(format!("metadata `{k}` = {v:?} is not a number")))
    }
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Ok(t) = self.st.tensor(name) else { return Ok(None) };
        if t.dtype() != Dtype::F32 {
            return Err(BnError::State(format!("`{name}` is {:?}, expected F32", t.dtype())));
        }
        let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(Some((t.shape().to_vec(), v)))
    }
    fn need(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.tensor(name)?.ok_or_else(|| BnError::State(format!("tensor `{name}` missing")))
    }
}

/// `max |A - E| <= tol * max(1, max |E|)`, NaN in E exactly where NaN in A.
pub fn compare(name: &str, got: &[f32], want: &[f32], tol: f64) -> std::result::Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: {} values, expected {}", got.len(), want.len()));
    }
    let scale = want.iter().filter(|v| !v.is_nan()).fold(1.0f64, |a, &v| a.max((v as f64).abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &e)) in got.iter().zip(want).enumerate() {
        if e.is_nan() || a.is_nan() {
            if e.is_nan() != a.is_nan() {
                return Err(format!("{name}[{i}]: got {a}, expected {e}"));
            }
            continue;
        }
        let diff = (a as f64 - e as f64).abs();
        if diff.is_nan() || diff > worst.0 {
            worst = (diff, i);
        }
    }
    if worst.0 > tol * scale {
        let i = worst.1;
        return Err(format!("{name}: max abs error {:.3e} at [{i}] (got {}, expected {}) exceeds {:.1e}", worst.0, got[i], want[i], tol * scale));
    }
    Ok(())
}

/// Runs one case from the bytes of its file.
pub fn run_case(name: &str, bytes: &[u8]) -> Result<CaseOutcome> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| BnError::State(format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| BnError::State(e.to_string()))?;
    let md = header.metadata().clone().unwrap_or_default();
    let case = Case { st, md };
    let layout: Layout = case.meta("layout")?.parse()?;
    let training = case.flag("training")?;
    let affine = case.flag("affine")?;
    let track = case.flag("track_running_stats")?;
    let momentum = match case.meta("momentum")? {
        "none" => Momentum::CumulativeAverage,
        _ => Momentum::Exponential(case.num("momentum")?),
    };
    let running_var = match case.meta("running_var_estimator")? {
        "unbiased" => RunningVar::Unbiased,
        "biased" => RunningVar::Biased,
        v => return Err(BnError::State(format!("unknown running_var_estimator {v:?}"))),
    };
    let steps: usize = case.num("steps")?;
    let tol: f64 = case.num("tol")?;
    let expect_error = case.md.get("expect.error").cloned();
    let suffix = |i: usize| if steps > 1 { format!(".{i}") } else { String::new() };
    let (xshape, _) = case.need(&format!("x{}", suffix(0)))?;
    let c = *xshape.get(layout.channel_axis()).ok_or_else(|| BnError::State("x has too few axes".into()))?;
    let cfg = BatchNormConfig::new(c).eps(case.num("eps")?).momentum(momentum).running_var(running_var).affine(affine).track_running_stats(track);
    let mut bn = BatchNorm::new(cfg)?;
    if affine {
        bn.set_affine(&case.need("weight")?.1, &case.need("bias")?.1)?;
    }
    if track {
        bn.set_running_stats(&case.need("running_mean")?.1, &case.need("running_var")?.1)?;
    }
    bn.set_num_batches_tracked(case.num("num_batches_tracked")?);
    let before = bn.clone();

    let mut out = CaseOutcome { name: name.to_string(), failures: vec![], outputs: vec![], num_batches_tracked: 0, error: None };
    let check = |out: &mut CaseOutcome, key: String, shape: Vec<usize>, got: &[f32]| -> Result<()> {
        if let Some((_, want)) = case.tensor(&key)? {
            if let Err(e) = compare(&key, got, &want, tol) {
                out.failures.push(e);
            }
        }
        out.outputs.push((key, OwnedTensor::f32(shape, got)));
        Ok(())
    };
    for i in 0..steps {
        let s = suffix(i);
        let (shape, x) = case.need(&format!("x{s}"))?;
        let d = Dims::new(layout, &shape)?;
        let (y, saved) = match bn.forward(&x, d, training) {
            Ok(r) => r,
            Err(BnError::Degenerate { .. }) => {
                out.error = Some("degenerate".into());
                break;
            }
            Err(e) => return Err(e),
        };
        check(&mut out, format!("expect.y{s}"), shape.clone(), &y)?;
        if let Some((_, dy)) = case.tensor(&format!("dy{s}"))? {
            let g = bn.backward(&x, &dy, d, &saved)?;
            check(&mut out, format!("expect.dx{s}"), shape.clone(), &g.dx)?;
            if let (Some(dw), Some(db)) = (g.dweight, g.dbias) {
                check(&mut out, format!("expect.dweight{s}"), vec![c], &dw)?;
                check(&mut out, format!("expect.dbias{s}"), vec![c], &db)?;
            }
        }
    }
    out.num_batches_tracked = bn.num_batches_tracked();
    match (&expect_error, &out.error) {
        (Some(e), None) => out.failures.push(format!("expected error {e:?}, but the input was accepted")),
        (None, Some(e)) => out.failures.push(format!("unexpected error {e:?}")),
        (Some(_), Some(_)) => {
            out.outputs.clear();
            if bn.running_mean() != before.running_mean()
                || bn.running_var() != before.running_var()
                || bn.num_batches_tracked() != before.num_batches_tracked()
            {
                out.failures.push("the refused input changed the running state".into());
            }
        }
        (None, None) => {
            if let (Some(rm), Some(rv)) = (bn.running_mean().map(<[f32]>::to_vec), bn.running_var().map(<[f32]>::to_vec)) {
                check(&mut out, "expect.running_mean".into(), vec![c], &rm)?;
                check(&mut out, "expect.running_var".into(), vec![c], &rv)?;
            }
        }
    }
    if let Some(want) = case.md.get("expect.num_batches_tracked") {
        let want: i64 = want.parse().map_err(|_| BnError::State("bad expect.num_batches_tracked".into()))?;
        if want != out.num_batches_tracked {
            out.failures.push(format!("num_batches_tracked: got {}, expected {want}", out.num_batches_tracked));
        }
    }
    Ok(out)
}

/// Writes what a case computed as `<out_dir>/<name>.safetensors`: the computed tensors under
/// the expectations' names, metadata `num_batches_tracked` and, when refused, `error`.
pub fn write_outcome(o: &CaseOutcome, out_dir: &Path) -> Result<PathBuf> {
    let mut md = HashMap::new();
    md.insert("num_batches_tracked".to_string(), o.num_batches_tracked.to_string());
    if let Some(e) = &o.error {
        md.insert("error".to_string(), e.clone());
    }
    let bytes = safetensors::serialize(o.outputs.iter().map(|(k, t)| (k.as_str(), t)), Some(md)).map_err(|e| BnError::State(e.to_string()))?;
    let path = out_dir.join(format!("{}.safetensors", o.name));
    write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Totals of a directory run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// `(case name, reasons)` of the cases that failed, in file-name order.
    pub failed: Vec<(String, Vec<String>)>,
}

/// Runs every `*.safetensors` case in `dir` (sorted by name), writing outputs to `out_dir`
/// when given. A case that cannot be read or run counts as failed with the reason.
pub fn run_dir(dir: &Path, out_dir: Option<&Path>) -> Result<Summary> {
    let rd = std::fs::read_dir(dir).map_err(|e| BnError::Io(format!("cannot read case directory {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    files.sort();
    if files.is_empty() {
        return Err(BnError::Io(format!("no *.safetensors case in {}", dir.display())));
    }
    if let Some(o) = out_dir {
        std::fs::create_dir_all(o).map_err(|e| BnError::Io(format!("cannot create {}: {e}", o.display())))?;
    }
    let mut sum = Summary::default();
    for f in files {
        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let res = std::fs::read(&f).map_err(|e| BnError::Io(format!("cannot read {}: {e}", f.display()))).and_then(|b| run_case(&name, &b));
        match res {
            Ok(o) => {
                if let Some(dir) = out_dir {
                    write_outcome(&o, dir)?;
                }
                if o.passed() {
                    sum.passed += 1;
                } else {
                    sum.failed.push((name, o.failures));
                }
            }
            Err(e) => sum.failed.push((name, vec![e.to_string()])),
        }
    }
    Ok(sum)
}
