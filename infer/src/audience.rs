//! `infer audience`: the customers most likely to buy given products (or any product of a
//! category), for an email campaign or a push notification.
//!
//! Scored the same way as `recommend`, the other way round: one matrix product of all customer
//! vectors (chunk by chunk, with the recency term) with the chosen products' vectors. Customers
//! who already bought a product are not in its audience. With `--category`, a customer's score
//! is that of their best product of the category not bought yet, and the reason is given for
//! that product.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::DataError;
use shopcast_model::recommender::{ids_tensor, TopK};
use shopcast_model::DeviceChoice;

use crate::output::{check_output_path, open_device, write_output, JobManifest};
use crate::recommend::{
    drop_opted_out, known_targets, load_recommender, read_excluded, read_opt_outs, to_vec_f32,
    with_recent, Catalogue, CustomerContext, Explainer, LoadedRecommender, Target,
};

/// Options of `infer audience`: the customers most likely to buy given products, or a category,
/// for a campaign.
#[derive(Debug, Clone, clap::Args)]
pub struct AudienceOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// CSV or Parquet file with the product id column: one audience per product.
    #[arg(
        long,
        conflicts_with = "category",
        required_unless_present = "category"
    )]
    pub products: Option<PathBuf>,
    /// One audience for the products of this category (the products' primary attribute).
    #[arg(long)]
    pub category: Option<String>,
    /// Customers per audience.
    #[arg(long)]
    pub top: usize,
    /// Products to build no audience for (out of stock, withdrawn): the product id column.
    #[arg(long)]
    pub exclude: Option<PathBuf>,
    /// Customers who opted out of personalisation (the customer id column): never listed.
    #[arg(long)]
    pub opt_out: Option<PathBuf>,
    /// Output file, `.csv` or `.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Runs `infer audience`: the audiences asked for, every known customer scored against their
/// products, the best `--top` of each written with a reason.
pub fn audience(opts: &AudienceOptions) -> Result<JobManifest> {
    let started = Instant::now();
    check_output_path(&opts.out)?;
    if opts.top == 0 {
        anyhow::bail!(DataError::Invalid("--top must be at least 1".into()));
    }
    if opts.products.is_some() == opts.category.is_some() {
        anyhow::bail!(exactly_one());
    }
    let selected = open_device("audience", opts.device)?;
    let loaded = load_recommender(&opts.bundle, &selected.device)?;
    let mut manifest = JobManifest::new(
        "audience",
        &opts.out,
        &loaded.bundle,
        &selected.backend.to_string(),
        None,
    )?;
    let catalogue = loaded.catalogue(&[])?;
    let mut groups = audience_groups(opts, &loaded, &catalogue, &mut manifest)?;
    if let Some(path) = &opts.exclude {
        drop_excluded(&mut groups, path, &loaded, &catalogue, &mut manifest)?;
    }
    // `input_rows` stays the products (or category) asked for; the customers are a count.
    let mut targets = known_targets(&loaded.artifacts);
    if let Some(path) = &opts.opt_out {
        let opted_out = read_opt_outs(path, &loaded, &mut manifest)?;
        drop_opted_out(&mut targets, &opted_out, &mut manifest);
    }
    manifest
        .counts
        .insert("customers_scored".into(), targets.len());
    let audiences = best_customers(&loaded, &catalogue, &groups, &targets, opts.top)?;
    let mut df = audience_frame(opts, &loaded, &catalogue, &groups, &targets, audiences)?;
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    crate::log::info(
        "audience",
        &format!(
            "{} audience(s) of up to {} customers, {} rows written to {}",
            groups.len(),
            opts.top,
            manifest.rows_written,
            opts.out.display()
        ),
    );
    Ok(manifest)
}

fn exactly_one() -> DataError {
    DataError::Invalid("give exactly one of --products FILE and --category NAME".into())
}

/// An audience: its label (the product id, or the category) and its products.
type Group = (String, Vec<u32>);

/// The audiences asked for: one per product of `--products` that the bundle knows, or one for
/// the products of `--category`.
fn audience_groups(
    opts: &AudienceOptions,
    loaded: &LoadedRecommender,
    catalogue: &Catalogue,
    manifest: &mut JobManifest,
) -> Result<Vec<Group>> {
    let a = &loaded.artifacts;
    Ok(match (&opts.products, &opts.category) {
        (Some(path), _) => {
            let index = catalogue.index();
            let (table, column) = crate::recommend::read_product_ids(path, &a.product_column)?;
            let mut groups = Vec::new();
            let mut unknown = 0usize;
            for id in table.ids(&column)? {
                match index.get(id.as_str()) {
                    Some(&p) if !groups.iter().any(|(l, _): &(String, Vec<u32>)| *l == id) => {
                        groups.push((id, vec![p]))
                    }
                    Some(_) => {}
                    None => unknown += 1,
                }
            }
            manifest.input_rows = groups.len() + unknown;
            if unknown > 0 {
                manifest
                    .rows_skipped
                    .insert("product not in the bundle".into(), unknown);
            }
            if groups.is_empty() {
                anyhow::bail!(DataError::File {
                    path: path.clone(),
                    msg: "none of its products is in the bundle's catalogue".into(),
                });
            }
            groups
        }
        (None, Some(name)) => {
            let products: Vec<u32> = (0..catalogue.len() as u32)
                .filter(|&p| catalogue.primary[p as usize].as_deref() == Some(name.as_str()))
                .collect();
            if products.is_empty() {
                let mut known: Vec<&str> = catalogue
                    .primary
                    .iter()
                    .filter_map(|c| c.as_deref())
                    .collect();
                known.sort_unstable();
                known.dedup();
                anyhow::bail!(DataError::Invalid(format!(
                    "--category {name:?}: no product has it; categories: {}",
                    known.join(", ")
                )));
            }
            manifest.input_rows = 1;
            vec![(name.clone(), products)]
        }
        (None, None) => anyhow::bail!(exactly_one()),
    })
}

/// Blocked products get no audience (a category keeps its other products).
fn drop_excluded(
    groups: &mut Vec<Group>,
    path: &Path,
    loaded: &LoadedRecommender,
    catalogue: &Catalogue,
    manifest: &mut JobManifest,
) -> Result<()> {
    let blocked = read_excluded(path, &loaded.artifacts, catalogue, manifest)?;
    let before = groups.len();
    for (_, products) in groups.iter_mut() {
        products.retain(|p| blocked.binary_search(p).is_err());
    }
    groups.retain(|(_, products)| !products.is_empty());
    if before > groups.len() {
        manifest
            .rows_skipped
            .insert("product excluded".into(), before - groups.len());
    }
    if groups.is_empty() {
        anyhow::bail!(DataError::Invalid(format!(
            "every product asked for is in the exclusion list {}",
            path.display()
        )));
    }
    Ok(())
}

/// Per audience, the best `top` customers (index, score) with the product of the audience that
/// scored best for them (products they bought left out).
fn best_customers(
    loaded: &LoadedRecommender,
    catalogue: &Catalogue,
    groups: &[Group],
    targets: &[Target],
    top: usize,
) -> Result<Vec<TopK<u32>>> {
    let mut selected_products: Vec<u32> = groups.iter().flat_map(|(_, p)| p.clone()).collect();
    selected_products.sort_unstable();
    selected_products.dedup();
    let column_of = |p: u32| selected_products.binary_search(&p).unwrap_or(0);
    let matrix = {
        let idx = ids_tensor(&selected_products, &loaded.device);
        loaded.model.product_matrix(
            catalogue.matrix.vectors().select(0, idx.clone()),
            catalogue.matrix.biases().select(0, idx),
        )
    };

    let n_sel = selected_products.len();
    let chunk = loaded.model.customers_per_chunk(n_sel);
    // Per group, the best customers (index, score) with the product that scored.
    let mut audiences: Vec<TopK<u32>> = vec![TopK::new(top); groups.len()];
    let rows: Vec<usize> = (0..targets.len()).collect();
    for rows in rows.chunks(chunk) {
        let ids: Vec<u32> = rows.iter().filter_map(|&i| targets[i].known).collect();
        let u = loaded
            .model
            .customer_vectors(ids_tensor(&ids, &loaded.device), &loaded.customer_features);
        let u = with_recent(loaded, u, rows, targets, catalogue);
        let scores = to_vec_f32(loaded.model.score_all(u, &matrix)).context("scoring")?;
        for (r, &i) in rows.iter().enumerate() {
            let bought = &targets[i].bought;
            for ((_, products), audience) in groups.iter().zip(audiences.iter_mut()) {
                let best = products
                    .iter()
                    .filter(|p| bought.binary_search(p).is_err())
                    .map(|&p| (scores[r * n_sel + column_of(p)], p))
                    .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
                let Some((score, product)) = best else {
                    continue;
                };
                audience.offer(i as u32, score, product);
            }
        }
    }

    Ok(audiences)
}

/// The output rows: per audience, rank, customer, score and the reason.
fn audience_frame(
    opts: &AudienceOptions,
    loaded: &LoadedRecommender,
    catalogue: &Catalogue,
    groups: &[Group],
    targets: &[Target],
    audiences: Vec<TopK<u32>>,
) -> Result<DataFrame> {
    let a = &loaded.artifacts;
    let explainer = Explainer::new(a, catalogue);
    let label_column = if opts.category.is_some() {
        "category"
    } else {
        "product_id"
    };
    let (mut c_label, mut c_rank, mut c_customer, mut c_score, mut c_reason) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((label, _), audience) in groups.iter().zip(audiences) {
        for (r, (customer, score, product)) in audience.into_sorted().into_iter().enumerate() {
            let t = &targets[customer as usize];
            let segment = t
                .known
                .and_then(|k| a.segments.get(k as usize).copied())
                .unwrap_or(0);
            let context = CustomerContext {
                bought: &t.bought,
                viewed: &t.viewed,
                segment,
            };
            c_label.push(label.clone());
            c_rank.push(r as i64 + 1);
            c_customer.push(t.id.clone());
            c_score.push(score as f64);
            c_reason.push(explainer.reason(&context, product));
        }
    }
    let n = c_label.len();
    let df = DataFrame::new(
        n,
        vec![
            Column::new(label_column.into(), c_label),
            Column::new("rank".into(), c_rank),
            Column::new("customer_id".into(), c_customer),
            Column::new("score".into(), c_score),
            Column::new("reason".into(), c_reason),
        ],
    )?;
    Ok(df)
}
