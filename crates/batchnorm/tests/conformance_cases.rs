//! Every bundled conformance case must pass (copied from PyTorch/ONNX-derived expectations).

use std::path::Path;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/conformance/cases");

#[test]
fn every_bundled_case_passes() {
    let sum = batchnorm::conformance::run_dir(Path::new(CASES), None).unwrap();
    let report: Vec<String> = sum.failed.iter().map(|(n, w)| format!("{n}: {}", w.join("; "))).collect();
    assert!(sum.failed.is_empty(), "failing cases:\n{}", report.join("\n"));
    // Guards against a directory that silently lost its cases.
    assert_eq!(sum.passed, 49, "expected all 49 bundled cases to run");
}

#[test]
fn runner_writes_outputs_under_expectation_names() {
    let out = std::env::temp_dir().join(format!("bn-conf-{}", std::process::id()));
    let sum = batchnorm::conformance::run_dir(Path::new(CASES), Some(&out)).unwrap();
    assert!(sum.failed.is_empty());
    let bytes = std::fs::read(out.join("train_nchw_2x3x4x5.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["expect.dbias", "expect.dweight", "expect.dx", "expect.running_mean", "expect.running_var", "expect.y"]);
    assert_eq!(st.tensor("expect.y").unwrap().shape(), [2, 3, 4, 5]);
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(md.metadata().as_ref().unwrap()["num_batches_tracked"], "1");
    let bytes = std::fs::read(out.join("error_single_value_per_channel_nc.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(md.metadata().as_ref().unwrap()["error"], "degenerate");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn runner_flags_a_wrong_expectation() {
    // Corrupt one expectation of a real case: the runner must report it, not pass it.
    let src = std::fs::read(Path::new(CASES).join("train_nc_2x3.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&src).unwrap();
    let mut tensors: Vec<(String, batchnorm::OwnedTensor)> =
        st.tensors().into_iter().map(|(n, t)| (n, batchnorm::OwnedTensor { dtype: t.dtype(), shape: t.shape().to_vec(), data: t.data().to_vec() })).collect();
    let y = tensors.iter_mut().find(|(n, _)| n == "expect.y").unwrap();
    y.1.data[0..4].copy_from_slice(&123.0f32.to_le_bytes());
    let bytes = safetensors::serialize(tensors, md.metadata().clone()).unwrap();
    let o = batchnorm::conformance::run_case("bad", &bytes).unwrap();
    assert!(!o.passed());
    assert!(o.failures[0].contains("expect.y"), "{:?}", o.failures);
}
