//! The data side of a bundle: id vocabularies, attribute tokens, customer histories, segments
//! and the recent history of every series. `train` writes these as JSON beside the weights and
//! `infer` reads them back, so scoring needs the bundle alone.

use serde::{Deserialize, Serialize};

use crate::config::AttributeTable;
use crate::exp_smoothing::EtsModel;
use crate::interactions::FeatureSet;
use crate::vocab::IdVocab;
use crate::windows::WindowSpec;

/// File names inside a bundle.
pub mod files {
    pub const RECOMMENDER_WEIGHTS: &str = "recommender.bpk";
    pub const RECOMMENDER_CONFIG: &str = "recommender.config.json";
    pub const RECOMMENDER_TRAINING: &str = "recommender.training.json";
    /// The recommender's data side: this JSON header and the Parquet tables below
    /// (`artifact_tables` says what each holds).
    pub const RECOMMENDER_ARTIFACTS: &str = "recommender.vocab.json";
    pub const RECOMMENDER_CUSTOMERS: &str = "recommender.customers.parquet";
    pub const RECOMMENDER_PRODUCTS: &str = "recommender.products.parquet";
    pub const RECOMMENDER_HISTORIES: &str = "recommender.histories.parquet";
    pub const RECOMMENDER_CUSTOMER_TOKENS: &str = "recommender.customer_tokens.parquet";
    pub const RECOMMENDER_PRODUCT_TOKENS: &str = "recommender.product_tokens.parquet";
    /// The Parquet tables, in the order they are written.
    pub const RECOMMENDER_TABLES: [&str; 5] = [
        RECOMMENDER_CUSTOMERS,
        RECOMMENDER_PRODUCTS,
        RECOMMENDER_HISTORIES,
        RECOMMENDER_CUSTOMER_TOKENS,
        RECOMMENDER_PRODUCT_TOKENS,
    ];
    pub const FORECASTER_WEIGHTS: &str = "forecaster.bpk";
    pub const FORECASTER_CONFIG: &str = "forecaster.config.json";
    pub const FORECASTER_TRAINING: &str = "forecaster.training.json";
    /// The forecaster's data side: this JSON header (per series its keys, statics, first day and
    /// exponential smoothing) and the Parquet table of the series' periods.
    pub const FORECASTER_ARTIFACTS: &str = "forecaster.series.json";
    pub const FORECASTER_PERIODS: &str = "forecaster.periods.parquet";
    pub const FORECASTER_SERIES_METRICS: &str = "forecaster.series_metrics.json";
    /// What each model was trained on, for `infer monitor`.
    pub const RECOMMENDER_PROFILE: &str = "recommender.data_profile.json";
    pub const FORECASTER_PROFILE: &str = "forecaster.data_profile.json";
    pub const METRICS: &str = "metrics.json";
    pub const SEGMENTS: &str = "recommender.segments.json";
    /// Test metrics per customer group.
    pub const RECOMMENDER_GROUP_METRICS: &str = "recommender.group_metrics.json";
    /// The model card (Markdown).
    pub const MODEL_CARD: &str = "MODEL_CARD.md";
    /// The run report (self-contained HTML).
    pub const REPORT: &str = "report.html";
}

/// How the keys of `metrics.json` are spelt: `<prefix><metric>`, lower case (listed in
/// `docs/bundle.md`). Every writer and reader of the keys goes through these.
pub mod metric_keys {
    pub const RECOMMENDER: &str = "recommender.";
    pub const POPULARITY: &str = "baseline.popularity.";
    pub const ITEMKNN: &str = "baseline.itemknn.";
    pub const FORECASTER: &str = "forecaster.";
    pub const SEASONAL_NAIVE: &str = "baseline.seasonal_naive.";
    pub const MOVING_AVERAGE: &str = "baseline.moving_average.";
    pub const ETS: &str = "baseline.ets.";

    /// The recommender and its baselines: (name in tables, key prefix).
    pub const RECOMMENDER_METHODS: [(&str, &str); 3] = [
        ("model", RECOMMENDER),
        ("popularity", POPULARITY),
        ("item-kNN", ITEMKNN),
    ];
    /// The forecaster and its baselines: (name in tables, key prefix).
    pub const FORECASTER_METHODS: [(&str, &str); 4] = [
        ("forecaster", FORECASTER),
        ("seasonal naive", SEASONAL_NAIVE),
        ("moving average", MOVING_AVERAGE),
        ("exp. smoothing", ETS),
    ];

    /// The prefix of a forecasting method's keys, by its name in the per-series metrics
    /// (`forecaster`, `seasonal_naive`, `moving_average`, `ets`).
    pub fn forecast_method_prefix(method: &str) -> String {
        if method == "forecaster" {
            FORECASTER.to_string()
        } else {
            format!("baseline.{method}.")
        }
    }
}

/// What a customer segment looks like, for campaigns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentProfile {
    pub segment: u32,
    pub customers: usize,
    /// Most bought values of the products' primary attribute (e.g. category), with shares.
    pub top_categories: Vec<(String, f64)>,
    /// Mean number of distinct products per customer.
    pub mean_products: f64,
    /// Mean total value of a member's purchases (when the data has a value or unit price).
    #[serde(default)]
    pub average_spend: Option<f64>,
    /// Most popular products in the segment (product indices).
    pub top_products: Vec<u32>,
}

fn product_id_column() -> String {
    "product_id".into()
}

/// Everything `infer recommend` needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommenderArtifacts {
    /// Column name of the customer id in the business's files (for customer lists).
    pub customer_column: String,
    /// Column name of the product id (for files of new products).
    #[serde(default = "product_id_column")]
    pub product_column: String,
    /// How customer and product attributes were read, so that new customers and products can be
    /// encoded the same way at scoring time.
    #[serde(default)]
    pub customer_attributes: Option<AttributeTable>,
    #[serde(default)]
    pub product_attributes: Option<AttributeTable>,
    /// Customer ids, or their pseudonyms when `pseudonyms` is set. This and every other field
    /// marked `serde(skip)` grow with the shop: they are kept in the bundle's Parquet tables
    /// (`artifact_tables`), not in the JSON header.
    #[serde(skip)]
    pub customers: IdVocab,
    /// Set when `customers` holds salted hashes of the ids (see `privacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonyms: Option<crate::privacy::PseudonymInfo>,
    #[serde(skip)]
    pub products: IdVocab,
    pub customer_features: FeatureSet,
    pub product_features: FeatureSet,
    #[serde(skip)]
    pub product_names: Vec<String>,
    /// Per customer, products they bought (target events), sorted.
    #[serde(skip)]
    pub purchased: Vec<Vec<u32>>,
    /// Per customer, products they only viewed or carted, sorted.
    #[serde(skip)]
    pub browsed: Vec<Vec<u32>>,
    /// Per product, the number of customers who interacted with it.
    #[serde(skip)]
    pub popularity: Vec<u32>,
    /// Per customer, their latest purchases (oldest first), for the recency term.
    #[serde(skip)]
    pub recent: Vec<Vec<u32>>,
    /// How many latest purchases the recency term averages (`model.recent_items`).
    #[serde(default)]
    pub recent_items: usize,
    /// Weight of the recency term (chosen on validation data; 0 = off).
    #[serde(default)]
    pub recency_weight: f32,
    /// Segment of each customer.
    #[serde(skip)]
    pub segments: Vec<u32>,
    /// Centre of each segment in the customer-vector space (to place new customers).
    #[serde(default)]
    pub segment_centroids: Vec<Vec<f32>>,
    pub segment_profiles: Vec<SegmentProfile>,
}

/// The recent history of one series, enough to build the next forecast window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesTail {
    pub keys: Vec<u32>,
    /// Static attribute indices (see [`ForecasterArtifacts::static_vocabs`]).
    #[serde(default)]
    pub statics: Vec<u32>,
    /// Day number of the first period of the tail.
    pub first_day: i64,
    /// Target per period (NaN stored as null). This and the covariates below are kept in the
    /// bundle's Parquet table of periods (`artifact_tables`), not in the JSON header.
    #[serde(skip)]
    pub target: Vec<Option<f32>>,
    /// Per known covariate, its value per period.
    #[serde(skip)]
    pub known: Vec<Vec<f32>>,
    /// Per past covariate, its value per period.
    #[serde(skip)]
    pub past: Vec<Vec<f32>>,
    /// The series' exponential smoothing, its state at the tail's first period.
    #[serde(default)]
    pub ets: Option<EtsModel>,
}

/// Everything `infer forecast` needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForecasterArtifacts {
    pub spec: WindowSpec,
    pub key_names: Vec<String>,
    pub key_vocabs: Vec<IdVocab>,
    /// Static attribute columns (e.g. category) and their vocabularies.
    #[serde(default)]
    pub static_names: Vec<String>,
    #[serde(default)]
    pub static_vocabs: Vec<IdVocab>,
    pub date_column: String,
    pub quantiles: Vec<f64>,
    /// Index of the price among the known covariates, for expected revenue.
    pub price_covariate: Option<usize>,
    /// Per quantile, the network's weight against the exponential smoothing anchor (chosen on
    /// validation data; empty means the network alone).
    #[serde(default)]
    pub network_weights: Vec<f32>,
    pub series: Vec<SeriesTail>,
}

impl ForecasterArtifacts {
    /// Output column name of a quantile: `p` + percent (`p10`, `p50`, `p97.5`).
    pub fn quantile_column(q: f64) -> String {
        let pct = q * 100.0;
        if (pct - pct.round()).abs() < 1e-9 {
            format!("p{}", pct.round() as i64)
        } else {
            format!("p{}", (pct * 1000.0).round() / 1000.0)
        }
    }
}

/// A stable shard of an id: FNV-1a hash modulo `shards` (the same on every machine and run).
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as u32
}
