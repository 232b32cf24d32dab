//! The one optimiser setting of every training loop: Adam with Burn's defaults (betas 0.9 and
//! 0.999, epsilon 1e-5, no weight decay; the L2 term is in the losses). The checkpoints load
//! its state back into the same setting, the fold-in of new customers steps with the same
//! constants, and the PyTorch peer benchmark sets its epsilon to match.

use burn::optim::{AdamConfig, ModuleOptimizer};

/// Adam's first-moment decay.
pub const BETA_1: f32 = 0.9;
/// Adam's second-moment decay.
pub const BETA_2: f32 = 0.999;
/// Adam's epsilon (Burn's default; PyTorch's is 1e-8).
pub const EPSILON: f32 = 1e-5;

/// The optimiser's configuration.
pub fn adam_config() -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
}

/// A fresh optimiser (no moments yet).
pub fn adam() -> ModuleOptimizer {
    adam_config().init()
}

/// One embedding table trained with lazy Adam (PyTorch's `SparseAdam`, TensorFlow's `LazyAdam`):
/// a step updates only the rows the batch read, and only their moments, so its cost grows with
/// the batch, not with the table. The bias corrections follow the table's step count, and the
/// update is Adam's above (the same constants, Burn's placement of epsilon): when every row is
/// read at every step, it is exactly the dense optimiser. Rows not read keep their value and
/// their moments (dense Adam would still move them by their decaying momentum).
#[derive(Debug, Clone)]
pub struct LazyAdamTable {
    dim: usize,
    /// Per row, its values, first moments and second moments side by side (`3 x dim`): a step
    /// touches one span of memory per row instead of three spread over three tables, which is
    /// what made the step grow with the table (cache and TLB misses).
    rows: Vec<f32>,
    steps: u64,
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

impl LazyAdamTable {
    /// A table of `values.len() / dim` rows with zero moments.
    pub fn new(values: Vec<f32>, dim: usize) -> Self {
        let dim = dim.max(1);
        let n = values.len() / dim;
        let mut rows = vec![0.0; 3 * n * dim];
        for (row, v) in rows.chunks_exact_mut(3 * dim).zip(values.chunks_exact(dim)) {
            row[..dim].copy_from_slice(v);
        }
        LazyAdamTable {
            dim,
            rows,
            steps: 0,
            slot: vec![u32::MAX; n],
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.slot.len()
    }

    /// Row `r`'s values.
    fn row_values(&self, r: usize) -> &[f32] {
        &self.rows[3 * r * self.dim..(3 * r + 1) * self.dim]
    }

    /// The whole table, row-major.
    pub fn values(&self) -> Vec<f32> {
        (0..self.rows())
            .flat_map(|r| self.row_values(r))
            .copied()
            .collect()
    }

    /// One of the moments of every row (`which` 0: first, 1: second), row-major.
    fn moments(&self, which: usize) -> impl Iterator<Item = &f32> {
        let d = self.dim;
        self.rows
            .chunks_exact(3 * d)
            .flat_map(move |row| &row[(1 + which) * d..(2 + which) * d])
    }

    /// Replaces the table's values (a resumed job's network), keeping the moments.
    pub fn set_values(&mut self, values: Vec<f32>) -> Result<(), String> {
        let d = self.dim;
        if values.len() != self.rows() * d {
            return Err(format!(
                "a table of {} values cannot take {}",
                self.rows() * d,
                values.len()
            ));
        }
        for (row, v) in self
            .rows
            .chunks_exact_mut(3 * d)
            .zip(values.chunks_exact(d))
        {
            row[..d].copy_from_slice(v);
        }
        Ok(())
    }

    /// The distinct rows of `ids` and their values. An id past the table is an error.
    pub fn gather(&mut self, ids: &[u32]) -> Result<GatheredRows, String> {
        let d = self.dim;
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
        let mut values = Vec::with_capacity(rows.len() * d);
        for &row in &rows {
            let r = row as usize;
            values.extend_from_slice(self.row_values(r));
            self.slot[r] = u32::MAX;
        }
        Ok(GatheredRows {
            rows,
            positions,
            values,
        })
    }

    /// The values of `rows` (ids inside the table, as [`LazyAdamTable::gather`] returns them),
    /// row-major.
    pub fn values_of(&self, rows: &[u32]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| self.row_values(r as usize))
            .copied()
            .collect()
    }

    /// One Adam step on `rows` with their gradients (`rows.len() x dim`, row-major); `rows` must
    /// be distinct, as [`LazyAdamTable::gather`] returns them.
    pub fn step(&mut self, learning_rate: f64, rows: &[u32], grads: &[f32]) {
        let d = self.dim;
        self.steps += 1;
        let t = self.steps.min(i32::MAX as u64) as i32;
        let correction_2 = (1.0 - BETA_2.powi(t)).sqrt();
        let factor = correction_2 / (1.0 - BETA_1.powi(t));
        let epsilon = EPSILON * correction_2;
        let lr = learning_rate as f32;
        for (i, &row) in rows.iter().enumerate() {
            let r = row as usize;
            if r >= self.rows() {
                continue;
            }
            let grad = &grads[i * d..(i + 1) * d];
            let (values, moments) = self.rows[3 * r * d..3 * (r + 1) * d].split_at_mut(d);
            let (m, v) = moments.split_at_mut(d);
            for j in 0..d {
                let g = grad[j];
                m[j] = m[j] * BETA_1 + g * (1.0 - BETA_1);
                v[j] = v[j] * BETA_2 + g * g * (1.0 - BETA_2);
                values[j] -= lr * (m[j] * factor / (v[j].sqrt() + epsilon));
            }
        }
    }

    /// The optimiser's state (step count and both moments; the values travel with the network),
    /// for a checkpoint: every row's first moments, then every row's second moments.
    pub fn state_bytes(&self) -> Vec<u8> {
        let n = self.rows() * self.dim;
        let mut out = Vec::with_capacity(16 + 8 * n);
        out.extend_from_slice(&self.steps.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
        for x in self.moments(0).chain(self.moments(1)) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Reads back what [`LazyAdamTable::state_bytes`] wrote, from the front of `bytes`; returns
    /// the rest.
    pub fn restore_state<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], String> {
        let word = |b: &[u8], at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        let (Some(steps), Some(len)) = (word(bytes, 0), word(bytes, 8)) else {
            return Err("the sparse optimiser state is cut short".into());
        };
        let (d, n) = (self.dim, self.rows() * self.dim);
        if len as usize != n {
            return Err(format!(
                "the sparse optimiser state is for a table of {len} values, not {n}"
            ));
        }
        let body = bytes
            .get(16..16 + 8 * n)
            .ok_or("the sparse optimiser state is cut short")?;
        let floats = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for (i, x) in floats.enumerate() {
            // Value i of moment `which` is column i % d of row i / d.
            let (which, i) = (i / n, i % n);
            self.rows[3 * (i / d) * d + (1 + which) * d + i % d] = x;
        }
        self.steps = steps;
        Ok(&bytes[16 + 8 * n..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rows_not_in_the_batch_keep_their_values_and_moments() {
        let mut table = LazyAdamTable::new(vec![1.0; 6], 2);
        table.step(0.1, &[1], &[0.5, -0.5]);
        assert_eq!(&table.values()[0..2], &[1.0, 1.0]);
        assert_eq!(&table.values()[4..6], &[1.0, 1.0]);
        // Adam's first step moves by the learning rate against the gradient's sign.
        assert!(
            (table.values()[2] - 0.9).abs() < 1e-4,
            "{:?}",
            table.values()
        );
        assert!(
            (table.values()[3] - 1.1).abs() < 1e-4,
            "{:?}",
            table.values()
        );
        let state = table.state_bytes();
        let mut restored = LazyAdamTable::new(vec![0.0; 6], 2);
        assert!(restored.restore_state(&state).unwrap().is_empty());
        assert_eq!(restored.state_bytes(), state);
        assert!(restored.restore_state(&state[..10]).is_err());
    }

    #[test]
    fn a_restored_table_steps_on_as_the_table_it_was_saved_from() {
        let grads =
            |k: usize| -> Vec<f32> { (0..6).map(|j| ((j * 7 + k * 3) % 5) as f32 - 2.0).collect() };
        let mut table = LazyAdamTable::new((0..12).map(|x| x as f32 * 0.1).collect(), 3);
        table.step(0.1, &[1, 3], &grads(0));
        table.step(0.1, &[0, 1], &grads(1));
        let mut restored = LazyAdamTable::new(vec![0.0; 12], 3);
        restored.set_values(table.values()).unwrap();
        restored.restore_state(&table.state_bytes()).unwrap();
        for k in 2..5 {
            table.step(0.1, &[3, 0], &grads(k));
            restored.step(0.1, &[3, 0], &grads(k));
        }
        assert_eq!(restored.values(), table.values());
        assert_eq!(restored.state_bytes(), table.state_bytes());
        // Rows 1 and 3 had moments when saved; a table restored without them steps elsewhere.
        let mut fresh = LazyAdamTable::new(vec![0.0; 12], 3);
        fresh.set_values(restored.values()).unwrap();
        fresh.step(0.1, &[1], &grads(9));
        restored.step(0.1, &[1], &grads(9));
        assert_ne!(fresh.values(), restored.values());
    }
}
