//! Results are bitwise identical whatever the number of threads.

mod common;

use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout, PopulationEstimator, PopulationStats, RunningVar};
use common::Rng;

type Outputs = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn run(layout: Layout, shape: &[usize]) -> Outputs {
    let d = Dims::new(layout, shape).unwrap();
    let mut rng = Rng::new(11);
    let x = rng.vec(d.len(), 3.0, 2.0);
    let dy = rng.vec(d.len(), 0.0, 1.0);
    let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
    let (y, saved) = bn.forward_train(&x, d).unwrap();
    let g = bn.backward(&x, &dy, d, &saved).unwrap();
    let (ye, saved_e) = bn.forward_eval(&x, d).unwrap();
    let ge = bn.backward(&x, &dy, d, &saved_e).unwrap();
    let mut pop = PopulationStats::new(d.channels);
    pop.add_batch(&x, d).unwrap();
    pop.add_batch(&dy, d).unwrap();
    let mut population = Vec::new();
    for est in [PopulationEstimator::EqualWeight, PopulationEstimator::Pooled] {
        let (mean, var) = pop.finish(est, RunningVar::Unbiased).unwrap();
        population.extend(bits(&mean));
        population.extend(bits(&var));
    }
    let mut stats = bits(bn.running_mean().unwrap());
    stats.extend(bits(bn.running_var().unwrap()));
    stats.extend(bits(&g.dweight.unwrap()));
    stats.extend(bits(&g.dbias.unwrap()));
    stats.extend(bits(&ge.dweight.unwrap()));
    (bits(&y), bits(&g.dx), bits(&ye), bits(&ge.dx), stats, population)
}

#[test]
fn identical_results_for_1_to_4_7_and_16_threads() {
    let shapes: [(Layout, &[usize]); 14] = [
        (Layout::Nchw, &[8, 2, 64, 64]),
        (Layout::Nchw, &[2, 16, 96, 96]), // long runs, many channels: channel-by-channel tasks
        (Layout::Nchw, &[4, 64, 16, 16]),
        (Layout::Nchw, &[1, 50, 96, 96]), // channel tasks of 3 pipelined channels (last: 2)
        (Layout::Nhwc, &[8, 32, 32, 16]),
        (Layout::Nc, &[512, 256]),
        (Layout::Nc, &[200, 800]),       // two blocks of 100 rows
        (Layout::Nc, &[16, 2100]),       // few rows, many channels: backward in column tiles
        (Layout::Nc, &[8, 9000]),        // per-channel work in parallel tasks
        (Layout::Nc, &[1024, 2048]),     // 8 blocks: their parts merged in column tasks (column groups at 16)
        (Layout::Nhwc, &[8, 32, 33, 3]), // rows of 3 regrouped into rows of 24
        (Layout::Ncl, &[3, 1, 40000]),
        // 16 MB and more: on one thread the second passes run from the end (`from_end`)
        (Layout::Nhwc, &[2, 190, 230, 48]),
        (Layout::Nchw, &[90, 16, 55, 55]),
    ];
    for (layout, shape) in shapes {
        let results: Vec<Outputs> =
            // 7 and 16 split the work unevenly and into more parts than this machine has cores
            [1, 2, 3, 4, 7, 16].into_iter().map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| run(layout, shape))).collect();
        for (t, r) in [2, 3, 4, 7, 16].into_iter().zip(&results[1..]) {
            assert!(r == &results[0], "{layout} {shape:?}: {t} threads differ from 1 thread");
        }
    }
}
