//! # bnlab
//!
//! The batch-normalization lab: data, models, training, experiments, plots and reports
//! that measure what batch normalization does to training. The command-line front end is
//! the `bnlab` binary; everything it does is reachable from here too.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod dense;
pub mod experiments;
pub mod floor;
pub mod model;
pub mod optim;
pub mod paper;
pub mod plot;
pub mod report;
pub mod report_all;
pub mod rng;
pub mod runtime;
pub mod stats;
pub mod train;
