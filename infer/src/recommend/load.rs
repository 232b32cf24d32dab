//! Opening a bundle's recommender: its checked config, weights, side data, features on the
//! device and, for pseudonymised bundles, the salted hash of customer ids.

use std::path::Path;

use anyhow::Result;
use burn::config::Config;
use burn::prelude::*;
use shopcast_datasets::artifacts::{files, RecommenderArtifacts};
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_model::{Bundle, BundleError, EntityFeatures, Recommender, RecommenderConfig};

use super::catalogue::Catalogue;

/// A loaded recommender: model, features on the device, and the bundle's side data.
pub struct LoadedRecommender {
    pub bundle: Bundle,
    pub config: RecommenderConfig,
    pub model: Recommender,
    pub artifacts: RecommenderArtifacts,
    pub customer_features: EntityFeatures,
    pub product_features: EntityFeatures,
    pub device: Device,
    /// When the bundle holds pseudonyms of customer ids: the salted hash that maps an input id
    /// to its pseudonym.
    pub pseudonymiser: Option<Pseudonymiser>,
}

pub(crate) fn bundle_invalid(bundle: &Bundle, msg: String) -> anyhow::Error {
    BundleError::Invalid {
        dir: bundle.dir.clone(),
        msg,
    }
    .into()
}

pub(crate) fn to_vec_f32(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading values back from the device: {e:?}"))
}

/// The recommender's data side: the JSON header and the Parquet tables beside it.
pub fn read_recommender_artifacts(bundle: &Bundle) -> Result<RecommenderArtifacts> {
    let mut artifacts: RecommenderArtifacts = bundle.read_json(files::RECOMMENDER_ARTIFACTS)?;
    artifacts.read_tables(bundle.require(&files::RECOMMENDER_TABLES)?)?;
    Ok(artifacts)
}

/// Opens a bundle's recommender on a device.
pub fn load_recommender(dir: &Path, device: &Device) -> Result<LoadedRecommender> {
    let bundle = Bundle::open(dir)?;
    if !bundle.has("recommender") {
        return Err(bundle_invalid(
            &bundle,
            "the bundle holds no recommender (train it with --only recommender)".into(),
        ));
    }
    let config = RecommenderConfig::load(bundle.dir.join(files::RECOMMENDER_CONFIG))
        .map_err(|e| e.to_string())
        .and_then(|c| c.check().map(|()| c))
        .map_err(|e| bundle_invalid(&bundle, format!("{}: {e}", files::RECOMMENDER_CONFIG)))?;
    let artifacts = read_recommender_artifacts(&bundle)?;
    if artifacts.customers.len() != config.n_customers
        || artifacts.products.len() != config.n_products
    {
        return Err(bundle_invalid(
            &bundle,
            "the vocabularies do not match the model's sizes".into(),
        ));
    }
    let model = bundle.load_module(files::RECOMMENDER_WEIGHTS, config.init(device))?;
    let pseudonymiser = match &artifacts.pseudonyms {
        Some(info) => Some(Pseudonymiser::for_bundle(info)?),
        None => None,
    };
    let (ct, cw) = artifacts.customer_features.padded();
    let (pt, pw) = artifacts.product_features.padded();
    Ok(LoadedRecommender {
        customer_features: EntityFeatures::new(ct, cw, device),
        product_features: EntityFeatures::new(pt, pw, device),
        bundle,
        config,
        model,
        artifacts,
        device: device.clone(),
        pseudonymiser,
    })
}

impl LoadedRecommender {
    /// Top-`k` products for each row of `vectors` (`[C, d]`), skipping each row's `exclude`
    /// products and the `blocked` ones, best first: `(product, score)` per row.
    pub fn top_k_for_vectors(
        &self,
        vectors: Tensor<2>,
        exclude: &[&[u32]],
        blocked: &[u32],
        catalogue: &Catalogue,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.model
            .top_k_excluding(vectors, &catalogue.matrix, exclude, blocked, k)
            .map_err(anyhow::Error::msg)
    }
}
