//! The demand forecaster: one global LSTM encoder-decoder over all series.
//!
//! The encoder reads the context window (scaled past sales, covariates, calendar); the decoder
//! runs over the horizon fed the known-future covariates and an anchor forecast (the series'
//! exponential smoothing), starting from the encoder's state. Both are [`FusedLstm`] layers: on
//! the CPU backends training and inference run their hand-written host kernels
//! ([`DemandForecaster::loss_and_gradients`]), on the GPU backends their recurrence kernels
//! (one launch per layer each way), elsewhere their tensor ops. Each series key (store,
//! product...) and static attribute (category...) has an embedding appended to every step. The head does not forecast sales from
//! scratch: it predicts a correction to the anchor for the median, and positive gaps to the
//! neighbouring quantiles, so quantiles never cross and a model that has learnt nothing falls
//! back to the anchor. Forecasts are clamped at zero, so intermittent series never get negative
//! demand; training uses the unclamped values ([`DemandForecaster::forward_raw`]), because a
//! clamp has no gradient below zero and a median pushed there once would stay at zero.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::softplus;

use crate::device::{memory_is_host, runs_cube_kernels};
use crate::fused_lstm::{
    cube_encoder_decoder_backward, cube_encoder_decoder_forward, encoder_decoder_backward,
    encoder_decoder_forward, FusedLstm, FusedLstmConfig,
};
use crate::host::host_values;

/// Shapes and hyperparameters of a [`DemandForecaster`]; saved in the bundle.
#[derive(Config, Debug)]
pub struct ForecasterConfig {
    pub encoder_features: usize,
    pub decoder_features: usize,
    /// Number of values of each series key (stores, products...), then of each static
    /// attribute (categories...).
    pub key_cardinalities: Vec<usize>,
    pub context: usize,
    pub horizon: usize,
    /// Sorted quantile levels; one of them is 0.5.
    pub quantiles: Vec<f64>,
    #[config(default = 64)]
    pub hidden_size: usize,
    #[config(default = 8)]
    pub key_embedding_dim: usize,
    /// Networks in the [`ForecasterEnsemble`] (trained from different seeds).
    #[config(default = 1)]
    pub ensemble: usize,
}

/// The model. Inputs are built by `shopcast_datasets::windows`.
#[derive(Module, Debug)]
pub struct DemandForecaster {
    key_embeddings: Vec<Embedding>,
    encoder: FusedLstm,
    decoder: FusedLstm,
    head: Linear,
    median_index: usize,
}

/// One batch of windows as tensors.
#[derive(Debug, Clone)]
pub struct ForecastInput {
    /// `[B, context, encoder_features]`
    pub encoder: Tensor<3>,
    /// `[B, horizon, decoder_features]`
    pub decoder: Tensor<3>,
    /// `[B, n_keys + n_static_attributes]`
    pub keys: Tensor<2, Int>,
    /// `[B, horizon]` scaled anchor forecast the median corrects.
    pub baseline: Tensor<2>,
}

impl ForecastInput {
    /// Builds the tensors from flat row-major arrays (see `shopcast_datasets::windows::WindowBatch`).
    #[allow(clippy::too_many_arguments)]
    pub fn from_arrays(
        encoder: Vec<f32>,
        decoder: Vec<f32>,
        keys: Vec<i64>,
        baseline: Vec<f32>,
        batch: usize,
        context: usize,
        horizon: usize,
        device: &Device,
    ) -> Self {
        let enc_f = encoder.len() / (batch * context).max(1);
        let dec_f = decoder.len() / (batch * horizon).max(1);
        let n_keys = keys.len() / batch.max(1);
        ForecastInput {
            encoder: Tensor::from_data(TensorData::new(encoder, [batch, context, enc_f]), device),
            decoder: Tensor::from_data(TensorData::new(decoder, [batch, horizon, dec_f]), device),
            keys: Tensor::from_data(TensorData::new(keys, [batch, n_keys]), device),
            baseline: Tensor::from_data(TensorData::new(baseline, [batch, horizon]), device),
        }
    }
}

impl ForecasterConfig {
    /// Checks a config read back from a bundle before a model is built from it: the message
    /// names the field.
    pub fn check(&self) -> Result<(), String> {
        for (field, v) in [
            ("context", self.context),
            ("horizon", self.horizon),
            ("hidden_size", self.hidden_size),
            ("key_embedding_dim", self.key_embedding_dim),
            ("ensemble", self.ensemble),
        ] {
            if v == 0 {
                return Err(format!("{field}: must be at least 1, got 0"));
            }
        }
        let levels_ok = !self.quantiles.is_empty()
            && self
                .quantiles
                .iter()
                .all(|q| q.is_finite() && *q > 0.0 && *q < 1.0)
            && self.quantiles.windows(2).all(|w| w[0] < w[1])
            && self.quantiles.iter().any(|q| (q - 0.5).abs() < 1e-9);
        if !levels_ok {
            return Err(format!(
                "quantiles: expected increasing levels in (0, 1) including 0.5, got {:?}",
                self.quantiles
            ));
        }
        Ok(())
    }

    /// Index of the 0.5 quantile.
    pub fn median_index(&self) -> usize {
        self.quantiles
            .iter()
            .position(|q| (q - 0.5).abs() < 1e-9)
            .unwrap_or(self.quantiles.len() / 2)
    }

    /// A freshly initialised model (seed the device first for reproducibility).
    pub fn init(&self, device: &Device) -> DemandForecaster {
        let static_dim = self.key_cardinalities.len() * self.key_embedding_dim;
        let key_embeddings = self
            .key_cardinalities
            .iter()
            .map(|&n| {
                EmbeddingConfig::new(n.max(1), self.key_embedding_dim)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.1,
                    })
                    .init(device)
            })
            .collect();
        // A zero-initialised head starts the model exactly at the seasonal baseline.
        let head = LinearConfig::new(self.hidden_size, self.quantiles.len())
            .with_initializer(Initializer::Zeros)
            .init(device);
        DemandForecaster {
            key_embeddings,
            encoder: FusedLstmConfig::new(self.encoder_features + static_dim, self.hidden_size)
                .init(device),
            decoder: FusedLstmConfig::new(self.decoder_features + static_dim, self.hidden_size)
                .init(device),
            head,
            median_index: self.median_index(),
        }
    }
}

/// The saved forecaster: `ensemble` networks whose quantile forecasts are averaged (an average
/// of non-crossing, non-negative quantiles is still both). One network is an ensemble of one.
#[derive(Module, Debug)]
pub struct ForecasterEnsemble {
    pub members: Vec<DemandForecaster>,
}

impl ForecasterConfig {
    /// An ensemble of freshly initialised networks, the shape a saved one loads into.
    pub fn init_ensemble(&self, device: &Device) -> ForecasterEnsemble {
        ForecasterEnsemble {
            members: (0..self.ensemble.max(1))
                .map(|_| self.init(device))
                .collect(),
        }
    }
}

impl ForecasterEnsemble {
    /// Scaled quantile forecasts `[B, horizon, Q]`: the members' mean.
    pub fn forward(&self, input: ForecastInput) -> Tensor<3> {
        let n = self.members.len().max(1) as f64;
        let mut sum: Option<Tensor<3>> = None;
        for member in &self.members {
            let f = member.forward(input.clone());
            sum = Some(match sum {
                Some(s) => s + f,
                None => f,
            });
        }
        match sum {
            Some(s) => s / n,
            None => input.baseline.unsqueeze_dim::<3>(2).clamp_min(0.0),
        }
    }

    /// Forecasts in units: `[B, horizon, Q]` row-major, each window multiplied back by its scale.
    pub fn predict(&self, input: ForecastInput, scale: &[f32]) -> Result<Vec<f32>, String> {
        to_units(self.forward(input), scale)
    }
}

/// A layer's weight gradients (plain tensors) into `grads`; the two biases are only ever
/// summed, so both get the sum's gradient.
fn register_layer_gradients(
    grads: &mut GradientsParams,
    layer: &FusedLstm,
    input_weight: Tensor<2>,
    hidden_weight: Tensor<2>,
    bias: Tensor<1>,
) {
    grads.register(layer.input_weight.id, input_weight);
    grads.register(layer.hidden_weight.id, hidden_weight);
    grads.register(layer.input_bias.id, bias.clone());
    grads.register(layer.hidden_bias.id, bias);
}

fn to_units(scaled: Tensor<3>, scale: &[f32]) -> Result<Vec<f32>, String> {
    let [b, h, q] = scaled.dims();
    let values = host_values(scaled).map_err(|e| format!("forecasts: {e}"))?;
    let per_window = h * q;
    Ok(values
        .chunks(per_window)
        .zip(scale.iter().take(b))
        .flat_map(|(w, s)| w.iter().map(move |v| v * s))
        .collect())
}

impl DemandForecaster {
    /// Scaled quantile forecasts `[B, horizon, Q]`, non-negative and non-crossing.
    pub fn forward(&self, input: ForecastInput) -> Tensor<3> {
        self.forward_raw(input).clamp_min(0.0)
    }

    /// Scaled quantile forecasts `[B, horizon, Q]`, non-crossing but not yet clamped at zero:
    /// what the pinball loss is computed on during training. Differentiable when the model is
    /// (tensor ops); a model without gradients runs the host kernels on a CPU backend, the
    /// recurrence kernels on a GPU backend.
    pub fn forward_raw(&self, input: ForecastInput) -> Tensor<3> {
        let device = input.encoder.device();
        let trainable = self.encoder.input_weight.val().is_require_grad();
        if memory_is_host(&device) && !trainable {
            // An id outside its embedding table falls back to the tensor path, which reports it.
            if let Ok(decoded) = self.host_decoder_outputs(&input) {
                return self.quantiles(decoded, input.baseline);
            }
        }
        let (enc_in, dec_in) = self.lstm_inputs(&input);
        if runs_cube_kernels(&device) && !trainable {
            let (decoded, _) = cube_encoder_decoder_forward(
                &self.encoder,
                &self.decoder,
                enc_in.inner(),
                dec_in.inner(),
            );
            return self.quantiles(decoded, input.baseline);
        }
        let decoded = self.tensor_decoder_outputs(enc_in, dec_in);
        self.quantiles(decoded, input.baseline)
    }

    /// The loss of one training batch and the gradients of every parameter: what
    /// `GradientsParams::from_grads(loss.backward(), model)` gives for
    /// `loss_fn(model.forward_raw(input))`, but on the CPU backends with the LSTM pair run by
    /// its hand-written forward and backward passes:
    /// 1. the key embeddings are appended to the inputs with tensor ops (autodiff graph A);
    /// 2. the host kernels run the encoder and decoder on those values;
    /// 3. the decoder's outputs enter a second graph (B) as a leaf: head, quantiles and loss;
    ///    its backward pass gives the head's gradients and the outputs' gradient;
    /// 4. the host kernels backpropagate that through the LSTM pair: the layers' gradients and
    ///    the inputs' gradient;
    /// 5. the inputs' gradient is pushed through graph A (`sum(inputs * gradient)`) to the key
    ///    embeddings.
    pub fn loss_and_gradients(
        &self,
        input: ForecastInput,
        loss_fn: impl FnOnce(Tensor<3>) -> Tensor<1>,
    ) -> Result<(Tensor<1>, GradientsParams), String> {
        // The parameters' device: autodiff when the model is being trained.
        let device = self.head.weight.val().device();
        if runs_cube_kernels(&device) {
            return Ok(self.cube_loss_and_gradients(input, loss_fn));
        }
        if !memory_is_host(&device) {
            return Ok(self.reference_loss_and_gradients(input, loss_fn));
        }
        let (enc_in, dec_in) = self.lstm_inputs(&input);
        let (enc_w, dec_w) = (self.encoder.host_weights()?, self.decoder.host_weights()?);
        let enc_host = host_values(enc_in.clone())?;
        let dec_host = host_values(dec_in.clone())?;
        let [batch, horizon, dec_features] = dec_in.dims();
        let [_, context, enc_features] = enc_in.dims();
        let (outputs, trace) =
            encoder_decoder_forward(&enc_w, &dec_w, &enc_host, &dec_host, batch, true);
        let trace = trace.ok_or("the LSTM forward pass kept no trace")?;
        let hidden = self.decoder.d_hidden();
        let plain = device.clone().inner();
        let outputs =
            Tensor::<3>::from_data(TensorData::new(outputs, [batch, horizon, hidden]), &plain);
        let (loss, mut grads, d_outputs) = self.head_loss_and_gradients(outputs, input, loss_fn);
        let lstm = encoder_decoder_backward(&enc_w, &dec_w, &trace, &host_values(d_outputs)?);
        let d_enc = Tensor::<3>::from_data(
            TensorData::new(lstm.encoder_input, [batch, context, enc_features]),
            &plain,
        );
        let d_dec = Tensor::<3>::from_data(
            TensorData::new(lstm.decoder_input, [batch, horizon, dec_features]),
            &plain,
        );
        self.register_embedding_gradients(&mut grads, enc_in, dec_in, d_enc, d_dec);
        for (layer, g) in [(&self.encoder, lstm.encoder), (&self.decoder, lstm.decoder)] {
            let (i, h) = (layer.d_input(), layer.d_hidden());
            let gradient = |values: Vec<f32>, shape: [usize; 2]| {
                Tensor::<2>::from_data(TensorData::new(values, shape), &plain)
            };
            register_layer_gradients(
                &mut grads,
                layer,
                gradient(g.wx, [i, 4 * h]),
                gradient(g.wh, [h, 4 * h]),
                Tensor::<1>::from_data(TensorData::new(g.bias, [4 * h]), &plain),
            );
        }
        Ok((loss, grads))
    }

    /// [`DemandForecaster::loss_and_gradients`] on a CubeCL device (WGPU): the same stages as
    /// on the host, with the LSTM pair run by its recurrence kernels on the device
    /// ([`cube_encoder_decoder_forward`] / [`cube_encoder_decoder_backward`]), so nothing is
    /// read back to the host.
    fn cube_loss_and_gradients(
        &self,
        input: ForecastInput,
        loss_fn: impl FnOnce(Tensor<3>) -> Tensor<1>,
    ) -> (Tensor<1>, GradientsParams) {
        let (enc_in, dec_in) = self.lstm_inputs(&input);
        let (outputs, trace) = cube_encoder_decoder_forward(
            &self.encoder,
            &self.decoder,
            enc_in.clone().inner(),
            dec_in.clone().inner(),
        );
        let (loss, mut grads, d_outputs) = self.head_loss_and_gradients(outputs, input, loss_fn);
        let lstm = cube_encoder_decoder_backward(&self.encoder, &self.decoder, trace, d_outputs);
        self.register_embedding_gradients(
            &mut grads,
            enc_in,
            dec_in,
            lstm.encoder_input,
            lstm.decoder_input,
        );
        for (layer, g) in [(&self.encoder, lstm.encoder), (&self.decoder, lstm.decoder)] {
            register_layer_gradients(&mut grads, layer, g.input_weight, g.hidden_weight, g.bias);
        }
        (loss, grads)
    }

    /// Stage 3 of [`DemandForecaster::loss_and_gradients`]: the decoder's outputs (a plain
    /// tensor) enter a graph of their own as a leaf; head, quantiles and loss; the loss, the
    /// head's gradients, and the outputs' gradient (plain, zeros if the loss ignores them).
    fn head_loss_and_gradients(
        &self,
        outputs: Tensor<3>,
        input: ForecastInput,
        loss_fn: impl FnOnce(Tensor<3>) -> Tensor<1>,
    ) -> (Tensor<1>, GradientsParams, Tensor<3>) {
        let dims = outputs.dims();
        let plain = outputs.device();
        let outputs = outputs.autodiff().require_grad();
        let loss = loss_fn(self.quantiles(outputs.clone(), input.baseline));
        let mut head_grads = loss.backward();
        let d_outputs = match outputs.grad_remove(&mut head_grads) {
            Some(g) => g,
            None => Tensor::zeros(dims, &plain),
        };
        (
            loss,
            GradientsParams::from_grads(head_grads, self),
            d_outputs,
        )
    }

    /// Stage 5 of [`DemandForecaster::loss_and_gradients`]: the LSTM inputs' gradients (plain
    /// tensors) pushed through the graph that appended the key embeddings
    /// (`sum(inputs * gradient)`), into `grads`.
    fn register_embedding_gradients(
        &self,
        grads: &mut GradientsParams,
        enc_in: Tensor<3>,
        dec_in: Tensor<3>,
        d_enc: Tensor<3>,
        d_dec: Tensor<3>,
    ) {
        if self.key_embeddings.is_empty() {
            return;
        }
        let pushed = (enc_in * d_enc).sum() + (dec_in * d_dec).sum();
        let embedding_grads = GradientsParams::from_grads(pushed.backward(), self);
        for emb in &self.key_embeddings {
            if let Some(g) = embedding_grads.get::<2>(emb.weight.id) {
                grads.register(emb.weight.id, g);
            }
        }
    }

    /// [`DemandForecaster::loss_and_gradients`] the straightforward way: tensor ops and Burn's
    /// autodiff (every backend; the tests' reference).
    pub fn reference_loss_and_gradients(
        &self,
        input: ForecastInput,
        loss_fn: impl FnOnce(Tensor<3>) -> Tensor<1>,
    ) -> (Tensor<1>, GradientsParams) {
        let (enc_in, dec_in) = self.lstm_inputs(&input);
        let decoded = self.tensor_decoder_outputs(enc_in, dec_in);
        let loss = loss_fn(self.quantiles(decoded, input.baseline));
        let grads = GradientsParams::from_grads(loss.backward(), self);
        (loss, grads)
    }

    /// Encoder and decoder inputs with each series' key embeddings appended to every step.
    fn lstm_inputs(&self, input: &ForecastInput) -> (Tensor<3>, Tensor<3>) {
        let [b, context, _] = input.encoder.dims();
        let [_, horizon, _] = input.decoder.dims();
        let statics: Vec<Tensor<2>> = self
            .key_embeddings
            .iter()
            .enumerate()
            .map(|(k, emb)| {
                let ids = input.keys.clone().narrow(1, k, 1).reshape([b]);
                emb.weight.val().select(0, ids)
            })
            .collect();
        if statics.is_empty() {
            return (input.encoder.clone(), input.decoder.clone());
        }
        let s = Tensor::cat(statics, 1); // [B, S]
        let [_, sd] = s.dims();
        let s3 = s.unsqueeze_dim::<3>(1);
        (
            Tensor::cat(
                vec![input.encoder.clone(), s3.clone().expand([b, context, sd])],
                2,
            ),
            Tensor::cat(vec![input.decoder.clone(), s3.expand([b, horizon, sd])], 2),
        )
    }

    /// Decoder outputs `[B, horizon, hidden]` by the layers' tensor ops.
    fn tensor_decoder_outputs(&self, enc_in: Tensor<3>, dec_in: Tensor<3>) -> Tensor<3> {
        let (_, state) = self.encoder.forward(enc_in, None);
        self.decoder.forward(dec_in, Some(state)).0
    }

    /// Decoder outputs `[B, horizon, hidden]` by the host kernels (no gradients), with the LSTM
    /// inputs assembled on the host (what [`DemandForecaster::lstm_inputs`] does with tensor
    /// ops, without its intermediate copies).
    fn host_decoder_outputs(&self, input: &ForecastInput) -> Result<Tensor<3>, String> {
        let device = input.encoder.device();
        let [batch, context, _] = input.encoder.dims();
        let [_, horizon, _] = input.decoder.dims();
        let keys = input
            .keys
            .clone()
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| format!("reading keys back from the device: {e:?}"))?;
        let n_keys = input.keys.dims()[1];
        // Each row's key embeddings, concatenated.
        let mut statics: Vec<Vec<f32>> = vec![Vec::new(); batch];
        for (k, emb) in self.key_embeddings.iter().enumerate() {
            let [rows, dim] = emb.weight.dims();
            let table = host_values(emb.weight.val())?;
            for (r, row) in statics.iter_mut().enumerate() {
                let id = keys.get(r * n_keys + k).copied().unwrap_or(-1);
                if id < 0 || id as usize >= rows {
                    return Err(format!("key {k} of window {r}: id {id} outside 0..{rows}"));
                }
                row.extend_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
            }
        }
        let with_statics = |x: Vec<f32>, steps: usize| -> Vec<f32> {
            let f = x.len() / (batch * steps).max(1);
            let width = f + statics.first().map_or(0, Vec::len);
            let mut out = Vec::with_capacity(batch * steps * width);
            for (r, row_statics) in statics.iter().enumerate() {
                for t in 0..steps {
                    let at = (r * steps + t) * f;
                    out.extend_from_slice(&x[at..at + f]);
                    out.extend_from_slice(row_statics);
                }
            }
            out
        };
        let enc_in = with_statics(host_values(input.encoder.clone())?, context);
        let dec_in = with_statics(host_values(input.decoder.clone())?, horizon);
        let (enc_w, dec_w) = (self.encoder.host_weights()?, self.decoder.host_weights()?);
        let (outputs, _) = encoder_decoder_forward(&enc_w, &dec_w, &enc_in, &dec_in, batch, false);
        let hidden = self.decoder.d_hidden();
        Ok(Tensor::from_data(
            TensorData::new(outputs, [batch, horizon, hidden]),
            &device,
        ))
    }

    /// Quantiles from the decoder's outputs: the head's correction to the anchor for the median,
    /// positive gaps for the others.
    fn quantiles(&self, decoded: Tensor<3>, baseline: Tensor<2>) -> Tensor<3> {
        let raw = self.head.forward(decoded); // [B, H, Q]
        let [_, _, q] = raw.dims();
        let m = self.median_index;
        let median = baseline + raw.clone().narrow(2, m, 1).squeeze_dim::<2>(2);
        let mut levels: Vec<Tensor<2>> = vec![median.clone(); q];
        // Quantiles below the median step down by positive gaps, those above step up.
        let mut below = median.clone();
        for j in (0..m).rev() {
            below = below - softplus(raw.clone().narrow(2, j, 1).squeeze_dim::<2>(2), 1.0);
            levels[j] = below.clone();
        }
        let mut above = median;
        for (j, level) in levels.iter_mut().enumerate().skip(m + 1) {
            above = above + softplus(raw.clone().narrow(2, j, 1).squeeze_dim::<2>(2), 1.0);
            *level = above.clone();
        }
        Tensor::stack::<3>(levels, 2)
    }

    /// Forecasts in units: `[B, horizon, Q]` row-major, each window multiplied back by its scale.
    pub fn predict(&self, input: ForecastInput, scale: &[f32]) -> Result<Vec<f32>, String> {
        to_units(self.forward(input), scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(b: usize, config: &ForecasterConfig, device: &Device) -> ForecastInput {
        let (c, h) = (config.context, config.horizon);
        let wave = |n: usize, k: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * k) % 17) as f32 / 8.0 - 1.0).collect()
        };
        ForecastInput::from_arrays(
            wave(b * c * config.encoder_features, 5),
            wave(b * h * config.decoder_features, 3),
            (0..b * 2).map(|i| (i % 3) as i64).collect(),
            wave(b * h, 7),
            b,
            c,
            h,
            device,
        )
    }

    /// Quantiles never cross and never go below zero, even where the anchor is negative noise;
    /// an ensemble forecasts its members' mean.
    #[test]
    fn quantiles_are_ordered_and_the_ensemble_averages_its_members() {
        let device = Device::flex();
        let config = ForecasterConfig::new(6, 5, vec![3, 3], 8, 4, vec![0.1, 0.5, 0.9])
            .with_hidden_size(8)
            .with_ensemble(2);
        let ensemble = crate::seeded_init(&device, 9, || config.init_ensemble(&device));
        let x = input(5, &config, &device);
        let each: Vec<Vec<f32>> = ensemble
            .members
            .iter()
            .map(|m| host(m.forward(x.clone())))
            .collect();
        let mean = host(ensemble.forward(x));
        for (i, v) in mean.iter().enumerate() {
            assert!((v - (each[0][i] + each[1][i]) / 2.0).abs() < 1e-5);
        }
        for step in mean.chunks(3) {
            assert!(
                step[0] >= 0.0 && step[0] <= step[1] && step[1] <= step[2],
                "{step:?}"
            );
        }
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        host_values(t).expect("values")
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    /// The CPU fast path (host LSTM kernels, hand-written backward, gradients pushed back into
    /// the key embeddings) gives the same loss and the same gradient for every parameter as the
    /// straightforward autodiff version, and a model without gradients forecasts the same
    /// through the host kernels as through the tensor ops.
    #[test]
    fn fast_path_matches_the_autodiff_reference() {
        fast_path_matches_the_autodiff_reference_on(Device::flex());
    }

    /// The same on a GPU backend (WGPU; Mesa's software Vulkan driver where there is no GPU):
    /// the recurrence kernels' loss, gradients and forecasts against autodiff on that device.
    #[test]
    fn gpu_path_matches_the_autodiff_reference() {
        fast_path_matches_the_autodiff_reference_on(crate::device::wgpu_for_tests());
    }

    fn fast_path_matches_the_autodiff_reference_on(plain: Device) {
        let device = plain.clone().autodiff();
        let config =
            ForecasterConfig::new(6, 5, vec![3, 4], 9, 5, vec![0.1, 0.5, 0.9]).with_hidden_size(12);
        let mut model = crate::seeded_init(&device, 4, || config.init(&device));
        let b = 7;
        let target = Tensor::<2>::from_data(
            TensorData::new((0..b * 5).map(|i| (i % 4) as f32).collect(), [b, 5]),
            &device,
        );
        let mask = Tensor::<2>::from_data(
            TensorData::new(
                (0..b * 5).map(|i| (i % 6 != 0) as u8 as f32).collect(),
                [b, 5],
            ),
            &device,
        );
        let quantiles = config.quantiles.clone();
        let loss_fn =
            |raw: Tensor<3>| pinball_for_test(raw, target.clone(), mask.clone(), &quantiles);
        // A few steps first: the head starts at zero, which would make every LSTM gradient zero.
        let mut optim = crate::optim::adam();
        for _ in 0..3 {
            let (_, grads) =
                model.reference_loss_and_gradients(input(b, &config, &device), loss_fn);
            model = optim.step(0.05, model, grads);
        }
        let x = input(b, &config, &device);
        let (fast_loss, mut fast) = model
            .loss_and_gradients(x.clone(), loss_fn)
            .expect("fast path");
        let (reference_loss, mut reference) =
            model.reference_loss_and_gradients(x.clone(), loss_fn);
        assert_close(&host(fast_loss), &host(reference_loss), "loss");
        let mut matrices = vec![
            ("head weight", model.head.weight.id),
            ("encoder input weight", model.encoder.input_weight.id),
            ("encoder hidden weight", model.encoder.hidden_weight.id),
            ("decoder input weight", model.decoder.input_weight.id),
            ("decoder hidden weight", model.decoder.hidden_weight.id),
        ];
        for emb in &model.key_embeddings {
            matrices.push(("key embedding", emb.weight.id));
        }
        for (what, id) in matrices {
            let f = fast
                .remove::<2>(id)
                .unwrap_or_else(|| panic!("fast {what}"));
            let r = reference
                .remove::<2>(id)
                .unwrap_or_else(|| panic!("reference {what}"));
            assert_close(&host(f), &host(r), what);
        }
        let mut vectors = vec![
            ("encoder input bias", model.encoder.input_bias.id),
            ("encoder hidden bias", model.encoder.hidden_bias.id),
            ("decoder input bias", model.decoder.input_bias.id),
            ("decoder hidden bias", model.decoder.hidden_bias.id),
        ];
        if let Some(bias) = &model.head.bias {
            vectors.push(("head bias", bias.id));
        }
        for (what, id) in vectors {
            let f = fast
                .remove::<1>(id)
                .unwrap_or_else(|| panic!("fast {what}"));
            let r = reference
                .remove::<1>(id)
                .unwrap_or_else(|| panic!("reference {what}"));
            assert_close(&host(f), &host(r), what);
        }

        let snapshot = model.valid();
        let through_kernels = snapshot.forward_raw(input(b, &config, &plain));
        let through_tensors = model.forward_raw(x);
        assert_close(&host(through_kernels), &host(through_tensors), "forecasts");
    }

    fn pinball_for_test(
        raw: Tensor<3>,
        target: Tensor<2>,
        mask: Tensor<2>,
        quantiles: &[f64],
    ) -> Tensor<1> {
        crate::losses::pinball(raw, target, mask, quantiles)
    }
}
