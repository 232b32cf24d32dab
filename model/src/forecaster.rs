//! The demand forecaster: one global LSTM encoder-decoder over all series.
//!
//! The encoder reads the context window (scaled past sales, covariates, calendar); the decoder
//! runs over the horizon fed the known-future covariates and an anchor forecast (the series'
//! exponential smoothing), starting from the encoder's state. Each series key (store,
//! product...) and static attribute (category...) has an embedding appended to every step. The head does not forecast sales from
//! scratch: it predicts a correction to the anchor for the median, and positive gaps to the
//! neighbouring quantiles, so quantiles never cross and a model that has learnt nothing falls
//! back to the anchor. Forecasts are clamped at zero, so intermittent series never get negative
//! demand; training uses the unclamped values ([`DemandForecaster::forward_raw`]), because a
//! clamp has no gradient below zero and a median pushed there once would stay at zero.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, Lstm, LstmConfig};
use burn::prelude::*;
use burn::tensor::activation::softplus;

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
    encoder: Lstm,
    decoder: Lstm,
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
            encoder: LstmConfig::new(self.encoder_features + static_dim, self.hidden_size, true)
                .init(device),
            decoder: LstmConfig::new(self.decoder_features + static_dim, self.hidden_size, true)
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

fn to_units(scaled: Tensor<3>, scale: &[f32]) -> Result<Vec<f32>, String> {
    let [b, h, q] = scaled.dims();
    let values = scaled
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("reading forecasts back from the device: {e:?}"))?;
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
    /// what the pinball loss is computed on during training.
    pub fn forward_raw(&self, input: ForecastInput) -> Tensor<3> {
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
        let (enc_in, dec_in) = if statics.is_empty() {
            (input.encoder, input.decoder)
        } else {
            let s = Tensor::cat(statics, 1); // [B, S]
            let [_, sd] = s.dims();
            let s3 = s.unsqueeze_dim::<3>(1);
            (
                Tensor::cat(vec![input.encoder, s3.clone().expand([b, context, sd])], 2),
                Tensor::cat(vec![input.decoder, s3.expand([b, horizon, sd])], 2),
            )
        };
        let (_, state) = self.encoder.forward(enc_in, None);
        let (dec_out, _) = self.decoder.forward(dec_in, Some(state));
        let raw = self.head.forward(dec_out); // [B, H, Q]
        let [_, _, q] = raw.dims();
        let m = self.median_index;
        let median = input.baseline + raw.clone().narrow(2, m, 1).squeeze_dim::<2>(2);
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

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values")
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
            .map(|m| values(m.forward(x.clone())))
            .collect();
        let mean = values(ensemble.forward(x));
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
}
