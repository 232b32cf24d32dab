//! `infer recommend`: top-K products per customer from a bundle, with a reason and a segment.
//!
//! Customers are scored in chunks on the device: one matrix product of the chunk's customer
//! vectors with the product matrix, already-bought products masked, and the top K selected on
//! the device; only the top K come back.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::prelude::*;
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::artifacts::{files, shard_of, RecommenderArtifacts};
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::Table;
use shopcast_datasets::DataError;
use shopcast_model::{
    select_device, Bundle, BundleError, DeviceChoice, EntityFeatures, Recommender,
    RecommenderConfig,
};

use shopcast_model::recommender::ids_tensor;

use crate::output::{check_output_path, write_output, JobManifest};

/// Customers scored per matrix product.
const CHUNK: usize = 1024;
/// Cosine similarity above which "because you bought X" is given.
const SIMILAR_ENOUGH: f32 = 0.35;

/// Options of `infer recommend`.
#[derive(Debug, Clone)]
pub struct RecommendOptions {
    pub bundle: PathBuf,
    pub customers: Option<PathBuf>,
    pub top_k: usize,
    pub out: PathBuf,
    pub shard: Option<(u32, u32)>,
    pub device: DeviceChoice,
}

/// A loaded recommender: model, features on the device, and the bundle's side data.
pub struct LoadedRecommender {
    pub bundle: Bundle,
    pub model: Recommender,
    pub artifacts: RecommenderArtifacts,
    pub customer_features: EntityFeatures,
    pub product_features: EntityFeatures,
    pub device: Device,
}

fn bundle_invalid(bundle: &Bundle, msg: String) -> anyhow::Error {
    BundleError::Invalid {
        dir: bundle.dir.clone(),
        msg,
    }
    .into()
}

/// Opens a bundle's recommender on a device.
pub fn load_recommender(dir: &std::path::Path, device: &Device) -> Result<LoadedRecommender> {
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
    let (ct, cw) = artifacts.customer_features.padded();
    let (pt, pw) = artifacts.product_features.padded();
    Ok(LoadedRecommender {
        customer_features: EntityFeatures::new(ct, cw, device),
        product_features: EntityFeatures::new(pt, pw, device),
        bundle,
        model,
        artifacts,
        device: device.clone(),
    })
}

/// One recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub customer: u32,
    pub rank: usize,
    pub product: u32,
    pub score: f32,
}

impl LoadedRecommender {
    /// Top-`k` products for each customer (already-bought products masked), best first.
    pub fn top_k(&self, customers: &[u32], k: usize) -> Result<Vec<Recommendation>> {
        let n_p = self.artifacts.products.len();
        let all: Vec<u32> = (0..n_p as u32).collect();
        let products = ids_tensor(&all, &self.device);
        let item_matrix = self
            .model
            .product_vectors(products.clone(), &self.product_features)
            .transpose();
        let bias = self.model.product_biases(products).unsqueeze_dim::<2>(0);
        let mut out = Vec::with_capacity(customers.len() * k);
        for chunk in customers.chunks(CHUNK) {
            let u = self
                .model
                .customer_vectors(ids_tensor(chunk, &self.device), &self.customer_features);
            let mut mask = vec![false; chunk.len() * n_p];
            for (row, &c) in chunk.iter().enumerate() {
                for &p in &self.artifacts.purchased[c as usize] {
                    mask[row * n_p + p as usize] = true;
                }
            }
            let mask = Tensor::<2, Bool>::from_data(
                TensorData::new(mask, [chunk.len(), n_p]),
                &self.device,
            );
            let scores = (u.matmul(item_matrix.clone()) + bias.clone()).mask_fill(mask, -1.0e30);
            let (values, indices) = scores.topk_with_indices(k, 1);
            let values = values
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading scores from the device: {e:?}"))?;
            let indices = indices
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| anyhow::anyhow!("reading indices from the device: {e:?}"))?;
            for (row, &c) in chunk.iter().enumerate() {
                for r in 0..k {
                    let score = values[row * k + r];
                    if score <= -1.0e29 {
                        break; // fewer than k products left that the customer has not bought
                    }
                    out.push(Recommendation {
                        customer: c,
                        rank: r + 1,
                        product: indices[row * k + r] as u32,
                        score,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Product vectors on the CPU, normalised to unit length (for explanations).
    pub fn unit_product_vectors(&self) -> Result<(Vec<f32>, usize)> {
        let n_p = self.artifacts.products.len();
        let all: Vec<u32> = (0..n_p as u32).collect();
        let v = self
            .model
            .product_vectors(ids_tensor(&all, &self.device), &self.product_features);
        let d = v.dims()[1];
        let mut flat = v
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading product vectors: {e:?}"))?;
        for row in flat.chunks_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Ok((flat, d))
    }
}

/// Writes readable reasons for recommendations.
pub struct Explainer<'a> {
    artifacts: &'a RecommenderArtifacts,
    unit: Vec<f32>,
    d: usize,
    segment_top: Vec<HashSet<u32>>,
}

impl<'a> Explainer<'a> {
    pub fn new(loaded: &'a LoadedRecommender) -> Result<Self> {
        let (unit, d) = loaded.unit_product_vectors()?;
        let segment_top = loaded
            .artifacts
            .segment_profiles
            .iter()
            .map(|p| p.top_products.iter().copied().collect())
            .collect();
        Ok(Explainer {
            artifacts: &loaded.artifacts,
            unit,
            d,
            segment_top,
        })
    }

    fn cosine(&self, a: u32, b: u32) -> f32 {
        let (a, b) = (a as usize * self.d, b as usize * self.d);
        self.unit[a..a + self.d]
            .iter()
            .zip(&self.unit[b..b + self.d])
            .map(|(x, y)| x * y)
            .sum()
    }

    /// The reason for recommending `product` to `customer`.
    pub fn reason(&self, customer: u32, product: u32) -> String {
        let a = self.artifacts;
        let c = customer as usize;
        let best = a.purchased[c]
            .iter()
            .map(|&p| (p, "bought"))
            .chain(a.browsed[c].iter().map(|&p| (p, "viewed")))
            .filter(|(p, _)| *p != product)
            .map(|(p, verb)| (self.cosine(p, product), p, verb))
            .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
        if let Some((sim, p, verb)) = best {
            if sim >= SIMILAR_ENOUGH {
                return format!("because you {verb} {}", a.product_names[p as usize]);
            }
        }
        let segment = a.segments.get(c).copied().unwrap_or(0) as usize;
        if self
            .segment_top
            .get(segment)
            .is_some_and(|s| s.contains(&product))
        {
            return "popular with customers like you".into();
        }
        let features = &a.product_features;
        if let Some(category) = features.primary_value(product as usize) {
            let buys_there = a.purchased[c]
                .iter()
                .chain(&a.browsed[c])
                .any(|&p| features.primary_value(p as usize) == Some(category));
            if buys_there {
                if a.popularity[product as usize] == 0 {
                    return format!("new in a category you buy: {category}");
                }
                return format!("more from {category}, a category you buy");
            }
        }
        "matches what customers like you buy".into()
    }
}

/// Runs `infer recommend`.
pub fn recommend(opts: &RecommendOptions) -> Result<JobManifest> {
    let started = Instant::now();
    check_output_path(&opts.out)?;
    if opts.top_k == 0 {
        anyhow::bail!(DataError::Invalid("--top-k must be at least 1".into()));
    }
    let selected = select_device(opts.device).map_err(DataError::Invalid)?;
    if let Some(note) = &selected.note {
        eprintln!("warning: {note}");
    }
    let loaded = load_recommender(&opts.bundle, &selected.device)?;
    let a = &loaded.artifacts;
    let n_p = a.products.len();
    if opts.top_k > n_p {
        anyhow::bail!(DataError::TooLittleData(format!(
            "--top-k {} is larger than the catalogue ({n_p} products)",
            opts.top_k
        )));
    }
    let mut manifest = JobManifest::new(
        "recommend",
        &opts.out,
        &loaded.bundle,
        &selected.backend.to_string(),
        opts.shard,
    )?;
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let requested: Vec<u32> = match &opts.customers {
        None => (0..a.customers.len() as u32).collect(),
        Some(path) => {
            let (table, name) = read_customer_list(path, &a.customer_column)?;
            let ids = table.ids(&name)?;
            manifest.input_rows = ids.len();
            let mut seen = HashSet::new();
            let mut list = Vec::with_capacity(ids.len());
            for id in &ids {
                match a.customers.get(id) {
                    Some(c) if seen.insert(c) => list.push(c),
                    Some(_) => *skipped.entry("duplicate customer id".into()).or_default() += 1,
                    None => {
                        *skipped
                            .entry("customer not in the training data".into())
                            .or_default() += 1
                    }
                }
            }
            list
        }
    };
    if opts.customers.is_none() {
        manifest.input_rows = requested.len();
    }
    let customers: Vec<u32> = match opts.shard {
        Some((i, n)) => requested
            .into_iter()
            .filter(|&c| shard_of(a.customers.id(c), n) == i)
            .collect(),
        None => requested,
    };
    let recs = loaded
        .top_k(&customers, opts.top_k)
        .context("scoring customers")?;
    let explainer = Explainer::new(&loaded)?;
    let n = recs.len();
    let (mut c_id, mut c_rank, mut c_prod, mut c_score, mut c_reason, mut c_seg) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in &recs {
        c_id.push(a.customers.id(r.customer).to_string());
        c_rank.push(r.rank as i64);
        c_prod.push(a.products.id(r.product).to_string());
        c_score.push(r.score as f64);
        c_reason.push(explainer.reason(r.customer, r.product));
        c_seg.push(a.segments.get(r.customer as usize).copied().unwrap_or(0) as i64);
    }
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new("customer_id".into(), c_id),
            Column::new("rank".into(), c_rank),
            Column::new("product_id".into(), c_prod),
            Column::new("score".into(), c_score),
            Column::new("reason".into(), c_reason),
            Column::new("segment".into(), c_seg),
        ],
    )?;
    manifest.rows_skipped = skipped;
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    eprintln!(
        "recommend: {} customers, {} rows written to {} ({:.1}s)",
        customers.len(),
        manifest.rows_written,
        opts.out.display(),
        manifest.duration_seconds
    );
    Ok(manifest)
}

/// Reads a customer list: the id column is the business's customer column or `customer_id`.
fn read_customer_list(path: &std::path::Path, column: &str) -> Result<(Table, String), DataError> {
    let spec = FileSpec {
        path: path.to_path_buf(),
        separator: None,
        has_header: true,
        column_names: Vec::new(),
    };
    match Table::read(path, &spec, &[column.to_string()]) {
        Ok(t) => Ok((t, column.to_string())),
        Err(first @ DataError::MissingColumn { .. }) if column != "customer_id" => {
            match Table::read(path, &spec, &["customer_id".to_string()]) {
                Ok(t) => Ok((t, "customer_id".to_string())),
                Err(_) => Err(first),
            }
        }
        Err(e) => Err(e),
    }
}
