//! The host kernels against the autodiff reference on random inputs.

use super::kernels::{fast_exp, sigmoid_in_place, tanh_in_place};
use super::*;

fn random(n: usize, seed: u64) -> Vec<f32> {
    // A small LCG: deterministic inputs without another dependency.
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: fast {x} vs reference {y} (scale {scale})"
        );
    }
}

#[test]
fn fast_exp_and_activations_match_libm() {
    for i in -2000..=2000 {
        let x = i as f32 / 40.0;
        let e = fast_exp(x);
        assert!((e - x.exp()).abs() <= 1e-6 * x.exp(), "exp({x}) = {e}");
        let mut s = [x];
        sigmoid_in_place(&mut s);
        assert!(
            (s[0] - 1.0 / (1.0 + (-x).exp())).abs() < 2e-7,
            "sigmoid({x})"
        );
        let mut t = [x];
        tanh_in_place(&mut t);
        assert!((t[0] - x.tanh()).abs() < 3e-7, "tanh({x}) = {}", t[0]);
    }
    let mut extreme = [-1e30f32, 1e30, -100.0, 100.0];
    sigmoid_in_place(&mut extreme);
    assert!(extreme[0] < 1e-30 && extreme[2] < 1e-30, "{extreme:?}");
    assert!(extreme[1] == 1.0 && extreme[3] == 1.0, "{extreme:?}");
    let mut extreme = [-1e30f32, 1e30];
    tanh_in_place(&mut extreme);
    assert_eq!(extreme, [-1.0, 1.0]);
}

fn layer(d_input: usize, d_hidden: usize, seed: u64, device: &Device) -> FusedLstm {
    let h = d_hidden;
    let tensor2 = |n: usize, m: usize, s: u64| {
        Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(random(n * m, s).iter().map(|v| v * 0.5).collect(), [n, m]),
            device,
        ))
    };
    FusedLstm {
        input_weight: tensor2(d_input, 4 * h, seed),
        hidden_weight: tensor2(h, 4 * h, seed + 1),
        input_bias: Param::from_tensor(Tensor::from_data(
            TensorData::new(random(4 * h, seed + 2), [4 * h]),
            device,
        )),
        hidden_bias: Param::from_tensor(Tensor::from_data(
            TensorData::new(random(4 * h, seed + 3), [4 * h]),
            device,
        )),
    }
}

/// Outputs and gradients of the encoder-decoder pair from the tensor-op layers differentiated
/// by Burn's autodiff (on flex), for `sum(outputs * upstream)`.
struct Reference {
    outputs: Vec<f32>,
    encoder: WeightGrads,
    decoder: WeightGrads,
    encoder_input: Vec<f32>,
    decoder_input: Vec<f32>,
}

/// Random weights and inputs of one case, in host memory.
struct Case {
    batch: usize,
    context: usize,
    horizon: usize,
    d_enc: usize,
    d_dec: usize,
    hidden: usize,
    x_enc: Vec<f32>,
    x_dec: Vec<f32>,
    upstream: Vec<f32>,
}

impl Case {
    fn new(shape: (usize, usize, usize, usize, usize, usize)) -> Self {
        let (batch, context, horizon, d_enc, d_dec, hidden) = shape;
        Case {
            batch,
            context,
            horizon,
            d_enc,
            d_dec,
            hidden,
            x_enc: random(batch * context * d_enc, 30),
            x_dec: random(batch * horizon * d_dec, 31),
            upstream: random(batch * horizon * hidden, 32),
        }
    }

    fn layers(&self, device: &Device) -> (FusedLstm, FusedLstm) {
        (
            layer(self.d_enc, self.hidden, 10, device),
            layer(self.d_dec, self.hidden, 20, device),
        )
    }

    fn tensor(&self, values: &[f32], steps: usize, width: usize, device: &Device) -> Tensor<3> {
        Tensor::<3>::from_data(
            TensorData::new(values.to_vec(), [self.batch, steps, width]),
            device,
        )
    }

    fn reference(&self) -> Reference {
        let device = Device::flex().autodiff();
        let (encoder, decoder) = self.layers(&device);
        let enc_t = self
            .tensor(&self.x_enc, self.context, self.d_enc, &device)
            .require_grad();
        let dec_t = self
            .tensor(&self.x_dec, self.horizon, self.d_dec, &device)
            .require_grad();
        let (_, state) = encoder.forward(enc_t.clone(), None);
        let (out, _) = decoder.forward(dec_t.clone(), Some(state));
        let up = self.tensor(&self.upstream, self.horizon, self.hidden, &device);
        let grads = (out.clone() * up).sum().backward();
        let grad = |t: Tensor<2>| host_values(t.grad(&grads).expect("grad")).expect("values");
        let grad1 = |t: Tensor<1>| host_values(t.grad(&grads).expect("grad")).expect("values");
        let grad3 = |t: Tensor<3>| host_values(t.grad(&grads).expect("grad")).expect("values");
        for layer in [&encoder, &decoder] {
            // The two biases are only ever summed: the same gradient.
            assert_eq!(
                grad1(layer.input_bias.val()),
                grad1(layer.hidden_bias.val())
            );
        }
        let weights = |layer: &FusedLstm| WeightGrads {
            wx: grad(layer.input_weight.val()),
            wh: grad(layer.hidden_weight.val()),
            bias: grad1(layer.input_bias.val()),
        };
        Reference {
            outputs: host_values(out).expect("outputs"),
            encoder: weights(&encoder),
            decoder: weights(&decoder),
            encoder_input: grad3(enc_t),
            decoder_input: grad3(dec_t),
        }
    }
}

fn close_grads(fast: &WeightGrads, reference: &WeightGrads, what: &str) {
    close(&fast.wx, &reference.wx, 1e-4, &format!("{what} wx"));
    close(&fast.wh, &reference.wh, 1e-4, &format!("{what} wh"));
    close(&fast.bias, &reference.bias, 1e-4, &format!("{what} bias"));
}

/// The hand-written forward and backward passes agree with the tensor-op layer
/// differentiated by Burn's autodiff, on random weights and inputs, with the encoder's
/// final state carried into the decoder, on batches that split unevenly over threads.
#[test]
fn host_pair_matches_the_autodiff_reference() {
    for shape in [(5, 7, 4, 3, 2, 6), (33, 12, 9, 11, 5, 16)] {
        let case = Case::new(shape);
        let reference = case.reference();
        let (encoder, decoder) = case.layers(&Device::flex());
        let (ew, dw) = (
            encoder.host_weights().expect("weights"),
            decoder.host_weights().expect("weights"),
        );
        let (fast_out, trace) =
            encoder_decoder_forward(&ew, &dw, &case.x_enc, &case.x_dec, case.batch, true);
        close(&fast_out, &reference.outputs, 1e-5, "outputs");
        let trace = trace.expect("trace kept");
        let fast = encoder_decoder_backward(&ew, &dw, &trace, &case.upstream);
        close_grads(&fast.encoder, &reference.encoder, "encoder");
        close_grads(&fast.decoder, &reference.decoder, "decoder");
        close(
            &fast.encoder_input,
            &reference.encoder_input,
            1e-4,
            "enc input",
        );
        close(
            &fast.decoder_input,
            &reference.decoder_input,
            1e-4,
            "dec input",
        );
    }
}

/// The GPU version (recurrence kernels on WGPU; Mesa's software Vulkan driver where there is no
/// GPU) agrees with the same autodiff reference, including a layer wider than one cube's units
/// (`4 * 70` gate columns over 256 units), a single-step decoder, and a one-row batch.
#[test]
fn cube_pair_matches_the_autodiff_reference() {
    let device = crate::device::wgpu_for_tests();
    for shape in [
        (5, 7, 4, 3, 2, 6),
        (33, 12, 9, 11, 5, 16),
        (3, 5, 1, 4, 3, 70),
        (1, 2, 3, 2, 2, 8),
    ] {
        let case = Case::new(shape);
        let reference = case.reference();
        let (encoder, decoder) = case.layers(&device);
        let (out, trace) = cube_encoder_decoder_forward(
            &encoder,
            &decoder,
            case.tensor(&case.x_enc, case.context, case.d_enc, &device),
            case.tensor(&case.x_dec, case.horizon, case.d_dec, &device),
        );
        close(
            &host_values(out).expect("outputs"),
            &reference.outputs,
            1e-5,
            "outputs",
        );
        let upstream = case.tensor(&case.upstream, case.horizon, case.hidden, &device);
        let grads = cube_encoder_decoder_backward(&encoder, &decoder, trace, upstream);
        let host = |g: CubeLayerGrads| WeightGrads {
            wx: host_values(g.input_weight).expect("values"),
            wh: host_values(g.hidden_weight).expect("values"),
            bias: host_values(g.bias).expect("values"),
        };
        close_grads(&host(grads.encoder), &reference.encoder, "encoder");
        close_grads(&host(grads.decoder), &reference.decoder, "decoder");
        let input = |t: Tensor<3>| host_values(t).expect("values");
        close(
            &input(grads.encoder_input),
            &reference.encoder_input,
            1e-4,
            "enc input",
        );
        close(
            &input(grads.decoder_input),
            &reference.decoder_input,
            1e-4,
            "dec input",
        );
    }
}

/// More rows than one axis of a launch grid holds (65,535 cubes): the kernels fold the rows into
/// two dimensions, and every row's outputs and input gradients still match the reference.
#[test]
fn cube_pair_covers_more_rows_than_one_grid_axis() {
    let device = crate::device::wgpu_for_tests();
    let case = Case::new((65_540, 2, 2, 1, 1, 2));
    let reference = case.reference();
    let (encoder, decoder) = case.layers(&device);
    let (out, trace) = cube_encoder_decoder_forward(
        &encoder,
        &decoder,
        case.tensor(&case.x_enc, case.context, case.d_enc, &device),
        case.tensor(&case.x_dec, case.horizon, case.d_dec, &device),
    );
    close(
        &host_values(out).expect("outputs"),
        &reference.outputs,
        1e-5,
        "outputs",
    );
    let upstream = case.tensor(&case.upstream, case.horizon, case.hidden, &device);
    let grads = cube_encoder_decoder_backward(&encoder, &decoder, trace, upstream);
    let input = |t: Tensor<3>| host_values(t).expect("values");
    close(
        &input(grads.encoder_input),
        &reference.encoder_input,
        1e-4,
        "enc input",
    );
    close(
        &input(grads.decoder_input),
        &reference.decoder_input,
        1e-4,
        "dec input",
    );
}
