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

/// The hand-written forward and backward passes agree with the tensor-op layer
/// differentiated by Burn's autodiff, on random weights and inputs, with the encoder's
/// final state carried into the decoder, on batches that split unevenly over threads.
#[test]
fn host_pair_matches_the_autodiff_reference() {
    let device = Device::flex().autodiff();
    for (batch, context, horizon, d_enc, d_dec, h) in [(5, 7, 4, 3, 2, 6), (33, 12, 9, 11, 5, 16)] {
        let encoder = layer(d_enc, h, 10, &device);
        let decoder = layer(d_dec, h, 20, &device);
        let x_enc = random(batch * context * d_enc, 30);
        let x_dec = random(batch * horizon * d_dec, 31);
        let upstream = random(batch * horizon * h, 32);
        let enc_t = Tensor::<3>::from_data(
            TensorData::new(x_enc.clone(), [batch, context, d_enc]),
            &device,
        )
        .require_grad();
        let dec_t = Tensor::<3>::from_data(
            TensorData::new(x_dec.clone(), [batch, horizon, d_dec]),
            &device,
        )
        .require_grad();
        let (_, state) = encoder.forward(enc_t.clone(), None);
        let (out, _) = decoder.forward(dec_t.clone(), Some(state));
        let up = Tensor::<3>::from_data(
            TensorData::new(upstream.clone(), [batch, horizon, h]),
            &device,
        );
        let grads = (out.clone() * up).sum().backward();
        let reference_out = host_values(out).expect("outputs");

        let (ew, dw) = (
            encoder.host_weights().expect("weights"),
            decoder.host_weights().expect("weights"),
        );
        let (fast_out, trace) = encoder_decoder_forward(&ew, &dw, &x_enc, &x_dec, batch, true);
        close(&fast_out, &reference_out, 1e-5, "outputs");
        let trace = trace.expect("trace kept");
        let fast = encoder_decoder_backward(&ew, &dw, &trace, &upstream);
        let grad = |t: Tensor<2>| host_values(t.grad(&grads).expect("grad")).expect("values");
        let grad1 = |t: Tensor<1>| host_values(t.grad(&grads).expect("grad")).expect("values");
        close(
            &fast.encoder.wx,
            &grad(encoder.input_weight.val()),
            1e-4,
            "enc wx",
        );
        close(
            &fast.encoder.wh,
            &grad(encoder.hidden_weight.val()),
            1e-4,
            "enc wh",
        );
        for bias in [&encoder.input_bias, &encoder.hidden_bias] {
            close(&fast.encoder.bias, &grad1(bias.val()), 1e-4, "enc b");
        }
        close(
            &fast.decoder.wx,
            &grad(decoder.input_weight.val()),
            1e-4,
            "dec wx",
        );
        close(
            &fast.decoder.wh,
            &grad(decoder.hidden_weight.val()),
            1e-4,
            "dec wh",
        );
        for bias in [&decoder.input_bias, &decoder.hidden_bias] {
            close(&fast.decoder.bias, &grad1(bias.val()), 1e-4, "dec b");
        }
        let input_grad = |t: Tensor<3>| host_values(t.grad(&grads).expect("grad")).expect("values");
        close(&fast.encoder_input, &input_grad(enc_t), 1e-4, "enc input");
        close(&fast.decoder_input, &input_grad(dec_t), 1e-4, "dec input");
    }
}
