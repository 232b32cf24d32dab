//! One embedding table trained with lazy Adam: a step reads and updates only the rows of its
//! batch, so its cost grows with the batch, not with the table (PyTorch's `SparseAdam` and
//! TensorFlow's `LazyAdam` do the same).
//!
//! Those optimisers also change what is learnt: dense Adam keeps moving a row that a batch did
//! not read, by its decaying momentum, for about `1 / (1 - beta_1)` steps; lazy Adam as they
//! implement it does not, and learns slower per epoch (measured here on MovieLens-100K, see
//! `docs/results.md`). This table makes up those steps when a row is next read ("catch-up"):
//! with a zero gradient, dense Adam's `k` missed steps decay the moments by `beta_1^k` and
//! `beta_2^k` and move the row by `lr * sum_j factor_j r^j m / (sqrt(v) + eps)` with
//! `r = beta_1 / sqrt(beta_2)`, which this computes from the row's own moments in one pass (the
//! step-dependent bias factors from a table; the last `CATCH_UP_TERMS` are enough since `r^j`
//! vanishes; epsilon at its current value). A table so trained follows dense Adam to within a
//! small part of one step's move (tested against a dense reference: 1e-4 where skipping the
//! catch-up strays 0.1), at the cost of the batch.
//!
//! The update is the one of [`crate::optim`] (the same constants, Burn's placement of epsilon):
//! when every row is read at every step, it is exactly the dense optimiser.

use crate::optim::{BETA_1, BETA_2, EPSILON};

/// How many rows ahead a loop over a batch's rows starts loading them.
const PREFETCH_AHEAD: usize = 8;

/// Missed steps made up at most: `r^j` is below 3e-5 beyond them.
const CATCH_UP_TERMS: u64 = 100;

#[derive(Debug, Clone)]
pub struct LazyAdamTable {
    dim: usize,
    /// Per row, its values, first moments and second moments side by side (`3 x dim`): a step
    /// touches one span of memory per row instead of three spread over three tables, which is
    /// what made the step grow with the table (cache and TLB misses).
    rows: Vec<f32>,
    /// Per row, the step after which its values and moments are current (missed steps after it
    /// are made up when the row is next read).
    current_at: Vec<u32>,
    steps: u64,
    /// The bias factor `sqrt(1 - beta_2^t) / (1 - beta_1^t)` of each step `t` taken (index
    /// `t - 1`), for the catch-up.
    factors: Vec<f32>,
    /// The catch-up sums `sum_j factor_{s+j} r^j` (`j` up to `CATCH_UP_TERMS`) of rows current
    /// at step `s`, for every `s` at least `CATCH_UP_TERMS` steps back (index `s`).
    full_sums: Vec<f32>,
    /// The catch-up sums of rows that missed `k` of the latest steps (index `k`, up to
    /// `CATCH_UP_TERMS`): with both tables a row's catch-up costs one lookup, not a sum.
    recent_sums: Vec<f32>,
    /// The learning rate of the latest step, which the catch-up applies to the missed steps.
    learning_rate: f32,
    /// Per row: its slot in the batch being gathered (`u32::MAX`: not in it). Kept between
    /// steps and reset row by row, so a gather costs the batch, not the table.
    slot: Vec<u32>,
}

/// The distinct rows of a batch's ids, gathered from a [`LazyAdamTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct GatheredRows {
    /// The distinct row ids, in order of first appearance.
    pub rows: Vec<u32>,
    /// For each id of the batch, its position in `rows`.
    pub positions: Vec<u32>,
    /// The rows' values, `rows.len() x dim` row-major.
    pub values: Vec<f32>,
}

/// Adam's bias factor and epsilon at step `t` (1-based), in the form the update uses.
fn factor_and_epsilon(t: u64) -> (f32, f32) {
    let t = t.min(i32::MAX as u64) as i32;
    let correction_2 = (1.0 - BETA_2.powi(t)).sqrt();
    (
        correction_2 / (1.0 - BETA_1.powi(t)),
        EPSILON * correction_2,
    )
}

/// Asks the kernel to back `buffer` with huge pages (Linux transparent huge pages in `madvise`
/// mode), before its pages are first written. A step reads its rows at random: with 4 KiB pages
/// each row of a large table costs a TLB miss as well as a cache miss. Elsewhere, or where the
/// kernel declines, nothing changes but speed.
fn ask_for_huge_pages(buffer: &mut [f32]) {
    const HUGE_PAGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(buffer);
    if bytes < 2 * HUGE_PAGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = buffer.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        let len = (start + bytes - aligned) / HUGE_PAGE * HUGE_PAGE;
        // SAFETY: the range lies inside `buffer`, which this function borrows mutably; the
        // advice changes how its pages are backed, never their contents or the mapping.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

/// How far a row's missed steps move one of its values, given the row's catch-up coefficient and
/// the value's moments.
#[inline]
fn catch_up_move(coefficient: f32, m: f32, v: f32, epsilon: f32) -> f32 {
    coefficient * m / (v.sqrt() + epsilon)
}

impl LazyAdamTable {
    /// A table of `values.len() / dim` rows with zero moments.
    pub fn new(values: Vec<f32>, dim: usize) -> Self {
        let dim = dim.max(1);
        let n = values.len() / dim;
        let mut rows = vec![0.0; 3 * n * dim];
        ask_for_huge_pages(&mut rows);
        for (row, v) in rows.chunks_exact_mut(3 * dim).zip(values.chunks_exact(dim)) {
            row[..dim].copy_from_slice(v);
        }
        LazyAdamTable {
            dim,
            rows,
            current_at: vec![0; n],
            steps: 0,
            factors: Vec::new(),
            full_sums: Vec::new(),
            recent_sums: vec![0.0],
            learning_rate: 0.0,
            slot: vec![u32::MAX; n],
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.slot.len()
    }

    /// How far the missed steps of a row current at step `current_at` move it, per unit of
    /// `m / (sqrt(v) + eps)`; and how many steps it missed.
    fn catch_up_coefficient(&self, current_at: u32) -> (f32, u64) {
        let missed = self.steps.saturating_sub(current_at as u64);
        let sum = if missed <= CATCH_UP_TERMS {
            self.recent_sums
                .get(missed as usize)
                .copied()
                .unwrap_or(0.0)
        } else {
            self.full_sums
                .get(current_at as usize)
                .copied()
                .unwrap_or(0.0)
        };
        (self.learning_rate * sum, missed)
    }

    /// `sum_j factor_{from+j} r^j` for `j` in `1..=terms` (steps up to `from + terms` taken).
    fn catch_up_sum(&self, from: u64, terms: u64) -> f32 {
        let ratio = BETA_1 / BETA_2.sqrt();
        let (mut sum, mut power) = (0.0f32, 1.0f32);
        for j in 1..=terms {
            power *= ratio;
            sum += self
                .factors
                .get((from + j) as usize - 1)
                .copied()
                .unwrap_or(1.0)
                * power;
        }
        sum
    }

    /// Extends the catch-up tables by the step just taken.
    fn extend_catch_up_sums(&mut self) {
        let steps = self.steps;
        while (self.full_sums.len() as u64) + CATCH_UP_TERMS <= steps {
            let from = self.full_sums.len() as u64;
            let sum = self.catch_up_sum(from, CATCH_UP_TERMS);
            self.full_sums.push(sum);
        }
        self.recent_sums = (0..=CATCH_UP_TERMS.min(steps))
            .map(|k| self.catch_up_sum(steps - k, k))
            .collect();
    }

    /// Starts loading row `r` into the cache, so that the loads of the rows a loop will reach
    /// next overlap with its work on this one (the rows of a batch are spread over the table).
    #[inline]
    fn prefetch_row(&self, r: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let span = 3 * self.dim;
            if let Some(row) = self.rows.get(r * span..(r + 1) * span) {
                for line in row.chunks(16) {
                    // SAFETY: a prefetch is a hint that never faults; the address is inside `row`.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            line.as_ptr() as *const i8,
                        );
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = r;
    }

    /// Row `r`'s values with its missed steps made up, written to `out`; the row itself is left
    /// as it is.
    fn caught_up_values(&self, r: usize, out: &mut [f32]) {
        let d = self.dim;
        let row = &self.rows[3 * r * d..3 * (r + 1) * d];
        let (coefficient, missed) = self.catch_up_coefficient(self.current_at[r]);
        let epsilon = factor_and_epsilon(self.steps.max(1)).1;
        for j in 0..d {
            out[j] = if missed == 0 {
                row[j]
            } else {
                row[j] - catch_up_move(coefficient, row[d + j], row[2 * d + j], epsilon)
            };
        }
    }

    /// Makes up row `r`'s missed steps in place.
    fn catch_up(&mut self, r: usize) {
        let (current_at, steps) = (self.current_at[r], self.steps.min(u32::MAX as u64) as u32);
        if current_at >= steps {
            return;
        }
        let d = self.dim;
        let (coefficient, _) = self.catch_up_coefficient(current_at);
        let epsilon = factor_and_epsilon(self.steps.max(1)).1;
        let missed = (steps - current_at) as i32;
        let (decay_1, decay_2) = (BETA_1.powi(missed), BETA_2.powi(missed));
        let (values, moments) = self.rows[3 * r * d..3 * (r + 1) * d].split_at_mut(d);
        let (m, v) = moments.split_at_mut(d);
        for ((x, m), v) in values.iter_mut().zip(m).zip(v) {
            *x -= catch_up_move(coefficient, *m, *v, epsilon);
            *m *= decay_1;
            *v *= decay_2;
        }
        self.current_at[r] = steps;
    }

    /// The whole table, row-major, as dense Adam would have it now (every row's missed steps
    /// made up; the table itself is not changed, so saving and resuming do not depend on when
    /// this was read).
    pub fn values(&self) -> Vec<f32> {
        let d = self.dim;
        let mut out = vec![0.0; self.rows() * d];
        for (r, values) in out.chunks_exact_mut(d).enumerate() {
            self.caught_up_values(r, values);
        }
        out
    }

    /// The distinct rows of `ids` and their values (missed steps made up first). An id past the
    /// table is an error.
    pub fn gather(&mut self, ids: &[u32]) -> Result<GatheredRows, String> {
        let n = self.rows();
        let mut rows = Vec::new();
        let mut positions = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(slot) = self.slot.get_mut(id as usize) else {
                return Err(format!("row {id} of a table of {n} rows"));
            };
            if *slot == u32::MAX {
                *slot = rows.len() as u32;
                rows.push(id);
            }
            positions.push(*slot);
        }
        for &row in &rows {
            self.slot[row as usize] = u32::MAX;
        }
        let values = self.values_of(&rows);
        Ok(GatheredRows {
            rows,
            positions,
            values,
        })
    }

    /// The values of `rows` (ids inside the table, as [`LazyAdamTable::gather`] returns them),
    /// row-major, their missed steps made up first.
    pub fn values_of(&mut self, rows: &[u32]) -> Vec<f32> {
        let d = self.dim;
        let mut values = Vec::with_capacity(rows.len() * d);
        for (i, &row) in rows.iter().enumerate() {
            if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                self.prefetch_row(ahead as usize);
            }
            let r = row as usize;
            self.catch_up(r);
            values.extend_from_slice(&self.rows[3 * r * d..(3 * r + 1) * d]);
        }
        values
    }

    /// One Adam step on `rows` with their gradients (`rows.len() x dim`, row-major); `rows` must
    /// be distinct, as [`LazyAdamTable::gather`] returns them.
    pub fn step(&mut self, learning_rate: f64, rows: &[u32], grads: &[f32]) {
        let d = self.dim;
        let now = self.steps + 1;
        let (factor, epsilon) = factor_and_epsilon(now);
        let lr = learning_rate as f32;
        for (i, &row) in rows.iter().enumerate() {
            if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                self.prefetch_row(ahead as usize);
            }
            let r = row as usize;
            if r >= self.rows() {
                continue;
            }
            // Steps missed before this one (none when the row was just gathered).
            self.catch_up(r);
            let grad = &grads[i * d..(i + 1) * d];
            let (values, moments) = self.rows[3 * r * d..3 * (r + 1) * d].split_at_mut(d);
            let (m, v) = moments.split_at_mut(d);
            for j in 0..d {
                let g = grad[j];
                m[j] = m[j] * BETA_1 + g * (1.0 - BETA_1);
                v[j] = v[j] * BETA_2 + g * g * (1.0 - BETA_2);
                values[j] -= lr * (m[j] * factor / (v[j].sqrt() + epsilon));
            }
            self.current_at[r] = now.min(u32::MAX as u64) as u32;
        }
        self.steps = now;
        self.factors.push(factor);
        self.learning_rate = lr;
        self.extend_catch_up_sums();
    }

    /// The optimiser's whole state, for a checkpoint: the step count, the learning rate, then
    /// per row its values and moments as stored (before any catch-up) and the step it is
    /// current at. A resumed table is then exactly the saved one.
    pub fn state_bytes(&self) -> Vec<u8> {
        let n = self.rows();
        let mut out = Vec::with_capacity(24 + 4 * self.rows.len() + 4 * n);
        out.extend_from_slice(&self.steps.to_le_bytes());
        out.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.learning_rate.to_le_bytes());
        for x in &self.rows {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for s in &self.current_at {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// Reads back what [`LazyAdamTable::state_bytes`] wrote, from the front of `bytes`; returns
    /// the rest.
    pub fn restore_state<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], String> {
        const CUT: &str = "the sparse optimiser state is cut short";
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (Some(steps), Some(len)) = (word(0), word(8)) else {
            return Err(CUT.into());
        };
        if len as usize != self.rows.len() {
            return Err(format!(
                "the sparse optimiser state is for a table of {} values, not {}",
                len / 3,
                self.rows.len() / 3
            ));
        }
        let n = self.rows();
        let end = 20 + 4 * self.rows.len() + 4 * n;
        let body = bytes.get(16..end).ok_or(CUT)?;
        let mut words = body.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        self.learning_rate = f32::from_le_bytes(words.next().ok_or(CUT)?);
        for x in self.rows.iter_mut() {
            *x = f32::from_le_bytes(words.next().ok_or(CUT)?);
        }
        for s in self.current_at.iter_mut() {
            *s = u32::from_le_bytes(words.next().ok_or(CUT)?);
        }
        self.steps = steps;
        self.factors = (1..=steps).map(|t| factor_and_epsilon(t).0).collect();
        self.full_sums.clear();
        self.extend_catch_up_sums();
        Ok(&bytes[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of uniform numbers in `[lo, hi)` (xorshift).
    struct Uniform(u64);

    impl Uniform {
        fn random_range(&mut self, range: std::ops::Range<f32>) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
            range.start + unit * (range.end - range.start)
        }
    }

    #[test]
    fn gather_keeps_first_appearance_and_maps_every_id() {
        let mut table = LazyAdamTable::new((0..12).map(|x| x as f32).collect(), 3);
        let got = table.gather(&[2, 0, 2, 3]).unwrap();
        assert_eq!(got.rows, vec![2, 0, 3]);
        assert_eq!(got.positions, vec![0, 1, 0, 2]);
        assert_eq!(got.values, vec![6., 7., 8., 0., 1., 2., 9., 10., 11.]);
        // The slots are reset: a second gather sees a fresh batch.
        assert_eq!(table.gather(&[0]).unwrap().positions, vec![0]);
        assert!(table.gather(&[4]).unwrap_err().contains("row 4"));
    }

    #[test]
    fn a_step_moves_only_the_rows_it_was_given() {
        let mut table = LazyAdamTable::new(vec![1.0; 6], 2);
        table.step(0.1, &[1], &[0.5, -0.5]);
        let values = table.values();
        // Rows 0 and 2 were never read: no moments, so nothing to make up either.
        assert_eq!(&values[0..2], &[1.0, 1.0]);
        assert_eq!(&values[4..6], &[1.0, 1.0]);
        // Adam's first step moves by the learning rate against the gradient's sign.
        assert!((values[2] - 0.9).abs() < 1e-4, "{values:?}");
        assert!((values[3] - 1.1).abs() < 1e-4, "{values:?}");
    }

    /// Dense Adam over the whole table, every row stepped at every step (zero gradient where
    /// the batch did not read it): the reference the lazy table must follow.
    struct DenseReference {
        values: Vec<f32>,
        m: Vec<f32>,
        v: Vec<f32>,
        t: u64,
    }

    impl DenseReference {
        fn step(&mut self, lr: f32, rows: &[u32], grads: &[f32], d: usize) {
            let mut g = vec![0.0; self.values.len()];
            for (i, &r) in rows.iter().enumerate() {
                g[r as usize * d..(r as usize + 1) * d].copy_from_slice(&grads[i * d..(i + 1) * d]);
            }
            self.t += 1;
            let (factor, epsilon) = factor_and_epsilon(self.t);
            let moments = self.m.iter_mut().zip(self.v.iter_mut());
            for ((x, (m, v)), g) in self.values.iter_mut().zip(moments).zip(g) {
                *m = *m * BETA_1 + g * (1.0 - BETA_1);
                *v = *v * BETA_2 + g * g * (1.0 - BETA_2);
                *x -= lr * (*m * factor / (v.sqrt() + epsilon));
            }
        }
    }

    #[test]
    fn rows_read_now_and_then_follow_dense_adam() {
        let (n, d) = (40, 4);
        let mut rng = Uniform(0x9e37_79b9_7f4a_7c15);
        let start: Vec<f32> = (0..n * d).map(|_| rng.random_range(-0.5..0.5)).collect();
        let mut lazy = LazyAdamTable::new(start.clone(), d);
        let mut dense = DenseReference {
            values: start,
            m: vec![0.0; n * d],
            v: vec![0.0; n * d],
            t: 0,
        };
        let mut plain_lazy = lazy.clone();
        for step in 0..600 {
            // A few rows per step, some rarely: row r is read with probability 1 / (1 + r / 4).
            let mut ids: Vec<u32> = (0..n as u32)
                .filter(|&r| rng.random_range(0.0..1.0) < 1.0 / (1.0 + r as f32 / 4.0))
                .collect();
            if step % 50 == 0 {
                ids.retain(|&r| r % 2 == 0);
            }
            let gathered = lazy.gather(&ids).unwrap();
            let grads: Vec<f32> = gathered
                .values
                .iter()
                .map(|x| 2.0 * (x - 0.3) + rng.random_range(-0.1..0.1))
                .collect();
            lazy.step(0.01, &gathered.rows, &grads);
            dense.step(0.01, &gathered.rows, &grads, d);
            // The same rows stepped without any catch-up: what lazy Adam without it does.
            plain_lazy.current_at.iter_mut().for_each(|s| *s = u32::MAX);
            plain_lazy.step(0.01, &gathered.rows, &grads);
        }
        let (got, want) = (lazy.values(), dense.values.clone());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // A step moves a row by up to the learning rate (0.01): within a tenth of that.
        assert!(worst < 1e-3, "lazy Adam strays {worst} from dense Adam");
        // Without the catch-up the same steps end measurably elsewhere: the test can fail.
        let plain = plain_lazy.values();
        let plain_worst = plain
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(plain_worst > 0.05, "{plain_worst} vs {worst}");
    }

    #[test]
    fn a_restored_table_steps_on_as_the_table_it_was_saved_from() {
        let grads =
            |k: usize| -> Vec<f32> { (0..6).map(|j| ((j * 7 + k * 3) % 5) as f32 - 2.0).collect() };
        let mut table = LazyAdamTable::new((0..12).map(|x| x as f32 * 0.1).collect(), 3);
        table.step(0.1, &[1, 3], &grads(0));
        table.step(0.1, &[0, 1], &grads(1));
        let mut restored = LazyAdamTable::new(vec![0.0; 12], 3);
        assert!(restored
            .restore_state(&table.state_bytes())
            .unwrap()
            .is_empty());
        for k in 2..5 {
            let rows = [3, (k % 3) as u32];
            table.gather(&rows).unwrap();
            restored.gather(&rows).unwrap();
            table.step(0.1, &rows, &grads(k));
            restored.step(0.1, &rows, &grads(k));
        }
        assert_eq!(restored.values(), table.values());
        assert_eq!(restored.state_bytes(), table.state_bytes());
        let state = table.state_bytes();
        assert!(restored.restore_state(&state[..10]).is_err());
        assert!(restored.restore_state(&state[..state.len() - 1]).is_err());
    }
}
