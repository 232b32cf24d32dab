//! The `recommend` job: options, the scoring loop over customers (known ones from the bundle or
//! a customer list read piece by piece), and the output rows streamed into the atomic writer.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::artifacts::shard_of;
use shopcast_datasets::interactions::attribute_columns;
use shopcast_datasets::table::AtomicFrameWriter;
use shopcast_datasets::DataError;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::DeviceChoice;

use super::catalogue::{read_new_products, Catalogue};
use super::explain::{nearest_segment, CustomerContext, Explainer};
use super::inputs::{
    drop_opted_out, open_with_id, read_excluded, read_opt_outs, CustomerListReader,
    RECENT_ITEMS_COLUMN,
};
use super::load::{load_recommender, to_vec_f32, LoadedRecommender};
use super::targets::{known_target, with_recent, Target};
use crate::output::{check_output_path, finish_output, open_device, JobManifest, ShardArgs};

/// Options of `infer recommend`: top-K products per customer, with a reason and a segment.
#[derive(Debug, Clone, clap::Args)]
pub struct RecommendOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// CSV or Parquet file with the customers to score (default: every known customer).
    /// Customers the bundle has not seen are scored from the attribute columns the config reads
    /// for customers and/or a `recent_items` column (product ids separated by `|`).
    #[arg(long)]
    pub customers: Option<PathBuf>,
    /// CSV or Parquet file of products not in the bundle: the product id column and the
    /// attribute columns the config reads for products. They are ranked alongside the rest.
    #[arg(long)]
    pub new_products: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// CSV or Parquet file of products to recommend to no one (out of stock, withdrawn): the
    /// product id column.
    #[arg(long)]
    pub exclude: Option<PathBuf>,
    /// CSV or Parquet file of customers who opted out of personalisation (the customer id
    /// column): they get no rows.
    #[arg(long)]
    pub opt_out: Option<PathBuf>,
    /// Output file, `.csv` or `.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Customers read and scored per piece of the customer list (bounds memory).
    #[arg(long = "piece-rows", value_name = "N", default_value_t = INPUT_PIECE_ROWS)]
    pub input_piece_rows: usize,
}

/// Default customers per piece of a customer list.
pub const INPUT_PIECE_ROWS: usize = 100_000;

/// One output row of `infer recommend`.
pub(crate) struct Recommendation<'a> {
    customer: &'a str,
    rank: i64,
    product: &'a str,
    score: f64,
    reason: String,
    segment: i64,
}

/// Output rows as a frame: `customer_id, rank, product_id, score, reason, segment`.
pub(crate) fn recommendation_frame(lines: &[Recommendation<'_>]) -> Result<DataFrame> {
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
pub(crate) struct ScoringJob<'a> {
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
        let chunk = loaded.model.customers_per_chunk(catalogue.len());
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
    let shard = opts.shard.resolve()?;
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
        shard,
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
            if let Some((i, n)) = shard {
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
