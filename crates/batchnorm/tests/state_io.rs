//! Safetensors state I/O with PyTorch's state_dict names.

mod common;

use batchnorm::safetensors::{self, Dtype};
use batchnorm::*;
use common::Rng;
use std::collections::HashMap;

fn trained(c: usize) -> BatchNorm {
    let mut bn = BatchNorm::new(BatchNormConfig::new(c)).unwrap();
    let mut rng = Rng::new(5);
    bn.set_affine(&rng.vec(c, 1.0, 0.3), &rng.vec(c, 0.0, 0.3)).unwrap();
    let d = Dims::new(Layout::Nchw, &[4, c, 3, 3]).unwrap();
    for _ in 0..3 {
        bn.forward_train(&rng.vec(d.len(), 2.0, 3.0), d).unwrap();
    }
    bn
}

/// Named tensors as a safetensors file holds them.
type Tensors = Vec<(String, OwnedTensor)>;

fn serialize(tensors: Tensors) -> Vec<u8> {
    safetensors::serialize(tensors, None).unwrap()
}

#[test]
fn round_trip_with_prefix_uses_pytorch_names() {
    let a = trained(4);
    let bytes = save_state(&a, "layer1.bn.").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["layer1.bn.bias", "layer1.bn.num_batches_tracked", "layer1.bn.running_mean", "layer1.bn.running_var", "layer1.bn.weight"]);
    let nbt = st.tensor("layer1.bn.num_batches_tracked").unwrap();
    assert_eq!((nbt.dtype(), nbt.shape()), (Dtype::I64, &[][..]));
    let mut b = BatchNorm::new(BatchNormConfig::new(4)).unwrap();
    load_state(&mut b, &bytes, "layer1.bn.").unwrap();
    assert_eq!(b.weight(), a.weight());
    assert_eq!(b.bias(), a.bias());
    assert_eq!(b.running_mean(), a.running_mean());
    assert_eq!(b.running_var(), a.running_var());
    assert_eq!(b.num_batches_tracked(), 3);
    // Same state, same eval output.
    let d = Dims::rows(5, 4);
    let x = Rng::new(9).vec(20, 1.0, 1.0);
    assert_eq!(a.clone().forward_eval(&x, d).unwrap().0, b.forward_eval(&x, d).unwrap().0);
}

#[test]
fn file_round_trip_is_atomic_and_names_the_path_on_error() {
    let dir = std::env::temp_dir().join(format!("bn-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bn.safetensors");
    let a = trained(3);
    save_state_file(&a, "", &path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file may remain: {leftovers:?}");
    let mut b = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
    load_state_file(&mut b, "", &path).unwrap();
    assert_eq!(b.running_var(), a.running_var());
    let e = load_state_file(&mut b, "", dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(e, BnError::Io(_)) && e.to_string().contains("missing.safetensors"), "{e}");
    std::fs::write(&path, b"garbage").unwrap();
    let e = load_state_file(&mut b, "", &path).unwrap_err();
    assert!(e.to_string().contains("bn.safetensors"), "{e}");
    assert!(save_state_file(&a, "", dir.join("no/such/dir/x.safetensors")).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_counter_leaves_it_as_it_was() {
    let a = trained(2);
    let tensors: Vec<_> = state_tensors(&a, "").into_iter().filter(|(n, _)| n != "num_batches_tracked").collect();
    let mut b = BatchNorm::new(BatchNormConfig::new(2)).unwrap();
    b.set_num_batches_tracked(42);
    load_state(&mut b, &serialize(tensors), "").unwrap();
    assert_eq!(b.num_batches_tracked(), 42);
    assert_eq!(b.running_mean(), a.running_mean());
}

#[test]
fn corrupt_truncated_and_mismatched_files_are_refused_without_change() {
    let a = trained(3);
    let good = save_state(&a, "").unwrap();
    let mut b = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
    let fresh = b.clone();
    let unchanged = |b: &BatchNorm| b.weight() == fresh.weight() && b.running_mean() == fresh.running_mean() && b.num_batches_tracked() == 0;
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 3].to_vec()),
        ("header cut", good[..10].to_vec()),
        ("empty", vec![]),
        ("garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}".to_vec()),
    ];
    let base = state_tensors(&a, "");
    let edit = |f: &dyn Fn(&mut Tensors)| {
        let mut t = base.clone();
        f(&mut t);
        serialize(t)
    };
    bad.push(("missing running_var", edit(&|t| t.retain(|(n, _)| n != "running_var"))));
    bad.push(("missing weight", edit(&|t| t.retain(|(n, _)| n != "weight"))));
    bad.push(("wrong shape", edit(&|t| t.iter_mut().filter(|(n, _)| n == "bias").for_each(|(_, v)| *v = OwnedTensor::f32(vec![4], &[0.0; 4])))));
    bad.push(("2-d shape", edit(&|t| t.iter_mut().filter(|(n, _)| n == "bias").for_each(|(_, v)| *v = OwnedTensor::f32(vec![3, 1], &[0.0; 3])))));
    bad.push((
        "wrong dtype",
        edit(&|t| {
            t.iter_mut().filter(|(n, _)| n == "running_mean").for_each(|(_, v)| *v = OwnedTensor { dtype: Dtype::I32, shape: vec![3], data: vec![0; 12] })
        }),
    ));
    bad.push(("counter dtype", edit(&|t| t.iter_mut().filter(|(n, _)| n == "num_batches_tracked").for_each(|(_, v)| *v = OwnedTensor::f32(vec![], &[1.0])))));
    bad.push(("negative counter", edit(&|t| t.iter_mut().filter(|(n, _)| n == "num_batches_tracked").for_each(|(_, v)| *v = OwnedTensor::i64_scalar(-1)))));
    for (what, bytes) in bad {
        let e = load_state(&mut b, &bytes, "").unwrap_err();
        assert!(matches!(e, BnError::State(_)), "{what}: {e}");
        assert!(unchanged(&b), "{what} changed the layer");
    }
    // A prefix that is not in the file.
    assert!(load_state(&mut b, &good, "other.").unwrap_err().to_string().contains("other.weight"));
}

#[test]
fn state_written_like_pytorch_loads_and_gives_pytorch_eval_output() {
    // The eval conformance cases hold PyTorch's weight, bias and running statistics and its
    // eval output: write them as a state_dict file (with an I64 counter) and load it.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/conformance/cases/eval_nchw_8x16x7x7.safetensors");
    let case = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&case).unwrap();
    let get = |n: &str| -> Vec<f32> { st.tensor(n).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect() };
    let mut tensors: Vec<(String, OwnedTensor)> =
        ["weight", "bias", "running_mean", "running_var"].iter().map(|n| (format!("features.1.{n}"), OwnedTensor::f32(vec![16], &get(n)))).collect();
    tensors.push(("features.1.num_batches_tracked".into(), OwnedTensor::i64_scalar(1234)));
    tensors.push(("features.0.weight".into(), OwnedTensor::f32(vec![2], &[1.0, 2.0])));
    let mut md = HashMap::new();
    md.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(tensors, Some(md)).unwrap();
    let mut bn = BatchNorm::new(BatchNormConfig::new(16)).unwrap();
    load_state(&mut bn, &bytes, "features.1.").unwrap();
    assert_eq!(bn.num_batches_tracked(), 1234);
    let d = Dims::new(Layout::Nchw, &[8, 16, 7, 7]).unwrap();
    let (y, _) = bn.forward_eval(&get("x"), d).unwrap();
    conformance::compare("y", &y, &get("expect.y"), 1e-5).unwrap();
}

/// The four float tensors of a layer of `len` channels, each holding `data` as `dtype`.
fn float_state(dtype: Dtype, len: usize, data: &[u8]) -> Tensors {
    ["weight", "bias", "running_mean", "running_var"].iter().map(|n| (n.to_string(), OwnedTensor { dtype, shape: vec![len], data: data.to_vec() })).collect()
}

#[test]
fn half_double_and_bfloat_states_load_converted_to_f32() {
    // PyTorch's `load_state_dict` copies a state saved from `model.half()` or `model.double()`
    // into float32 parameters; so does this. Each value below is exact in every dtype, chosen
    // to cover the conversions' cases: signs, zeros, a subnormal half, a half near the top,
    // infinity, NaN.
    let want = [1.0f32, -2.0, 0.5, 65280.0, 2f32.powi(-24), -0.0, f32::INFINITY, 3.140625, f32::NAN];
    let f16 = [0x3c00u16, 0xc000, 0x3800, 0x7bf8, 0x0001, 0x8000, 0x7c00, 0x4248, 0x7e00];
    let bf16: Vec<u16> = want.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    let halves = |h: &[u16]| h.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let doubles: Vec<u8> = want.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (dtype, data) in [(Dtype::F16, halves(&f16)), (Dtype::BF16, halves(&bf16)), (Dtype::F64, doubles)] {
        let mut tensors = float_state(dtype, 9, &data);
        tensors.push(("num_batches_tracked".into(), OwnedTensor::i64_scalar(7)));
        let mut bn = BatchNorm::new(BatchNormConfig::new(9)).unwrap();
        load_state(&mut bn, &serialize(tensors), "").unwrap();
        for got in [bn.weight(), bn.bias(), bn.running_mean(), bn.running_var()] {
            assert_eq!(bits(got.unwrap()), bits(&want), "{dtype:?}");
        }
        assert_eq!(bn.num_batches_tracked(), 7);
    }
    // A float64 value between two float32s rounds to the nearer.
    let mut bn = BatchNorm::new(BatchNormConfig::new(1)).unwrap();
    load_state(&mut bn, &serialize(float_state(Dtype::F64, 1, &0.1f64.to_le_bytes())), "").unwrap();
    assert_eq!(bn.weight().unwrap(), [0.1f32]);
}
