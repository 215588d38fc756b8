//! The IDX reader against good, truncated and corrupt files.

use bnlab::data::{load_dir, parse_idx, split_from_idx, Source};
use std::io::Write;

fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn good_files_parse_raw_and_gzipped() {
    let images = idx(0x803, &[2, 2, 3], &[0, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let labels = idx(0x801, &[2], &[3, 9]);
    for (im, lb) in [(images.clone(), labels.clone()), (gz(&images), gz(&labels))] {
        let s = split_from_idx(&im, &lb, "im", "lb").unwrap();
        assert_eq!((s.len(), s.rows, s.cols), (2, 2, 3));
        assert_eq!(s.labels, vec![3, 9]);
        assert_eq!(s.images[1], 1.0);
        assert!((s.images[2] - 128.0 / 255.0).abs() < 1e-7);
    }
}

#[test]
fn bad_files_are_refused_with_the_file_and_the_problem_named() {
    let good_im = idx(0x803, &[2, 2, 2], &[0; 8]);
    let good_lb = idx(0x801, &[2], &[1, 2]);
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("bad magic", idx(0x804, &[2, 2, 2], &[0; 8]), good_lb.clone(), "bad magic"),
        ("labels as images", good_lb.clone(), good_lb.clone(), "bad magic"),
        ("truncated payload", idx(0x803, &[2, 2, 2], &[0; 7]), good_lb.clone(), "truncated"),
        ("truncated header", vec![0, 0, 8, 3, 0, 0], good_lb.clone(), "truncated header"),
        ("trailing data", idx(0x803, &[2, 2, 2], &[0; 9]), good_lb.clone(), "trailing data"),
        ("tiny", vec![1, 2], good_lb.clone(), "too short"),
        ("label range", good_im.clone(), idx(0x801, &[2], &[1, 10]), "outside 0..=9"),
        ("count mismatch", good_im.clone(), idx(0x801, &[3], &[1, 2, 3]), "holds 2 images but"),
        ("corrupt gzip", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef], good_lb.clone(), "corrupt gzip"),
        ("truncated gzip", gz(&good_im)[..20].to_vec(), good_lb.clone(), "corrupt gzip"),
    ];
    for (what, im, lb, expect) in cases {
        let e = split_from_idx(&im, &lb, "images.idx", "labels.idx").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(expect), "{what}: {msg}");
        assert!(msg.contains("images.idx") || msg.contains("labels.idx"), "{what} must name the file: {msg}");
    }
    assert!(parse_idx(&idx(0x803, &[0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF], &[]), 3, "huge").is_err());
}

#[test]
fn directories_and_named_datasets() {
    let dir = std::env::temp_dir().join(format!("bnlab-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = format!("{:#}", load_dir(&dir).unwrap_err());
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    let im = idx(0x803, &[3, 2, 2], &[7; 12]);
    let lb = idx(0x801, &[3], &[0, 1, 2]);
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&im)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), &lb).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), &im).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&lb)).unwrap();
    let d = Source::from_flags(Some(&dir), None).unwrap().load().unwrap();
    assert_eq!((d.train.len(), d.test.len()), (3, 3));
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), b"not gzip, not idx").unwrap();
    let e = format!("{:#}", load_dir(&dir).unwrap_err());
    assert!(e.contains("t10k-labels-idx1-ubyte.gz"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(format!("{:#}", Source::from_flags(None, Some("cifar")).unwrap_err()).contains("unknown dataset"));
    assert!(format!("{:#}", load_dir(&dir).unwrap_err()).contains("does not exist"));
}

#[test]
fn builtin_digits_split_8000_2000_and_are_class_balanced() {
    let d = Source::Builtin.load().unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.train.rows, d.train.cols), (8000, 2000, 28, 28));
    let mut counts = [0usize; 10];
    d.test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert!(counts.iter().all(|&c| c > 120 && c < 280), "{counts:?}");
    // Same split every time.
    assert_eq!(Source::Builtin.load().unwrap().test.labels, d.test.labels);
}
