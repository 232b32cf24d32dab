//! The encoder-decoder pair on the CubeCL backends (WGPU: Vulkan, Metal, DirectX): the same
//! function as the host kernels, with the recurrence run by the kernels of
//! [`cube_kernels`](super::cube_kernels), one launch per layer each way, and everything else
//! (input projections, weight and input gradients) as a few large matrix products.
//!
//! The kernels reach Burn through a backend extension ([`LstmRecurrenceOps`]): implemented for
//! `CubeBackend`, and made lazy under `Fusion` by the macro, so they queue in the same stream as
//! the tensor ops around them. Every tensor here is a plain (non-autodiff) tensor on a CubeCL
//! device; the forecaster registers the gradients itself, as it does for the host kernels.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::prelude::*;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::{CubeCount, CubeDim};

use super::cube_kernels::{lstm_backward_kernel, lstm_forward_kernel};
use super::FusedLstm;

/// The recurrence kernels as backend operations.
#[backend_extension(Cube, Fusion)]
pub trait LstmRecurrenceOps: Backend {
    /// `(gates, cells, hiddens)` of every step, for the input side `projected` `[B, T, 4H]`, the
    /// hidden weight `[H, 4H]` and the initial state `[B, H]`.
    #[fusion(meta = forward_specs)]
    fn lstm_recurrence(
        projected: FloatTensor<Self>,
        hidden_weight: FloatTensor<Self>,
        initial_hidden: FloatTensor<Self>,
        initial_cell: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `(d_pre, d_initial_hidden, d_initial_cell)`: the gradient of every step's gate
    /// pre-activations and of the initial state.
    #[fusion(meta = backward_specs)]
    #[allow(clippy::too_many_arguments)]
    fn lstm_recurrence_backward(
        gates: FloatTensor<Self>,
        cells: FloatTensor<Self>,
        initial_cell: FloatTensor<Self>,
        d_hiddens: FloatTensor<Self>,
        d_final_hidden: FloatTensor<Self>,
        d_final_cell: FloatTensor<Self>,
        hidden_weight: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn forward_specs(
    projected: &TensorSpec,
    _hidden_weight: &TensorSpec,
    initial_hidden: &TensorSpec,
    _initial_cell: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let [b, t, _] = projected.shape.dims::<3>();
    let h = initial_hidden.shape.dims::<2>()[1];
    let states = TensorSpec::new([b, t, h].into(), projected.dtype);
    (projected.clone(), states.clone(), states)
}

fn backward_specs(
    gates: &TensorSpec,
    _cells: &TensorSpec,
    initial_cell: &TensorSpec,
    _d_hiddens: &TensorSpec,
    _d_final_hidden: &TensorSpec,
    _d_final_cell: &TensorSpec,
    _hidden_weight: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (gates.clone(), initial_cell.clone(), initial_cell.clone())
}

/// One cube per row: along X up to the 65,535 cubes every adapter allows on an axis, the rest
/// folded into Y (the kernels stop the spare cubes of the last line).
fn cube_count(rows: usize) -> CubeCount {
    let x = rows.clamp(1, 65_535);
    CubeCount::Static(x as u32, rows.div_ceil(x) as u32, 1)
}

/// Units per cube: enough for every gate column of a small layer, at most 256 (a bound every
/// WGPU adapter supports); units stride over the columns beyond.
fn cube_dim(hidden: usize, client_max: u32) -> CubeDim {
    CubeDim::new_1d(((4 * hidden) as u32).min(256).min(client_max.max(1)))
}

impl LstmRecurrenceOps for CubeBackend {
    fn lstm_recurrence(
        projected: CubeTensor,
        hidden_weight: CubeTensor,
        initial_hidden: CubeTensor,
        initial_cell: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [projected, hidden_weight, initial_hidden, initial_cell] =
            [projected, hidden_weight, initial_hidden, initial_cell].map(into_contiguous);
        let [b, t, _] = projected.meta.shape().dims::<3>();
        let h = initial_hidden.meta.shape().dims::<2>()[1];
        let (client, device, dtype) = (
            projected.client.clone(),
            projected.device.clone(),
            projected.dtype,
        );
        let empty = |shape: [usize; 3]| {
            empty_device_dtype(client.clone(), device.clone(), shape.into(), dtype)
        };
        let (gates, cells, hiddens) = (empty([b, t, 4 * h]), empty([b, t, h]), empty([b, t, h]));
        let max_units = client.properties().hardware.max_cube_dim.0;
        lstm_forward_kernel::launch(
            &client,
            cube_count(b),
            cube_dim(h, max_units),
            projected.into_tensor_arg(),
            hidden_weight.into_tensor_arg(),
            initial_hidden.into_tensor_arg(),
            initial_cell.into_tensor_arg(),
            gates.clone().into_tensor_arg(),
            cells.clone().into_tensor_arg(),
            hiddens.clone().into_tensor_arg(),
            h,
            dtype_to_storage_type(dtype),
        );
        (gates, cells, hiddens)
    }

    fn lstm_recurrence_backward(
        gates: CubeTensor,
        cells: CubeTensor,
        initial_cell: CubeTensor,
        d_hiddens: CubeTensor,
        d_final_hidden: CubeTensor,
        d_final_cell: CubeTensor,
        hidden_weight: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [gates, cells, initial_cell, d_hiddens, d_final_hidden, d_final_cell, hidden_weight] =
            [
                gates,
                cells,
                initial_cell,
                d_hiddens,
                d_final_hidden,
                d_final_cell,
                hidden_weight,
            ]
            .map(into_contiguous);
        let [b, t, width] = gates.meta.shape().dims::<3>();
        let h = width / 4;
        let (client, device, dtype) = (gates.client.clone(), gates.device.clone(), gates.dtype);
        let d_pre = empty_device_dtype(client.clone(), device.clone(), [b, t, width].into(), dtype);
        let d_initial_hidden =
            empty_device_dtype(client.clone(), device.clone(), [b, h].into(), dtype);
        let d_initial_cell = empty_device_dtype(client.clone(), device, [b, h].into(), dtype);
        let max_units = client.properties().hardware.max_cube_dim.0;
        lstm_backward_kernel::launch(
            &client,
            cube_count(b),
            cube_dim(h, max_units),
            gates.into_tensor_arg(),
            cells.into_tensor_arg(),
            initial_cell.into_tensor_arg(),
            d_hiddens.into_tensor_arg(),
            d_final_hidden.into_tensor_arg(),
            d_final_cell.into_tensor_arg(),
            hidden_weight.into_tensor_arg(),
            d_pre.clone().into_tensor_arg(),
            d_initial_hidden.clone().into_tensor_arg(),
            d_initial_cell.clone().into_tensor_arg(),
            h,
            dtype_to_storage_type(dtype),
        );
        (d_pre, d_initial_hidden, d_initial_cell)
    }
}

/// One layer's forward pass on a CubeCL device, kept for its backward pass.
#[derive(Debug, Clone)]
pub struct CubeLayerTrace {
    /// `[B, T, I]` the layer's inputs.
    input: Tensor<3>,
    /// `[B, T, 4H]` gate activations.
    gates: Tensor<3>,
    /// `[B, T, H]` cell states.
    cells: Tensor<3>,
    /// `[B, T, H]` hidden states (the layer's outputs).
    hiddens: Tensor<3>,
    /// `[B, H]` each.
    initial_hidden: Tensor<2>,
    initial_cell: Tensor<2>,
}

/// Gradients of one layer's weights (the two biases share one: they are only ever summed).
#[derive(Debug, Clone)]
pub struct CubeLayerGrads {
    pub input_weight: Tensor<2>,
    pub hidden_weight: Tensor<2>,
    pub bias: Tensor<1>,
}

/// Gradients of the encoder-decoder pair: weights, and the inputs of both layers.
#[derive(Debug, Clone)]
pub struct CubeEncoderDecoderGrads {
    pub encoder: CubeLayerGrads,
    pub decoder: CubeLayerGrads,
    /// `[B, context, encoder inputs]`, `[B, horizon, decoder inputs]`.
    pub encoder_input: Tensor<3>,
    pub decoder_input: Tensor<3>,
}

/// What [`cube_encoder_decoder_backward`] needs from the forward pass.
#[derive(Debug, Clone)]
pub struct CubeEncoderDecoderTrace {
    encoder: CubeLayerTrace,
    decoder: CubeLayerTrace,
}

/// The layer's weights as plain tensors: `(input weight, hidden weight, summed bias)`.
fn plain_weights(layer: &FusedLstm) -> (Tensor<2>, Tensor<2>, Tensor<1>) {
    (
        layer.input_weight.val().inner(),
        layer.hidden_weight.val().inner(),
        layer.input_bias.val().inner() + layer.hidden_bias.val().inner(),
    )
}

fn layer_forward(
    layer: &FusedLstm,
    input: Tensor<3>,
    initial_hidden: Tensor<2>,
    initial_cell: Tensor<2>,
) -> CubeLayerTrace {
    let [b, t, i] = input.dims();
    let h = layer.d_hidden();
    let (input_weight, hidden_weight, bias) = plain_weights(layer);
    let projected = (input.clone().reshape([b * t, i]).matmul(input_weight)
        + bias.unsqueeze_dim::<2>(0))
    .reshape([b, t, 4 * h]);
    let (gates, cells, hiddens) = Dispatch::lstm_recurrence(
        projected.into_dispatch(),
        hidden_weight.into_dispatch(),
        initial_hidden.clone().into_dispatch(),
        initial_cell.clone().into_dispatch(),
    );
    CubeLayerTrace {
        input,
        gates: Tensor::from_dispatch(gates),
        cells: Tensor::from_dispatch(cells),
        hiddens: Tensor::from_dispatch(hiddens),
        initial_hidden,
        initial_cell,
    }
}

/// The state `[B, H]` after the last step of `[B, T, H]` states.
fn last_step(states: &Tensor<3>) -> Tensor<2> {
    let [b, t, h] = states.dims();
    states.clone().narrow(1, t - 1, 1).reshape([b, h])
}

/// Backward pass of one layer: its weight gradients, its input gradient and the gradient of
/// its initial state `(hidden, cell)`.
fn layer_backward(
    layer: &FusedLstm,
    trace: CubeLayerTrace,
    d_hiddens: Tensor<3>,
    d_final_hidden: Tensor<2>,
    d_final_cell: Tensor<2>,
) -> (CubeLayerGrads, Tensor<3>, Tensor<2>, Tensor<2>) {
    let [b, t, i] = trace.input.dims();
    let h = layer.d_hidden();
    let (input_weight, hidden_weight, _) = plain_weights(layer);
    let (d_pre, d_initial_hidden, d_initial_cell) = Dispatch::lstm_recurrence_backward(
        trace.gates.into_dispatch(),
        trace.cells.into_dispatch(),
        trace.initial_cell.into_dispatch(),
        d_hiddens.into_dispatch(),
        d_final_hidden.into_dispatch(),
        d_final_cell.into_dispatch(),
        hidden_weight.into_dispatch(),
    );
    let d_pre = Tensor::<3>::from_dispatch(d_pre).reshape([b * t, 4 * h]);
    // The hidden state each step read: the initial one, then every step's but the last.
    let previous = if t > 1 {
        Tensor::cat(
            vec![
                trace.initial_hidden.unsqueeze_dim::<3>(1),
                trace.hiddens.narrow(1, 0, t - 1),
            ],
            1,
        )
    } else {
        trace.initial_hidden.unsqueeze_dim::<3>(1)
    };
    let inputs = trace.input.reshape([b * t, i]);
    let grads = CubeLayerGrads {
        input_weight: inputs.transpose().matmul(d_pre.clone()),
        hidden_weight: previous
            .reshape([b * t, h])
            .transpose()
            .matmul(d_pre.clone()),
        bias: d_pre.clone().sum_dim(0).reshape([4 * h]),
    };
    let d_input = d_pre.matmul(input_weight.transpose()).reshape([b, t, i]);
    (
        grads,
        d_input,
        Tensor::from_dispatch(d_initial_hidden),
        Tensor::from_dispatch(d_initial_cell),
    )
}

/// The decoder's outputs `[B, horizon, H]` for encoder inputs `[B, context, I_enc]` and decoder
/// inputs `[B, horizon, I_dec]` (plain tensors on a CubeCL device; the encoder starts from zeros,
/// the decoder from the encoder's final state), and the trace for the backward pass.
pub fn cube_encoder_decoder_forward(
    encoder: &FusedLstm,
    decoder: &FusedLstm,
    encoder_input: Tensor<3>,
    decoder_input: Tensor<3>,
) -> (Tensor<3>, CubeEncoderDecoderTrace) {
    let [b, _, _] = encoder_input.dims();
    let device = encoder_input.device();
    let zeros = Tensor::<2>::zeros([b, encoder.d_hidden()], &device);
    let encoder = layer_forward(encoder, encoder_input, zeros.clone(), zeros);
    let decoder = layer_forward(
        decoder,
        decoder_input,
        last_step(&encoder.hiddens),
        last_step(&encoder.cells),
    );
    (
        decoder.hiddens.clone(),
        CubeEncoderDecoderTrace { encoder, decoder },
    )
}

/// Backpropagation through both layers from the gradient of the decoder's outputs.
pub fn cube_encoder_decoder_backward(
    encoder: &FusedLstm,
    decoder: &FusedLstm,
    trace: CubeEncoderDecoderTrace,
    d_outputs: Tensor<3>,
) -> CubeEncoderDecoderGrads {
    let [b, _, h_dec] = d_outputs.dims();
    let device = d_outputs.device();
    let no_state_grad = Tensor::<2>::zeros([b, h_dec], &device);
    let (decoder_grads, decoder_input, d_hidden, d_cell) = layer_backward(
        decoder,
        trace.decoder,
        d_outputs,
        no_state_grad.clone(),
        no_state_grad,
    );
    // The encoder's outputs feed nothing but its final state.
    let [_, context, h_enc] = trace.encoder.hiddens.dims();
    let no_output_grad = Tensor::<3>::zeros([b, context, h_enc], &device);
    let (encoder_grads, encoder_input, _, _) =
        layer_backward(encoder, trace.encoder, no_output_grad, d_hidden, d_cell);
    CubeEncoderDecoderGrads {
        encoder: encoder_grads,
        decoder: decoder_grads,
        encoder_input,
        decoder_input,
    }
}
