//! Batch scoring as `infer recommend` does it (`Recommender::top_k_excluding`, the same call):
//! customers in chunks, one matrix product of the chunk's customer vectors with the product
//! matrix, top-k selected on the device, already-bought products left out. 100k customers x 20k products x
//! embedding 64 (the shape), against a plain matrix product of the same shapes and
//! chunks measured in the same run; the ratio of the two rates is what to compare.
//!
//! `cargo bench --workspace --bench scoring` (`SHOPCAST_BENCH_DEVICE=wgpu` or `ndarray` for
//! other backends; `SHOPCAST_BENCH_CUSTOMERS` to change the number of customers).

use std::time::Instant;

use shopcast_model::recommender::ids_tensor;
use shopcast_model::{select_device, DeviceChoice, EntityFeatures, RecommenderConfig};

const PRODUCTS: usize = 20_000;
const DIM: usize = 64;
const TOP_K: usize = 10;
/// Products each customer has bought (masked).
const BOUGHT: usize = 20;

fn main() {
    let choice = std::env::var("SHOPCAST_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let customers: usize = std::env::var("SHOPCAST_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let selected = match choice.parse::<DeviceChoice>().and_then(select_device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let device = selected.device;
    device.seed(3);
    let config = RecommenderConfig::new(customers, PRODUCTS, 1, 1).with_embedding_dim(DIM);
    let model = config.init(&device);
    // No attribute tokens: padding only (token 0), as for a shop without attributes.
    let no_tokens = |n: usize| EntityFeatures::new(vec![0; n], 1, &device);
    let (customer_features, product_features) = (no_tokens(customers), no_tokens(PRODUCTS));
    let all_products: Vec<u32> = (0..PRODUCTS as u32).collect();
    let product_ids = ids_tensor(&all_products, &device);
    let matrix = model.product_matrix(
        model.product_vectors(product_ids.clone(), &product_features),
        model.product_biases(product_ids),
    );
    let chunk = model.customers_per_chunk(PRODUCTS);
    let product_t = matrix.vectors().transpose();

    println!("device: {}", selected.backend);
    println!(
        "{customers} customers x {PRODUCTS} products x embedding {DIM}, top-{TOP_K}, {BOUGHT} bought products masked per customer, {chunk} customers per chunk"
    );
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _round in 0..3 {
        // Scoring as the job does it.
        let t = Instant::now();
        let mut checksum = 0f64;
        for start in (0..customers).step_by(chunk) {
            let rows = chunk.min(customers - start);
            let ids: Vec<u32> = (start..start + rows).map(|c| c as u32).collect();
            let u = model.customer_vectors(ids_tensor(&ids, &device), &customer_features);
            // Each customer's bought products, as the job passes them.
            let bought: Vec<Vec<u32>> = (0..rows)
                .map(|r| {
                    (0..BOUGHT)
                        .map(|b| (((start + r) * 7919 + b * 104_729) % PRODUCTS) as u32)
                        .collect()
                })
                .collect();
            let lists: Vec<&[u32]> = bought.iter().map(Vec::as_slice).collect();
            let top = model
                .top_k_excluding(u, &matrix, &lists, &[], TOP_K)
                .unwrap_or_default();
            checksum += top.iter().map(|l| l.len()).sum::<usize>() as f64;
        }
        let scoring = t.elapsed().as_secs_f64();
        // The reference: the same products of the same chunks, nothing else (synced per chunk
        // by reading one value back).
        let t = Instant::now();
        for start in (0..customers).step_by(chunk) {
            let rows = chunk.min(customers - start);
            let ids: Vec<u32> = (start..start + rows).map(|c| c as u32).collect();
            let u = model.customer_vectors(ids_tensor(&ids, &device), &customer_features);
            let scores = u.matmul(product_t.clone());
            let corner = scores.slice([0..1, 0..1]).into_data().convert::<f32>();
            checksum += corner.try_into_vec::<f32>().unwrap_or_default().len() as f64;
        }
        let reference = t.elapsed().as_secs_f64();
        std::hint::black_box(checksum);
        best = (best.0.min(scoring), best.1.min(reference));
    }
    let (scoring, reference) = best;
    let gflop = 2.0 * customers as f64 * PRODUCTS as f64 * DIM as f64 / 1e9;
    println!(
        "scoring:        {:.2} s, {:.0} customers/s",
        scoring,
        customers as f64 / scoring
    );
    println!(
        "plain matmul:   {:.2} s, {:.0} customers/s ({:.1} GFLOP/s)",
        reference,
        customers as f64 / reference,
        gflop / reference
    );
    println!(
        "scoring rate / matmul rate: {:.2} (target >= 0.70; best of 3 rounds each)",
        reference / scoring
    );
}
