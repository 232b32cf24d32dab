//! `infer recommend`: top-K products per customer from a bundle, with a reason and a segment.
//!
//! Customers are scored in chunks on the device: one matrix product of the chunk's customer
//! vectors with the product matrix, already-bought products masked, and the top K selected on
//! the device; only the top K come back.
//!
//! Cold start: a customer list may name customers the bundle has never seen, with their
//! attributes (the columns the config reads for customers) and/or a `recent_items` column
//! (product ids separated by `|`). Such a customer starts from the average customer plus their
//! attributes, and is then fitted to their recent items with the model frozen (fold-in). New
//! products (`--new-products`, attributes only) join the catalogue with a vector from their
//! attributes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::prelude::*;
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::artifacts::{files, shard_of, RecommenderArtifacts};
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::interactions::{attribute_columns, pad_tokens};
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_datasets::table::{AtomicFrameWriter, Table};
use shopcast_datasets::table_chunks::TableChunks;
use shopcast_datasets::DataError;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{
    Bundle, BundleError, DeviceChoice, EntityFeatures, FoldInConfig, ProductMatrix, Recommender,
    RecommenderConfig,
};

use crate::output::{check_output_path, finish_output, open_device, JobManifest};

/// Working memory of one scoring call, in floats (16 MiB): customers per chunk keep the score
/// matrix about this size. Smaller than it could be on purpose: every chunk's score matrix is a
/// fresh allocation, and on this project's machines the page faults of a 64 MiB buffer cost
/// more than the larger matrix product saves (`cargo bench --workspace --bench scoring`).
pub(crate) const SCORING_BUDGET_FLOATS: usize = 4 << 20;
/// New customers fitted per fold-in call (bounds its `[C, P]` working set).
const FOLD_IN_CHUNK: usize = 256;
/// Cosine similarity above which "because you bought X" is given.
const SIMILAR_ENOUGH: f32 = 0.35;
/// Column of a customer list holding recently chosen products.
pub const RECENT_ITEMS_COLUMN: &str = "recent_items";
/// Separator of the product ids in `recent_items`.
pub const RECENT_ITEMS_SEPARATOR: char = '|';

/// Options of `infer recommend`.
#[derive(Debug, Clone)]
pub struct RecommendOptions {
    pub bundle: PathBuf,
    pub customers: Option<PathBuf>,
    /// Products not in the bundle, described by their attributes.
    pub new_products: Option<PathBuf>,
    pub top_k: usize,
    /// Products no one is to be offered (out of stock, discontinued): a file with the product
    /// id column.
    pub exclude: Option<PathBuf>,
    /// Customers who opted out of personalisation: a file with the customer id column. They get
    /// no rows.
    pub opt_out: Option<PathBuf>,
    pub out: PathBuf,
    pub shard: Option<(u32, u32)>,
    pub device: DeviceChoice,
    /// Customers read (and scored) per piece of the customer list: bounds memory.
    pub input_piece_rows: usize,
}

/// Default customers per piece of a customer list.
pub const INPUT_PIECE_ROWS: usize = 100_000;

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

fn bundle_invalid(bundle: &Bundle, msg: String) -> anyhow::Error {
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
        .map_err(|e| bundle_invalid(&bundle, format!("{}: {e}", files::RECOMMENDER_CONFIG)))?;
    let artifacts: RecommenderArtifacts = bundle.read_json(files::RECOMMENDER_ARTIFACTS)?;
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
fn token_tensors(tokens: &[Vec<u32>], device: &Device) -> EntityFeatures {
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

    /// Vectors `[C, d]` of customers the bundle has not seen: the average customer plus their
    /// attributes, fitted to their recent products when they have any.
    pub fn new_customer_vectors(
        &self,
        attribute_tokens: &[Vec<u32>],
        recent: &[Vec<u32>],
        catalogue: &Catalogue,
    ) -> Result<Tensor<2>> {
        let n = attribute_tokens.len();
        let f = token_tensors(attribute_tokens, &self.device);
        let attributes = self
            .model
            .customer_vectors_from_attributes(f.tokens, f.weights);
        let start = attributes + self.model.mean_customer_id_embedding(); // broadcast [1, d]
        let with_items: Vec<usize> = (0..n).filter(|&i| !recent[i].is_empty()).collect();
        if with_items.is_empty() {
            return Ok(start);
        }
        // Fold-in needs gradients: the same weights on the autodiff twin of the device.
        let ad = self.device.clone().autodiff();
        let ad_model = self
            .bundle
            .load_module(files::RECOMMENDER_WEIGHTS, self.config.init(&ad))?;
        let ad_matrix = rebuild_on(&ad_model, catalogue, &ad)?;
        let fold = FoldInConfig::new();
        let mut rows = to_vec_f32(start.clone())?;
        let d = start.dims()[1];
        for chunk in with_items.chunks(FOLD_IN_CHUNK) {
            let idx = ids_tensor(
                &chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &self.device,
            );
            let chunk_start = start.clone().select(0, idx);
            let chosen: Vec<Vec<u32>> = chunk.iter().map(|&i| recent[i].clone()).collect();
            let fitted = to_vec_f32(ad_model.fold_in(
                chunk_start,
                &chosen,
                &ad_matrix,
                &fold,
                &self.device,
            ))?;
            for (k, &i) in chunk.iter().enumerate() {
                rows[i * d..(i + 1) * d].copy_from_slice(&fitted[k * d..(k + 1) * d]);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(rows, [n, d]),
            &self.device,
        ))
    }

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

/// The catalogue's product matrix rebuilt for a model on another device (the same vectors and
/// biases, known and new products alike), cut off from the autodiff graph.
fn rebuild_on(
    model: &Recommender,
    catalogue: &Catalogue,
    device: &Device,
) -> Result<ProductMatrix> {
    let (p, d) = (catalogue.len(), catalogue.dim);
    let vectors = to_vec_f32(catalogue.matrix.vectors())?;
    let biases = to_vec_f32(catalogue.matrix.biases().unsqueeze_dim::<2>(0))?;
    Ok(model
        .product_matrix(
            Tensor::from_data(TensorData::new(vectors, [p, d]), device),
            Tensor::from_data(TensorData::new(biases, [p]), device),
        )
        .detach())
}

/// What the explainer knows about one scored customer.
pub struct CustomerContext<'a> {
    pub bought: &'a [u32],
    pub viewed: &'a [u32],
    pub segment: u32,
}

/// Writes readable reasons for recommendations.
pub struct Explainer<'a> {
    catalogue: &'a Catalogue,
    segment_top: Vec<HashSet<u32>>,
}

impl<'a> Explainer<'a> {
    pub fn new(artifacts: &RecommenderArtifacts, catalogue: &'a Catalogue) -> Self {
        let segment_top = artifacts
            .segment_profiles
            .iter()
            .map(|p| p.top_products.iter().copied().collect())
            .collect();
        Explainer {
            catalogue,
            segment_top,
        }
    }

    fn cosine(&self, a: u32, b: u32) -> f32 {
        let d = self.catalogue.dim;
        let (a, b) = (a as usize * d, b as usize * d);
        let u = &self.catalogue.unit_vectors;
        u[a..a + d]
            .iter()
            .zip(&u[b..b + d])
            .map(|(x, y)| x * y)
            .sum()
    }

    /// The reason for recommending `product` to a customer.
    pub fn reason(&self, customer: &CustomerContext<'_>, product: u32) -> String {
        let cat = self.catalogue;
        let best = customer
            .bought
            .iter()
            .map(|&p| (p, "bought"))
            .chain(customer.viewed.iter().map(|&p| (p, "viewed")))
            .filter(|(p, _)| *p != product)
            .map(|(p, verb)| (self.cosine(p, product), p, verb))
            .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
        let category = cat.primary[product as usize].as_deref();
        let is_new = cat.popularity[product as usize] == 0;
        let buys_there = category.is_some_and(|c| {
            customer
                .bought
                .iter()
                .chain(customer.viewed)
                .any(|&p| cat.primary[p as usize].as_deref() == Some(c))
        });
        if let (true, true, Some(c)) = (is_new, buys_there, category) {
            return format!("new in a category you buy: {c}");
        }
        if let Some((sim, p, verb)) = best {
            if sim >= SIMILAR_ENOUGH {
                return format!("because you {verb} {}", cat.names[p as usize]);
            }
        }
        if self
            .segment_top
            .get(customer.segment as usize)
            .is_some_and(|s| s.contains(&product))
        {
            return "popular with customers like you".into();
        }
        if let (true, Some(c)) = (buys_there, category) {
            return format!("more from {c}, a category you buy");
        }
        // The collaborative signal alone: customers with similar vectors chose it.
        "liked by customers like you".into()
    }
}

/// The segment whose centre is nearest to a vector.
fn nearest_segment(centroids: &[Vec<f32>], v: &[f32]) -> u32 {
    centroids
        .iter()
        .enumerate()
        .map(|(s, c)| {
            let d: f32 = c.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
            (s as u32, d)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(s, _)| s)
}

/// One customer to score.
pub(crate) struct Target {
    pub(crate) id: String,
    /// Index in the bundle; `None` for a new customer.
    pub(crate) known: Option<u32>,
    /// Products bought (masked from the list and used in reasons).
    pub(crate) bought: Vec<u32>,
    pub(crate) viewed: Vec<u32>,
    /// Latest purchases, oldest first (the recency term).
    pub(crate) recent: Vec<u32>,
    /// Attribute tokens of a new customer.
    pub(crate) attributes: Vec<u32>,
}

/// Adds the recency term (the bundle's weight, each customer's latest purchases; at most as
/// many as training used) to the vectors of `rows`.
pub(crate) fn with_recent(
    loaded: &LoadedRecommender,
    u: Tensor<2>,
    rows: &[usize],
    targets: &[Target],
    catalogue: &Catalogue,
) -> Tensor<2> {
    let weight = loaded.artifacts.recency_weight;
    if weight == 0.0 {
        return u;
    }
    let keep = loaded.artifacts.recent_items.max(1);
    let lists: Vec<Vec<u32>> = rows
        .iter()
        .map(|&i| {
            let r = &targets[i].recent;
            r[r.len().saturating_sub(keep)..].to_vec()
        })
        .collect();
    loaded
        .model
        .with_recent(u, &lists, &catalogue.matrix, weight)
}

/// Reads `--new-products`: an id column (the business's product column or `product_id`), and
/// any of the attribute columns the bundle's config reads for products.
fn read_new_products(
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

/// A customer the bundle knows, with their history from the bundle.
fn known_target(a: &RecommenderArtifacts, c: u32) -> Target {
    Target {
        id: a.customers.id(c).to_string(),
        known: Some(c),
        bought: a.purchased[c as usize].clone(),
        viewed: a.browsed[c as usize].clone(),
        recent: a.recent.get(c as usize).cloned().unwrap_or_default(),
        attributes: Vec::new(),
    }
}

/// Every customer the bundle knows.
pub(crate) fn known_targets(a: &RecommenderArtifacts) -> Vec<Target> {
    (0..a.customers.len() as u32)
        .map(|c| known_target(a, c))
        .collect()
}

/// Turns the pieces of a `--customers` file into customers to score, remembering across pieces
/// which customers were already seen (a bit per known customer, a 64-bit fingerprint per new
/// one) and what was counted.
struct CustomerListReader<'a> {
    artifacts: &'a RecommenderArtifacts,
    pseudonymiser: Option<&'a Pseudonymiser>,
    id_column: String,
    product_index: HashMap<&'a str, u32>,
    seen_known: Vec<bool>,
    seen_new: HashSet<u64>,
    duplicates: usize,
    cold: usize,
    unknown_items: usize,
}

impl<'a> CustomerListReader<'a> {
    fn new(
        artifacts: &'a RecommenderArtifacts,
        pseudonymiser: Option<&'a Pseudonymiser>,
        catalogue: &'a Catalogue,
        id_column: String,
    ) -> Self {
        CustomerListReader {
            artifacts,
            pseudonymiser,
            id_column,
            product_index: catalogue.index(),
            seen_known: vec![false; artifacts.customers.len()],
            seen_new: HashSet::new(),
            duplicates: 0,
            cold: 0,
            unknown_items: 0,
        }
    }

    /// The customers of one piece of the file, duplicates of earlier rows skipped.
    fn targets(&mut self, table: &Table) -> Result<Vec<Target>, DataError> {
        let a = self.artifacts;
        let ids = table.ids(&self.id_column)?;
        let attributes: Vec<Vec<u32>> = match &a.customer_attributes {
            Some(t) => a.customer_features.encode_rows(table, t)?,
            None => vec![Vec::new(); ids.len()],
        };
        let recent: Vec<Option<String>> = if table.has_column(RECENT_ITEMS_COLUMN) {
            table.strings(RECENT_ITEMS_COLUMN)?
        } else {
            vec![None; ids.len()]
        };
        let mut targets = Vec::with_capacity(ids.len());
        for ((id, attrs), recent) in ids.into_iter().zip(attributes).zip(recent) {
            let known = match self.pseudonymiser {
                Some(p) => a.customers.get(&p.apply(&id)),
                None => a.customers.get(&id),
            };
            let first_time = match known {
                Some(c) => !std::mem::replace(&mut self.seen_known[c as usize], true),
                None => self.seen_new.insert(fingerprint(&id)),
            };
            if !first_time {
                self.duplicates += 1;
                continue;
            }
            let mut items: Vec<u32> = Vec::new();
            for item in recent
                .as_deref()
                .unwrap_or("")
                .split(RECENT_ITEMS_SEPARATOR)
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                match self.product_index.get(item) {
                    Some(&p) => items.push(p),
                    None => self.unknown_items += 1,
                }
            }
            let mut target = match known {
                Some(c) => {
                    let mut t = known_target(a, c);
                    // The input's id (the bundle may only know its pseudonym).
                    t.id = id;
                    t.recent.extend(items.iter().copied());
                    t.bought.extend(items);
                    t
                }
                None => {
                    self.cold += 1;
                    Target {
                        id,
                        known: None,
                        recent: items.clone(),
                        bought: items,
                        viewed: Vec::new(),
                        attributes: attrs,
                    }
                }
            };
            target.bought.sort_unstable();
            target.bought.dedup();
            targets.push(target);
        }
        Ok(targets)
    }

    fn report(&self, manifest: &mut JobManifest) {
        if self.duplicates > 0 {
            manifest
                .rows_skipped
                .insert("duplicate customer id".into(), self.duplicates);
        }
        if self.unknown_items > 0 {
            manifest.counts.insert(
                "recent items not in the catalogue (ignored)".into(),
                self.unknown_items,
            );
        }
    }
}

/// A 64-bit fingerprint of an id (SipHash with fixed keys): new customers' ids are
/// remembered by it, so duplicate detection does not hold every id's text.
fn fingerprint(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same id gives the same value within a run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn file_spec(path: &Path) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        separator: None,
        has_header: true,
        column_names: Vec::new(),
    }
}

/// Opens `path` by the business's id column, or by `fallback` when it lacks that one (the
/// first error is the one reported).
fn with_id_fallback<T>(
    column: &str,
    fallback: &str,
    open: impl Fn(&str) -> Result<T, DataError>,
) -> Result<(T, String), DataError> {
    match open(column) {
        Ok(t) => Ok((t, column.to_string())),
        Err(first @ DataError::MissingColumn { .. }) if column != fallback => {
            match open(fallback) {
                Ok(t) => Ok((t, fallback.to_string())),
                Err(_) => Err(first),
            }
        }
        Err(e) => Err(e),
    }
}

/// Opens a file keyed by the business's id column (or `fallback`), to be read in pieces of
/// `rows_per_piece` rows.
fn open_with_id(
    path: &Path,
    column: &str,
    fallback: &str,
    optional: &[String],
    rows_per_piece: usize,
) -> Result<(TableChunks, String), DataError> {
    let spec = file_spec(path);
    with_id_fallback(column, fallback, |c| {
        TableChunks::open(path, &spec, &[c.to_string()], optional, rows_per_piece)
    })
}

/// Reads a file keyed by the business's id column (or `fallback`).
fn read_with_id(
    path: &Path,
    column: &str,
    fallback: &str,
    optional: &[String],
) -> Result<(Table, String), DataError> {
    let spec = file_spec(path);
    with_id_fallback(column, fallback, |c| {
        Table::read_with_optional(path, &spec, &[c.to_string()], optional)
    })
}

/// Reads a file of product ids (the business's product column, or `product_id`).
pub(crate) fn read_product_ids(path: &Path, column: &str) -> Result<(Table, String), DataError> {
    read_with_id(path, column, "product_id", &[])
}

/// The catalogue indices of the products listed in an exclusion file (by the product id column
/// of the business's files, or `product_id`); ids not in the catalogue are counted.
pub(crate) fn read_excluded(
    path: &Path,
    a: &RecommenderArtifacts,
    catalogue: &Catalogue,
    manifest: &mut JobManifest,
) -> Result<Vec<u32>, DataError> {
    let (table, column) = read_product_ids(path, &a.product_column)?;
    let index = catalogue.index();
    let mut blocked = Vec::new();
    let mut unknown = 0usize;
    for id in table.ids(&column)? {
        match index.get(id.as_str()) {
            Some(&p) => blocked.push(p),
            None => unknown += 1,
        }
    }
    blocked.sort_unstable();
    blocked.dedup();
    manifest
        .counts
        .insert("excluded_products".into(), blocked.len());
    if unknown > 0 {
        manifest
            .counts
            .insert("excluded_ids_not_in_catalogue".into(), unknown);
    }
    Ok(blocked)
}

/// Reads an opt-out list (the business's customer id column, or `customer_id`): customers who
/// get no personalised output.
/// With a pseudonymised bundle, each id's pseudonym is listed too (customers taken from the
/// bundle are known by their pseudonyms only).
pub(crate) fn read_opt_outs(
    path: &Path,
    loaded: &LoadedRecommender,
    manifest: &mut JobManifest,
) -> Result<HashSet<String>, DataError> {
    let a = &loaded.artifacts;
    let (table, column) = read_with_id(path, &a.customer_column, "customer_id", &[])?;
    let ids = table.ids(&column)?;
    manifest.counts.insert("opt_out_ids".into(), ids.len());
    let mut out: HashSet<String> = HashSet::with_capacity(ids.len() * 2);
    for id in ids {
        if let Some(p) = &loaded.pseudonymiser {
            out.insert(p.apply(&id));
        }
        out.insert(id);
    }
    Ok(out)
}

/// Drops opted-out customers from `targets`, counting them in the manifest.
pub(crate) fn drop_opted_out(
    targets: &mut Vec<Target>,
    opted_out: &HashSet<String>,
    manifest: &mut JobManifest,
) {
    if opted_out.is_empty() {
        return;
    }
    let before = targets.len();
    targets.retain(|t| !opted_out.contains(&t.id));
    if before > targets.len() {
        *manifest
            .rows_skipped
            .entry("opted out of personalisation".into())
            .or_default() += before - targets.len();
    }
}

/// One output row of `infer recommend`.
struct Recommendation<'a> {
    customer: &'a str,
    rank: i64,
    product: &'a str,
    score: f64,
    reason: String,
    segment: i64,
}

/// Output rows as a frame: `customer_id, rank, product_id, score, reason, segment`.
fn recommendation_frame(lines: &[Recommendation<'_>]) -> Result<DataFrame> {
    Ok(DataFrame::new(
        lines.len(),
        vec![
            Column::new(
                "customer_id".into(),
                lines.iter().map(|l| l.customer).collect::<Vec<_>>(),
            ),
            Column::new(
                "rank".into(),
                lines.iter().map(|l| l.rank).collect::<Vec<_>>(),
            ),
            Column::new(
                "product_id".into(),
                lines.iter().map(|l| l.product).collect::<Vec<_>>(),
            ),
            Column::new(
                "score".into(),
                lines.iter().map(|l| l.score).collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                lines.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "segment".into(),
                lines.iter().map(|l| l.segment).collect::<Vec<_>>(),
            ),
        ],
    )?)
}

/// What scoring a piece of customers needs: the model, the catalogue, the reasons and the
/// products no one is offered.
struct ScoringJob<'a> {
    loaded: &'a LoadedRecommender,
    catalogue: &'a Catalogue,
    explainer: Explainer<'a>,
    blocked: &'a [u32],
    top_k: usize,
}

impl ScoringJob<'_> {
    /// Scores `targets` in chunks on the device and writes their top K rows.
    fn score(&self, targets: &[Target], writer: &mut AtomicFrameWriter) -> Result<()> {
        let (loaded, catalogue) = (self.loaded, self.catalogue);
        let a = &loaded.artifacts;
        // Known customers' vectors come straight from the model; new customers' from their
        // attributes and recent items (fitted together, a few floats each).
        let known: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].known.is_some())
            .collect();
        let cold: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].known.is_none())
            .collect();
        let cold_vectors = if cold.is_empty() {
            None
        } else {
            let attrs: Vec<Vec<u32>> = cold
                .iter()
                .map(|&i| targets[i].attributes.clone())
                .collect();
            let recent: Vec<Vec<u32>> = cold.iter().map(|&i| targets[i].bought.clone()).collect();
            let vectors = loaded
                .new_customer_vectors(&attrs, &recent, catalogue)
                .context("placing new customers")?;
            let flat = to_vec_f32(vectors.clone())?;
            Some((vectors, flat))
        };
        let chunk = loaded
            .model
            .customers_per_chunk(catalogue.len(), SCORING_BUDGET_FLOATS);
        let d = catalogue.dim;
        for (group, is_new) in [(&known, false), (&cold, true)] {
            for (k, rows) in group.chunks(chunk).enumerate() {
                let u = match &cold_vectors {
                    Some((vectors, _)) if is_new => {
                        let idx: Vec<u32> = (k * chunk..k * chunk + rows.len())
                            .map(|x| x as u32)
                            .collect();
                        vectors.clone().select(0, ids_tensor(&idx, &loaded.device))
                    }
                    _ => {
                        let ids: Vec<u32> = rows.iter().filter_map(|&i| targets[i].known).collect();
                        loaded.model.customer_vectors(
                            ids_tensor(&ids, &loaded.device),
                            &loaded.customer_features,
                        )
                    }
                };
                let u = with_recent(loaded, u, rows, targets, catalogue);
                let exclude: Vec<&[u32]> =
                    rows.iter().map(|&i| targets[i].bought.as_slice()).collect();
                let top = loaded
                    .top_k_for_vectors(u, &exclude, self.blocked, catalogue, self.top_k)
                    .context("scoring customers")?;
                let mut lines: Vec<Recommendation> = Vec::with_capacity(rows.len() * self.top_k);
                for ((&i, list), j) in rows.iter().zip(top).zip(k * chunk..) {
                    let t = &targets[i];
                    let segment = match (&cold_vectors, t.known) {
                        (_, Some(c)) => a.segments.get(c as usize).copied().unwrap_or(0),
                        (Some((_, flat)), None) => {
                            nearest_segment(&a.segment_centroids, &flat[j * d..(j + 1) * d])
                        }
                        (None, None) => 0,
                    };
                    let context = CustomerContext {
                        bought: &t.bought,
                        viewed: &t.viewed,
                        segment,
                    };
                    for (r, &(p, score)) in list.iter().enumerate() {
                        lines.push(Recommendation {
                            customer: &t.id,
                            rank: r as i64 + 1,
                            product: &catalogue.ids[p as usize],
                            score: score as f64,
                            reason: self.explainer.reason(&context, p),
                            segment: segment as i64,
                        });
                    }
                }
                writer.write(&mut recommendation_frame(&lines)?)?;
            }
        }
        Ok(())
    }
}

/// Runs `infer recommend`.
pub fn recommend(opts: &RecommendOptions) -> Result<JobManifest> {
    let started = Instant::now();
    check_output_path(&opts.out)?;
    if opts.top_k == 0 {
        anyhow::bail!(DataError::Invalid("--top-k must be at least 1".into()));
    }
    if opts.input_piece_rows == 0 {
        anyhow::bail!(DataError::Invalid("--piece-rows must be at least 1".into()));
    }
    let selected = open_device("recommend", opts.device)?;
    let loaded = load_recommender(&opts.bundle, &selected.device)?;
    let a = &loaded.artifacts;
    let mut manifest = JobManifest::new(
        "recommend",
        &opts.out,
        &loaded.bundle,
        &selected.backend.to_string(),
        opts.shard,
    )?;
    let new_products = match &opts.new_products {
        Some(path) => read_new_products(path, a, &mut manifest)?,
        None => Vec::new(),
    };
    let catalogue = loaded.catalogue(&new_products)?;
    let n_p = catalogue.len();
    if opts.top_k > n_p {
        anyhow::bail!(DataError::TooLittleData(format!(
            "--top-k {} is larger than the catalogue ({n_p} products)",
            opts.top_k
        )));
    }
    let blocked = match &opts.exclude {
        Some(path) => read_excluded(path, a, &catalogue, &mut manifest)?,
        None => Vec::new(),
    };
    let job = ScoringJob {
        loaded: &loaded,
        catalogue: &catalogue,
        explainer: Explainer::new(a, &catalogue),
        blocked: &blocked,
        top_k: opts.top_k,
    };
    let opted_out = match &opts.opt_out {
        Some(path) => read_opt_outs(path, &loaded, &mut manifest)?,
        None => HashSet::new(),
    };
    let mut writer = AtomicFrameWriter::create(&opts.out, recommendation_frame(&[])?.schema())?;
    let (mut scored, mut scored_new) = (0usize, 0usize);
    // The customers come a piece at a time and each piece's rows are written once scored, so
    // memory grows neither with the customer list nor with the output.
    let mut score_piece =
        |mut targets: Vec<Target>, writer: &mut AtomicFrameWriter, manifest: &mut JobManifest| {
            if let Some((i, n)) = opts.shard {
                targets.retain(|t| shard_of(&t.id, n) == i);
            }
            drop_opted_out(&mut targets, &opted_out, manifest);
            scored += targets.len();
            scored_new += targets.iter().filter(|t| t.known.is_none()).count();
            job.score(&targets, writer)
        };
    let piece_rows = opts.input_piece_rows;
    match &opts.customers {
        None => {
            let n = a.customers.len();
            manifest.input_rows = n;
            for start in (0..n).step_by(piece_rows) {
                let targets = (start..(start + piece_rows).min(n))
                    .map(|c| known_target(a, c as u32))
                    .collect();
                score_piece(targets, &mut writer, &mut manifest)?;
            }
            manifest
                .counts
                .insert("new customers (cold start)".into(), 0);
        }
        Some(path) => {
            let mut optional = vec![RECENT_ITEMS_COLUMN.to_string()];
            if let Some(t) = &a.customer_attributes {
                optional.extend(attribute_columns(t));
            }
            let (pieces, id_column) = open_with_id(
                path,
                &a.customer_column,
                "customer_id",
                &optional,
                piece_rows,
            )?;
            let mut reader =
                CustomerListReader::new(a, loaded.pseudonymiser.as_ref(), &catalogue, id_column);
            for piece in pieces {
                let table = piece?;
                manifest.input_rows += table.len();
                let targets = reader.targets(&table)?;
                score_piece(targets, &mut writer, &mut manifest)?;
            }
            reader.report(&mut manifest);
            manifest
                .counts
                .insert("new customers (cold start)".into(), reader.cold);
        }
    }
    finish_output(writer, &opts.out, &mut manifest, started)?;
    crate::log::info(
        "recommend",
        &format!(
            "{} customers ({} new), {} rows written to {} ({:.1}s)",
            scored,
            scored_new,
            manifest.rows_written,
            opts.out.display(),
            manifest.duration_seconds
        ),
    );
    Ok(manifest)
}
