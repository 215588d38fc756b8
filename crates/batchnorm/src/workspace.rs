//! Scratch memory the kernels reuse from call to call.

/// Scratch buffers for the `_into` kernels. Keep one per layer (or per thread of callers) and
/// pass it to every call: after the first call with a given shape, no kernel allocates.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    pub(crate) sums: Vec<f64>,
    pub(crate) totals: Vec<f64>,
    pub(crate) shift: Vec<f64>,
    pub(crate) coef: Vec<f32>,
}

impl Workspace {
    /// An empty workspace; it grows to what the first calls need.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently held.
    pub fn capacity_bytes(&self) -> usize {
        self.sums.capacity() * 8
            + self.totals.capacity() * 8
            + self.shift.capacity() * 8
            + self.coef.capacity() * 4
    }
}

/// Resizes `v` to `n` values of `fill` without giving memory back.
pub(crate) fn sized<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) -> &mut [T] {
    v.clear();
    v.resize(n, fill);
    &mut v[..]
}
