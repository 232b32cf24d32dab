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
        let scaled = self.forward(input);
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
}
