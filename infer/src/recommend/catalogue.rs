//! The catalogue being ranked: the bundle's products, then any new ones described by their
//! attributes (`--new-products`), with what the reasons need.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::artifacts::RecommenderArtifacts;
use shopcast_datasets::interactions::{attribute_columns, pad_tokens};
use shopcast_datasets::DataError;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{EntityFeatures, ProductMatrix};

use super::inputs::read_with_id;
use super::load::{to_vec_f32, LoadedRecommender};
use crate::output::JobManifest;

/// A product added at scoring time, known by its attributes only.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: String,
    pub name: String,
    pub tokens: Vec<u32>,
}

/// The products being ranked: the bundle's, then any new ones (indices continue after the
/// bundle's), with what explanations need.
pub struct Catalogue {
    pub ids: Vec<String>,
    pub names: Vec<String>,
    /// Value of the primary attribute (e.g. category) of each product.
    pub primary: Vec<Option<String>>,
    /// Customers who interacted with each product in training (0 for new products).
    pub popularity: Vec<u32>,
    pub matrix: ProductMatrix,
    /// Unit-length product vectors `[P, d]` row-major, for "because you bought X".
    pub unit_vectors: Vec<f32>,
    pub dim: usize,
}

impl Catalogue {
    /// Catalogue index of each product id.
    pub fn index(&self) -> HashMap<&str, u32> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i as u32))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Padded attribute tokens of entities outside the bundle, as device tensors.
pub(crate) fn token_tensors(tokens: &[Vec<u32>], device: &Device) -> EntityFeatures {
    let (padded, width) = pad_tokens(tokens);
    EntityFeatures::new(padded, width, device)
}

impl LoadedRecommender {
    /// The bundle's catalogue plus `new_products`, ready for scoring.
    pub fn catalogue(&self, new_products: &[NewProduct]) -> Result<Catalogue> {
        let a = &self.artifacts;
        let n_known = a.products.len();
        let all: Vec<u32> = (0..n_known as u32).collect();
        let ids_t = ids_tensor(&all, &self.device);
        let mut vectors = self
            .model
            .product_vectors(ids_t.clone(), &self.product_features);
        let mut biases = self.model.product_biases(ids_t);
        let mut ids: Vec<String> = a.products.ids().to_vec();
        let mut names = a.product_names.clone();
        let mut primary: Vec<Option<String>> = (0..n_known)
            .map(|p| a.product_features.primary_value(p).map(str::to_string))
            .collect();
        let mut popularity = a.popularity.clone();
        if !new_products.is_empty() {
            let tokens: Vec<Vec<u32>> = new_products.iter().map(|p| p.tokens.clone()).collect();
            let f = token_tensors(&tokens, &self.device);
            let new_vectors = self
                .model
                .product_vectors_from_attributes(f.tokens, f.weights);
            // A new product's bias: the mean bias of the products sharing its primary
            // attribute (its category), else of the whole catalogue.
            let known_bias = to_vec_f32(biases.clone().unsqueeze_dim::<2>(0))?;
            let global = known_bias.iter().sum::<f32>() / known_bias.len().max(1) as f32;
            let mut by_category: HashMap<&str, (f32, usize)> = HashMap::new();
            for (p, b) in known_bias.iter().enumerate() {
                if let Some(c) = primary[p].as_deref() {
                    let e = by_category.entry(c).or_default();
                    e.0 += b;
                    e.1 += 1;
                }
            }
            let new_primary: Vec<Option<String>> = new_products
                .iter()
                .map(|p| {
                    a.product_features
                        .primary_value_in(&p.tokens)
                        .map(str::to_string)
                })
                .collect();
            let new_bias: Vec<f32> = new_primary
                .iter()
                .map(|c| {
                    c.as_deref()
                        .and_then(|c| by_category.get(c))
                        .map_or(global, |(sum, n)| sum / *n as f32)
                })
                .collect();
            let n_new = new_bias.len();
            vectors = Tensor::cat(vec![vectors, new_vectors], 0);
            biases = Tensor::cat(
                vec![
                    biases,
                    Tensor::from_data(TensorData::new(new_bias, [n_new]), &self.device),
                ],
                0,
            );
            for (p, c) in new_products.iter().zip(new_primary) {
                ids.push(p.id.clone());
                names.push(p.name.clone());
                primary.push(c);
                popularity.push(0);
            }
        }
        let dim = vectors.dims()[1];
        let mut unit_vectors = to_vec_f32(vectors.clone())?;
        for row in unit_vectors.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(Catalogue {
            matrix: self.model.product_matrix(vectors, biases),
            ids,
            names,
            primary,
            popularity,
            unit_vectors,
            dim,
        })
    }
}

/// Reads `--new-products`: an id column (the business's product column or `product_id`), and
/// any of the attribute columns the bundle's config reads for products.
pub(crate) fn read_new_products(
    path: &Path,
    artifacts: &RecommenderArtifacts,
    manifest: &mut JobManifest,
) -> Result<Vec<NewProduct>> {
    let Some(table_spec) = &artifacts.product_attributes else {
        anyhow::bail!(DataError::Invalid(
            "--new-products: the bundle was trained without product attributes, so a new product cannot be described; add `[recommender.data.products]` to the config and retrain".into()
        ));
    };
    let (table, id_column) = read_with_id(
        path,
        &artifacts.product_column,
        "product_id",
        &attribute_columns(table_spec),
    )?;
    let ids = table.ids(&id_column)?;
    let tokens = artifacts.product_features.encode_rows(&table, table_spec)?;
    let names = match table_spec.name.as_deref().filter(|c| table.has_column(c)) {
        Some(c) => table.strings(c)?,
        None => vec![None; ids.len()],
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for ((id, toks), name) in ids.into_iter().zip(tokens).zip(names) {
        if artifacts.products.get(&id).is_some() {
            *manifest
                .rows_skipped
                .entry("new product already in the bundle".into())
                .or_default() += 1;
            continue;
        }
        if !seen.insert(id.clone()) {
            *manifest
                .rows_skipped
                .entry("duplicate new product id".into())
                .or_default() += 1;
            continue;
        }
        if toks.is_empty() {
            *manifest
                .rows_skipped
                .entry("new product with no known attribute value".into())
                .or_default() += 1;
            continue;
        }
        out.push(NewProduct {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            tokens: toks,
        });
    }
    manifest
        .counts
        .insert("new products added".into(), out.len());
    Ok(out)
}
