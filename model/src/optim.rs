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
    values: Vec<f32>,
    moment_1: Vec<f32>,
    moment_2: Vec<f32>,
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
        let n = values.len() / dim.max(1);
        LazyAdamTable {
            dim,
            moment_1: vec![0.0; values.len()],
            moment_2: vec![0.0; values.len()],
            values,
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

    /// The whole table, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Replaces the table's values (a resumed job's network), keeping the moments.
    pub fn set_values(&mut self, values: Vec<f32>) -> Result<(), String> {
        if values.len() != self.values.len() {
            return Err(format!(
                "a table of {} values cannot take {}",
                self.values.len(),
                values.len()
            ));
        }
        self.values = values;
        Ok(())
    }

    /// The distinct rows of `ids` and their values. An id past the table is an error.
    pub fn gather(&mut self, ids: &[u32]) -> Result<GatheredRows, String> {
        let d = self.dim;
        let mut rows = Vec::new();
        let mut positions = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(slot) = self.slot.get_mut(id as usize) else {
                return Err(format!("row {id} of a table of {} rows", self.rows()));
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
            values.extend_from_slice(&self.values[r * d..(r + 1) * d]);
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
        let d = self.dim;
        rows.iter()
            .flat_map(|&r| &self.values[r as usize * d..(r as usize + 1) * d])
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
            let span = r * d..(r + 1) * d;
            let values = &mut self.values[span.clone()];
            let m = &mut self.moment_1[span.clone()];
            let v = &mut self.moment_2[span];
            for j in 0..d {
                let g = grad[j];
                m[j] = m[j] * BETA_1 + g * (1.0 - BETA_1);
                v[j] = v[j] * BETA_2 + g * g * (1.0 - BETA_2);
                values[j] -= lr * (m[j] * factor / (v[j].sqrt() + epsilon));
            }
        }
    }

    /// The optimiser's state (step count and both moments; the values travel with the network),
    /// for a checkpoint.
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * self.moment_1.len());
        out.extend_from_slice(&self.steps.to_le_bytes());
        out.extend_from_slice(&(self.moment_1.len() as u64).to_le_bytes());
        for x in self.moment_1.iter().chain(&self.moment_2) {
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
        if len as usize != self.moment_1.len() {
            return Err(format!(
                "the sparse optimiser state is for a table of {len} values, not {}",
                self.moment_1.len()
            ));
        }
        let n = len as usize;
        let body = bytes
            .get(16..16 + 8 * n)
            .ok_or("the sparse optimiser state is cut short")?;
        let floats = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for (i, x) in floats.enumerate() {
            if i < n {
                self.moment_1[i] = x;
            } else {
                self.moment_2[i - n] = x;
            }
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
}
