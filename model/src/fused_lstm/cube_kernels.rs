//! The LSTM recurrence as two CubeCL kernels, forward and backward, each running every timestep
//! of a sequence in one launch.
//!
//! One cube per row of the batch (rows are independent); its units share the row's state in
//! shared memory and stride over the `4 * hidden` gate columns, then over the `hidden` units,
//! with a barrier between the two phases of a step. The input side of the gates (`x W + b` of
//! every step at once) and the weight gradients are matrix products outside the kernels, so a
//! layer costs two matrix products and one recurrence launch each way instead of a dozen small
//! kernels per step.
//!
//! Layouts (contiguous, row-major): `projected`, `gates`, `d_pre` `[B, T, 4H]` with the gate
//! blocks input, forget, output, candidate (as in [`FusedLstm`](super::FusedLstm));
//! `cells`, `hiddens`, `d_hiddens` `[B, T, H]`; states `[B, H]`; `hidden_weight` `[H, 4H]`.

use cubecl::prelude::*;

/// `1 / (1 + e^-x)`; saturates to 0 or 1 without NaN (`e^-x` may overflow to infinity).
#[cube]
fn sigmoid<F: Float>(x: F) -> F {
    F::new(1.0_f32) / (F::new(1.0_f32) + (F::new(0.0_f32) - x).exp())
}

/// `tanh` from `exp`: `1 - 2 / (e^{2x} + 1)` saturates to ±1 where some drivers' `tanh` returns
/// NaN for large arguments.
#[cube]
fn tanh<F: Float>(x: F) -> F {
    F::new(1.0_f32) - F::new(2.0_f32) / ((F::new(2.0_f32) * x).exp() + F::new(1.0_f32))
}

/// Forward pass over all `T` steps of row `CUBE_POS`: writes every step's gate activations,
/// cell state and hidden state (what the backward pass needs).
#[cube(launch)]
pub fn lstm_forward_kernel<F: Float>(
    projected: &Tensor<F>,
    hidden_weight: &Tensor<F>,
    initial_hidden: &Tensor<F>,
    initial_cell: &Tensor<F>,
    gates: &mut Tensor<F>,
    cells: &mut Tensor<F>,
    hiddens: &mut Tensor<F>,
    #[comptime] hidden: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= projected.shape(0) {
        // The spare cubes of a grid folded into two dimensions (more rows than one axis holds).
        terminate!();
    }
    let units = CUBE_DIM_X as usize;
    let width = 4 * hidden;
    let steps = projected.shape(1);

    let mut h_prev = Shared::new_slice(hidden);
    let mut c_prev = Shared::new_slice(hidden);
    let mut gate = Shared::new_slice(4 * hidden);

    let mut u = UNIT_POS_X as usize;
    while u < hidden {
        h_prev[u] = initial_hidden[row * hidden + u];
        c_prev[u] = initial_cell[row * hidden + u];
        u += units;
    }
    sync_cube();

    for t in 0..steps {
        let step = row * steps + t;
        // Phase 1: each gate column from the input side and the previous hidden state.
        let mut j = UNIT_POS_X as usize;
        while j < width {
            let mut acc = projected[step * width + j];
            for k in 0..hidden {
                acc += h_prev[k] * hidden_weight[k * width + j];
            }
            let value = if j < 3 * hidden {
                sigmoid::<F>(acc)
            } else {
                tanh::<F>(acc)
            };
            gate[j] = value;
            gates[step * width + j] = value;
            j += units;
        }
        sync_cube();
        // Phase 2: the new cell and hidden state of each unit.
        let mut u = UNIT_POS_X as usize;
        while u < hidden {
            let c = gate[hidden + u] * c_prev[u] + gate[u] * gate[3 * hidden + u];
            let h = gate[2 * hidden + u] * tanh::<F>(c);
            c_prev[u] = c;
            h_prev[u] = h;
            cells[step * hidden + u] = c;
            hiddens[step * hidden + u] = h;
            u += units;
        }
        sync_cube();
    }
}

/// Backpropagation through time over all `T` steps of row `CUBE_POS`, last step first.
///
/// Takes the gradient of every step's hidden output (`d_hiddens`) and of the final state, and
/// writes the gradient of every step's gate pre-activations (`d_pre`: the weight and input
/// gradients are matrix products of it) and of the initial state.
#[cube(launch)]
pub fn lstm_backward_kernel<F: Float>(
    gates: &Tensor<F>,
    cells: &Tensor<F>,
    initial_cell: &Tensor<F>,
    d_hiddens: &Tensor<F>,
    d_final_hidden: &Tensor<F>,
    d_final_cell: &Tensor<F>,
    hidden_weight: &Tensor<F>,
    d_pre: &mut Tensor<F>,
    d_initial_hidden: &mut Tensor<F>,
    d_initial_cell: &mut Tensor<F>,
    #[comptime] hidden: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= gates.shape(0) {
        terminate!();
    }
    let units = CUBE_DIM_X as usize;
    let width = 4 * hidden;
    let steps = gates.shape(1);
    let one = F::new(1.0_f32);

    // Gradients reaching step t from step t + 1 through the hidden and the cell state.
    let mut dh_next = Shared::new_slice(hidden);
    let mut dc_next = Shared::new_slice(hidden);
    let mut d_gate = Shared::new_slice(4 * hidden);

    let mut u = UNIT_POS_X as usize;
    while u < hidden {
        dh_next[u] = d_final_hidden[row * hidden + u];
        dc_next[u] = d_final_cell[row * hidden + u];
        u += units;
    }
    sync_cube();

    for r in 0..steps {
        let t = steps - 1 - r;
        let step = row * steps + t;
        // Phase 1: each unit's four gate gradients, and the cell gradient carried back.
        let mut u = UNIT_POS_X as usize;
        while u < hidden {
            let i = gates[step * width + u];
            let f = gates[step * width + hidden + u];
            let o = gates[step * width + 2 * hidden + u];
            let g = gates[step * width + 3 * hidden + u];
            let c = cells[step * hidden + u];
            let c_before = if t > 0 {
                cells[(step - 1) * hidden + u]
            } else {
                initial_cell[row * hidden + u]
            };
            let tc = tanh::<F>(c);
            let dh = d_hiddens[step * hidden + u] + dh_next[u];
            let dc = dc_next[u] + dh * o * (one - tc * tc);
            let di = dc * g * i * (one - i);
            let df = dc * c_before * f * (one - f);
            let d_o = dh * tc * o * (one - o);
            let dg = dc * i * (one - g * g);
            d_gate[u] = di;
            d_gate[hidden + u] = df;
            d_gate[2 * hidden + u] = d_o;
            d_gate[3 * hidden + u] = dg;
            d_pre[step * width + u] = di;
            d_pre[step * width + hidden + u] = df;
            d_pre[step * width + 2 * hidden + u] = d_o;
            d_pre[step * width + 3 * hidden + u] = dg;
            dc_next[u] = dc * f;
            u += units;
        }
        sync_cube();
        // Phase 2: the hidden state's gradient, `d_gate W_h^T`, one unit per row of `W_h`.
        let mut k = UNIT_POS_X as usize;
        while k < hidden {
            let mut acc = F::new(0.0_f32);
            for j in 0..width {
                acc += d_gate[j] * hidden_weight[k * width + j];
            }
            dh_next[k] = acc;
            k += units;
        }
        sync_cube();
    }

    let mut u = UNIT_POS_X as usize;
    while u < hidden {
        d_initial_hidden[row * hidden + u] = dh_next[u];
        d_initial_cell[row * hidden + u] = dc_next[u];
        u += units;
    }
}
