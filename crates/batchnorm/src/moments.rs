//! Mergeable first and second moments (count, mean, M2) in float64.

/// The moments of a set of values: its `count`, `mean` and `m2 = sum((x - mean)^2)`.
///
/// Two sets merge exactly (Chan, Golub & LeVeque, 1979):
/// `delta = mean_b - mean_a`, `n = n_a + n_b`,
/// `mean = mean_a + delta * n_b / n`, `m2 = m2_a + m2_b + delta^2 * n_a * n_b / n`.
/// This is how [`crate::PopulationStats`] pools batches exactly, and what a synchronised
/// (cross-process) batch norm would exchange. Inside one kernel call the blocks of a
/// reduction share one shift per channel, so there their sums combine by plain addition, in
/// a fixed block order, so that results do not depend on the number of threads.
///
/// ```
/// use batchnorm::Moments;
/// let a = Moments::from_slice(&[1.0, 2.0, 3.0]);
/// let b = Moments::from_slice(&[10.0, 20.0]);
/// let all = Moments::from_slice(&[1.0, 2.0, 3.0, 10.0, 20.0]);
/// let merged = a.merge(&b);
/// assert_eq!(merged.count, 5.0);
/// assert!((merged.mean - all.mean).abs() < 1e-12);
/// assert!((merged.m2 - all.m2).abs() < 1e-9);
/// assert!((merged.var_biased() - 50.96).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    /// Number of values (a float so that weighted merges stay exact for any size).
    pub count: f64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// The empty set: the identity of [`Moments::merge`].
    pub const EMPTY: Moments = Moments { count: 0.0, mean: 0.0, m2: 0.0 };

    /// Moments of a slice, two passes in float64.
    pub fn from_slice(values: &[f32]) -> Moments {
        if values.is_empty() {
            return Moments::EMPTY;
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let m2 = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
        Moments { count: n, mean, m2 }
    }

    /// Moments from sums taken about a shift `k`: `s1 = sum(x - k)`, `s2 = sum((x - k)^2)`
    /// over `count` values. With `k` near the data the subtraction `s2 - s1^2 / n` loses
    /// nothing that matters; `m2` is clamped at 0 against rounding.
    pub fn from_shifted_sums(count: f64, shift: f64, s1: f64, s2: f64) -> Moments {
        if count == 0.0 {
            return Moments::EMPTY;
        }
        let d = s1 / count;
        let m2 = s2 - s1 * d;
        // `max` would turn a NaN into 0; keep NaN so a poisoned channel stays visible.
        let m2 = if m2 < 0.0 { 0.0 } else { m2 };
        Moments { count, mean: shift + d, m2 }
    }

    /// Combines the moments of two disjoint sets (Chan et al.); exact up to rounding.
    pub fn merge(&self, other: &Moments) -> Moments {
        if other.count == 0.0 {
            return *self;
        }
        if self.count == 0.0 {
            return *other;
        }
        let n = self.count + other.count;
        let delta = other.mean - self.mean;
        Moments { count: n, mean: self.mean + delta * (other.count / n), m2: self.m2 + other.m2 + delta * delta * (self.count * other.count / n) }
    }

    /// Biased variance `m2 / count`, what normalisation uses.
    pub fn var_biased(&self) -> f64 {
        self.m2 / self.count
    }

    /// Unbiased variance `m2 / (count - 1)` = biased · M/(M-1).
    pub fn var_unbiased(&self) -> f64 {
        self.m2 / (self.count - 1.0)
    }
}

/// Merges `other` into `acc` channel by channel.
///
/// # Panics
/// When the two slices differ in length.
pub fn merge_channels(acc: &mut [Moments], other: &[Moments]) {
    assert_eq!(acc.len(), other.len(), "merge_channels: channel counts differ");
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a.merge(b);
    }
}
