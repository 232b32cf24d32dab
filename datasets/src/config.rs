//! The per-business configuration file (`configs/*.toml`).
//!
//! One TOML file maps a business's own files and column names onto what shopcast needs, and holds
//! every hyperparameter, the device and the seed. Unknown keys and wrong types are errors that name
//! the key; out-of-range values are caught by [`ShopConfig::check`], which makes the [`CheckedConfig`]
//! the jobs take.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Environment variable that overrides `business.data_dir`.
pub const DATA_DIR_ENV: &str = "SHOPCAST_DATA_DIR";

/// Declares a config value with a fixed set of choices: a serde enum spelt in snake_case in the
/// TOML file and the bundle's JSON, with the first variant as the default.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $default:ident => $default_text:literal $(, $variant:ident => $text:literal)* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            #[default]
            $default,
            $($variant,)*
        }

        impl $name {
            /// The spelling used in config files and bundles.
            pub fn as_str(self) -> &'static str {
                match self {
                    Self::$default => $default_text,
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice! {
    /// `business.device`: where training and scoring run (`auto`: a GPU through WGPU when one is
    /// present, else the CPU backend `flex`).
    DeviceName { Auto => "auto", Flex => "flex", Ndarray => "ndarray", Wgpu => "wgpu" }
}
choice! {
    /// `demo.format`: the file format of the generated demo shop.
    DemoFormat { Csv => "csv", Parquet => "parquet" }
}
choice! {
    /// `recommender.model.architecture`: `two_tower` (dot product of hybrid vectors), `neumf`
    /// (GMF + MLP over the same hybrid vectors), `sequential` (the customer vector read by
    /// self-attention from their latest baskets, `[recommender.sequence]`), or `auto` (train
    /// all three, keep the one with the best validation NDCG@10).
    Architecture { TwoTower => "two_tower", Neumf => "neumf", Sequential => "sequential", Auto => "auto" }
}
choice! {
    /// `recommender.training.negative_sampling`: negatives drawn uniformly or in proportion to
    /// count^0.75.
    NegativeSampling { Uniform => "uniform", Popularity => "popularity" }
}
choice! {
    /// `recommender.training.loss`: sampled binary cross-entropy or BPR.
    RankingLoss { Bce => "bce", Bpr => "bpr" }
}
choice! {
    /// `recommender.training.optimizer`: how the id tables (a row per customer and per product)
    /// are trained. `lazy_adam` (the default) updates only the rows a batch read, making up their
    /// missed momentum steps when they are next read (the step costs the batch, not the tables);
    /// `adam` is Adam over the whole tables at every step. They learn the same (see
    /// `docs/results.md`); the rest of the network is trained with Adam either way. The
    /// `sequential` architecture trains in its own loop (`[recommender.sequence]`) and reads
    /// neither.
    TableOptimizer { LazyAdam => "lazy_adam", Adam => "adam" }
}
choice! {
    /// `forecaster.data.frequency`: one period is a day, or a week (Monday to Sunday).
    Frequency { Daily => "daily", Weekly => "weekly" }
}
choice! {
    /// `forecaster.data.fill_missing`: a period without a row sold nothing (`zero`) or is unknown
    /// (`missing`: skipped by the loss and the metrics).
    FillMissing { Zero => "zero", Missing => "missing" }
}
choice! {
    /// `forecaster.data.negative_targets`: returns are dropped (counted, reported) or an error.
    NegativeTargets { Drop => "drop", Error => "error" }
}

impl Frequency {
    /// Days in one period.
    pub fn period_days(self) -> i64 {
        match self {
            Self::Daily => 1,
            Self::Weekly => 7,
        }
    }
}

/// A whole business configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopConfig {
    pub business: BusinessSection,
    /// When present, the synthetic demo shop is generated into `data_dir` if its files are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<DemoSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommender: Option<RecommenderSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecaster: Option<ForecasterSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySection>,
    /// Thresholds of `infer monitor` (defaults without the section).
    #[serde(default)]
    pub monitoring: MonitoringSection,
}

/// When `infer monitor` says the latest data or the model's recent accuracy calls for a
/// retraining (exit code 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSection {
    /// Largest relative change of rows per day (0.5: from half to one and a half times).
    pub max_volume_change: f64,
    /// Largest share of the latest data's customers the bundle has never seen.
    pub max_new_customer_share: f64,
    /// Largest share of the latest data's products the bundle has never seen.
    pub max_new_product_share: f64,
    /// Largest population stability index of the sales target against training.
    pub max_target_psi: f64,
    /// Largest population stability index of a covariate (price, promotion...) against training.
    pub max_covariate_psi: f64,
    /// Largest relative loss of accuracy: recent MASE above backtest MASE x (1 + this).
    pub max_accuracy_loss: f64,
}

impl Default for MonitoringSection {
    fn default() -> Self {
        MonitoringSection {
            max_volume_change: 0.5,
            max_new_customer_share: 0.3,
            max_new_product_share: 0.2,
            max_target_psi: 0.25,
            max_covariate_psi: 0.25,
            max_accuracy_loss: 0.3,
        }
    }
}

/// What the bundle may hold about customers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// Store a salted hash of each customer id in the bundle instead of the id.
    #[serde(default)]
    pub pseudonymise_customer_ids: bool,
    /// The environment variable holding the salt (secret, the same for training and scoring).
    #[serde(default = "default_salt_env")]
    pub salt_env: String,
}

fn default_salt_env() -> String {
    "SHOPCAST_ID_SALT".into()
}

/// Who the business is and where its data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessSection {
    /// Used for the default output directory `runs/<name>/`.
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub device: DeviceName,
    /// Directory that data file paths are relative to; itself relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

/// Size of the generated demo shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    #[serde(default = "d_customers")]
    pub customers: usize,
    #[serde(default = "d_products")]
    pub products: usize,
    #[serde(default = "d_categories")]
    pub categories: usize,
    #[serde(default = "d_days")]
    pub days: usize,
    #[serde(default = "d_stores")]
    pub stores: usize,
    #[serde(default = "d_series_products")]
    pub series_products: usize,
    /// First day of the generated history, `YYYY-MM-DD`.
    #[serde(default = "d_start_date")]
    pub start_date: String,
    #[serde(default)]
    pub format: DemoFormat,
}

/// A data file and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// CSV (`.csv`, `.tsv`, `.txt`, `.dat`) or Parquet (`.parquet`), relative to `data_dir`.
    pub path: PathBuf,
    /// Field separator for CSV (default `,`, or tab for `.tsv`); `tab` or `\\t` for a tab. A
    /// separator of several bytes, such as MovieLens' `::`, is also accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    #[serde(default = "yes")]
    pub has_header: bool,
    /// Column names for a file without a header row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_names: Vec<String>,
}

/// A row filter applied while loading, e.g. `{ column = "Quantity", op = "gt", value = 0 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilter {
    pub column: String,
    pub op: FilterOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<FilterValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Comparison used by a [`RowFilter`]; a row is kept when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    StartsWith,
    NotStartsWith,
    In,
    NotIn,
    NotNull,
    Matches,
    NotMatches,
}

/// A filter's operand: a number or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterValue {
    Number(f64),
    Text(String),
}

/// Per-entity attributes (content features) read from a file keyed by an id column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeTable {
    pub file: FileSpec,
    /// The id column; matches the interactions' customer or product ids.
    pub id: String,
    /// Display name column (products), used in explanations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Single-valued categorical columns (category, brand, region...).
    #[serde(default)]
    pub categorical: Vec<String>,
    /// Multi-valued columns, values separated by `separator` (tags).
    #[serde(default)]
    pub multi_valued: Vec<MultiValuedColumn>,
    /// Free-text columns split into lower-case words (product descriptions).
    #[serde(default)]
    pub text: Vec<String>,
    /// Numeric columns cut into quantile bands (price band).
    #[serde(default)]
    pub numeric_bands: Vec<NumericBands>,
    #[serde(default)]
    pub filters: Vec<RowFilter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiValuedColumn {
    pub column: String,
    #[serde(default = "d_tag_sep")]
    pub separator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericBands {
    pub column: String,
    #[serde(default = "d_bands")]
    pub bands: usize,
}

/// The recommender: data mapping, model, training and evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderSection {
    pub data: InteractionData,
    #[serde(default)]
    pub model: RecommenderModelSection,
    #[serde(default)]
    pub training: RecommenderTrainingSection,
    #[serde(default)]
    pub evaluation: RecommenderEvaluationSection,
    /// The sequential encoder and its training (used by `architecture = "sequential"`).
    #[serde(default)]
    pub sequence: SequenceSection,
}

/// `[recommender.sequence]`: the sequential customer encoder (self-attention over the latest
/// baskets) and its training, which differs from the id-table models' (windows of a customer's
/// history per batch, a softmax over many negatives, dropout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSection {
    /// Interactions per window: the latest ones are read at scoring time.
    #[serde(default = "d_max_sequence")]
    pub max_sequence: usize,
    /// Attention blocks.
    #[serde(default = "d_seq_blocks")]
    pub blocks: usize,
    /// Attention heads (must divide `recommender.model.embedding_dim`).
    #[serde(default = "d_seq_heads")]
    pub heads: usize,
    #[serde(default = "d_seq_dropout")]
    pub dropout: f64,
    #[serde(default = "d_seq_epochs")]
    pub epochs: usize,
    /// Windows per batch.
    #[serde(default = "d_seq_batch")]
    pub batch_size: usize,
    #[serde(default = "d_seq_lr")]
    pub learning_rate: f64,
    /// Negatives shared by a batch's targets; a catalogue no larger is used whole (an exact
    /// softmax).
    #[serde(default = "d_seq_negatives")]
    pub negatives: usize,
    /// Epochs without a better validation NDCG@10 before training stops.
    #[serde(default = "d_seq_patience")]
    pub patience: usize,
    /// Add the customer's id embedding (a summary of their whole history, learnt with the
    /// encoder) to what the encoder reads from their latest interactions.
    #[serde(default = "d_seq_customer_embedding")]
    pub customer_embedding: bool,
    /// Also train each purchase's prediction from the rest of its own basket (as a set) and
    /// earlier baskets, and blend the latest basket's completion into the customer's reading
    /// with a weight chosen on the validation items.
    #[serde(default = "d_seq_basket_completion")]
    pub basket_completion: bool,
    /// Validate, keep and save a moving average of the parameters over about this many latest
    /// epochs instead of the network itself (0: the network itself).
    #[serde(default = "d_seq_average_epochs")]
    pub average_epochs: f64,
}

/// Where the interactions are and which columns mean what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionData {
    pub events: FileSpec,
    pub customer_id: String,
    pub product_id: String,
    pub timestamp: String,
    /// chrono format of the timestamp when it is text; common formats are tried when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_format: Option<String>,
    /// Column with the event type; without it every row is one interaction of weight 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// Monetary value of a row (e.g. line total), for segment spend. Alternatively `unit_price`,
    /// multiplied by `quantity` (or 1 without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<String>,
    /// Explicit rating column (MovieLens, reviews): read as implicit feedback, keeping rows with
    /// `rating >= rating_threshold` (the others are dropped and counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_threshold: Option<f64>,
    /// Weight of each event type; types not listed are dropped (and counted).
    #[serde(default)]
    pub event_weights: BTreeMap<String, f64>,
    /// The event type recommendations aim at (held-out items are of this type). All when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_event: Option<String>,
    #[serde(default)]
    pub filters: Vec<RowFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customers: Option<AttributeTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<AttributeTable>,
}

/// Recommender model hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderModelSection {
    #[serde(default = "d_embedding_dim")]
    pub embedding_dim: usize,
    /// Customer segments (k-means over customer vectors).
    #[serde(default = "d_segments")]
    pub segments: usize,
    /// Minimum count for a text word to become a feature.
    #[serde(default = "d_min_word_count")]
    pub min_word_count: usize,
    #[serde(default)]
    pub architecture: Architecture,
    /// Hidden layer sizes of the NeuMF MLP tower.
    #[serde(default = "d_mlp_layers")]
    pub mlp_layers: Vec<usize>,
    /// How many of a customer's latest purchases form the recency term added to their vector at
    /// scoring time (its weight is chosen on the validation items; 0 turns it off).
    #[serde(default = "d_recent_items")]
    pub recent_items: usize,
}

/// Recommender training hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderTrainingSection {
    #[serde(default = "d_rec_epochs")]
    pub epochs: usize,
    #[serde(default = "d_rec_batch")]
    pub batch_size: usize,
    #[serde(default = "d_rec_lr")]
    pub learning_rate: f64,
    /// Sampled negatives per positive.
    #[serde(default = "d_negatives")]
    pub negatives: usize,
    #[serde(default)]
    pub negative_sampling: NegativeSampling,
    #[serde(default)]
    pub loss: RankingLoss,
    #[serde(default)]
    pub optimizer: TableOptimizer,
    /// L2 penalty on the embeddings used in a batch.
    #[serde(default = "d_l2")]
    pub l2: f64,
    /// Epochs without validation NDCG@10 improvement before stopping.
    #[serde(default = "d_patience")]
    pub patience: usize,
    /// After early stopping, retrain from scratch for the best number of epochs on the training
    /// and validation items together, so the saved model has seen each customer's latest
    /// purchases but one (the test item). Doubles training time.
    #[serde(default)]
    pub refit: bool,
}

/// Recommender evaluation protocol settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderEvaluationSection {
    /// Customers with fewer distinct target products are used for training only.
    #[serde(default = "d_min_items")]
    pub min_items_per_customer: usize,
    #[serde(default = "d_sampled_negatives")]
    pub sampled_negatives: usize,
}

/// The demand forecaster: data mapping, model, training and backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterSection {
    pub data: SalesData,
    #[serde(default)]
    pub model: ForecasterModelSection,
    #[serde(default)]
    pub training: ForecasterTrainingSection,
    #[serde(default)]
    pub evaluation: ForecasterEvaluationSection,
}

/// Where the sales history is and which columns mean what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesData {
    pub sales: FileSpec,
    /// Columns that identify a series (e.g. store and product).
    pub series_keys: Vec<String>,
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
    /// Units sold.
    pub target: String,
    #[serde(default)]
    pub frequency: Frequency,
    /// Covariates known in advance (price, promotion, holiday).
    #[serde(default)]
    pub known_covariates: Vec<String>,
    /// Covariates only known up to today (temperature).
    #[serde(default)]
    pub past_covariates: Vec<String>,
    /// Categorical attributes of a series (e.g. `category`), embedded like the keys: they let a
    /// new series borrow from the others of its kind. The latest value of each series is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_attributes: Vec<String>,
    /// Price column used for expected revenue (may also be a known covariate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Sum rows that fall on the same series and period (transaction files).
    #[serde(default)]
    pub aggregate: bool,
    #[serde(default)]
    pub fill_missing: FillMissing,
    /// Keep only the N series with the largest total target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_series: Option<usize>,
    #[serde(default)]
    pub negative_targets: NegativeTargets,
    #[serde(default)]
    pub filters: Vec<RowFilter>,
}

/// Forecaster model hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterModelSection {
    /// Past periods the encoder reads.
    #[serde(default = "d_context")]
    pub context_length: usize,
    /// Periods forecast.
    #[serde(default = "d_horizon")]
    pub horizon: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Embedding size of each series key.
    #[serde(default = "d_key_dim")]
    pub key_embedding_dim: usize,
    /// Quantiles to forecast; must include 0.5.
    #[serde(default = "d_quantiles")]
    pub quantiles: Vec<f64>,
    /// Seasonal period in rows (7 for daily data with a weekly cycle).
    #[serde(default = "d_season")]
    pub season_length: usize,
}

/// Forecaster training hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterTrainingSection {
    #[serde(default = "d_fc_epochs")]
    pub epochs: usize,
    #[serde(default = "d_fc_batch")]
    pub batch_size: usize,
    #[serde(default = "d_fc_lr")]
    pub learning_rate: f64,
    /// Training windows drawn per series per epoch.
    #[serde(default = "d_windows")]
    pub windows_per_series: usize,
    /// Epochs without validation-loss improvement before stopping.
    #[serde(default = "d_patience")]
    pub patience: usize,
    /// Networks trained from different seeds whose quantiles are averaged (1 = a single one).
    #[serde(default = "d_ensemble")]
    pub ensemble: usize,
    /// After early stopping, retrain each network from scratch for its best number of epochs on
    /// everything before each backtest fold's origin (the fold is scored by those networks), and
    /// the saved networks on the whole history, so forecasts come from a model that has seen the
    /// latest periods. Off: one set of networks, trained before the validation period, serves the
    /// backtest and the bundle. Costs `folds + 1` more trainings.
    #[serde(default = "d_fc_refit")]
    pub refit: bool,
    /// Validate, keep and save a moving average of each network's parameters over about this
    /// many latest epochs instead of the network itself (0: the network itself).
    #[serde(default = "d_fc_average_epochs")]
    pub average_epochs: f64,
}

/// Backtest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterEvaluationSection {
    /// Rolling-origin folds over the last periods, each `horizon` long.
    #[serde(default = "d_folds")]
    pub backtest_folds: usize,
    #[serde(default = "d_ma_window")]
    pub moving_average_window: usize,
    /// Write the bundle and exit 0 even when the model is worse than seasonal naive.
    #[serde(default)]
    pub allow_worse_than_baseline: bool,
}

macro_rules! defaults {
    ($($name:ident : $ty:ty = $val:expr;)*) => { $(fn $name() -> $ty { $val })* };
}
defaults! {
    default_seed: u64 = 42;
    default_data_dir: PathBuf = PathBuf::from(".");
    d_customers: usize = 2000;
    d_products: usize = 500;
    d_categories: usize = 15;
    d_days: usize = 730;
    d_stores: usize = 3;
    d_series_products: usize = 60;
    d_start_date: String = "2023-01-01".into();
    yes: bool = true;
    d_tag_sep: String = "|".into();
    d_bands: usize = 5;
    d_embedding_dim: usize = 32;
    d_segments: usize = 6;
    d_min_word_count: usize = 5;
    d_mlp_layers: Vec<usize> = vec![64, 32];
    d_recent_items: usize = 5;
    d_rec_epochs: usize = 60;
    d_rec_batch: usize = 1024;
    d_rec_lr: f64 = 0.01;
    d_negatives: usize = 4;
    d_l2: f64 = 1e-6;
    d_patience: usize = 3;
    d_min_items: usize = 3;
    d_sampled_negatives: usize = 99;
    d_context: usize = 56;
    d_horizon: usize = 28;
    d_hidden: usize = 64;
    d_key_dim: usize = 8;
    d_quantiles: Vec<f64> = vec![0.1, 0.5, 0.9];
    d_season: usize = 7;
    d_fc_epochs: usize = 15;
    d_ensemble: usize = 1;
    d_fc_refit: bool = true;
    d_fc_average_epochs: f64 = 0.0;
    d_fc_batch: usize = 256;
    d_fc_lr: f64 = 0.003;
    d_windows: usize = 32;
    d_folds: usize = 3;
    d_ma_window: usize = 28;
    d_max_sequence: usize = 50;
    d_seq_blocks: usize = 2;
    d_seq_heads: usize = 1;
    d_seq_dropout: f64 = 0.2;
    d_seq_epochs: usize = 200;
    d_seq_batch: usize = 128;
    d_seq_lr: f64 = 0.001;
    d_seq_negatives: usize = 2048;
    d_seq_patience: usize = 20;
    d_seq_customer_embedding: bool = true;
    d_seq_basket_completion: bool = true;
    d_seq_average_epochs: f64 = 5.0;
}

impl Default for SequenceSection {
    fn default() -> Self {
        Self {
            max_sequence: d_max_sequence(),
            blocks: d_seq_blocks(),
            heads: d_seq_heads(),
            dropout: d_seq_dropout(),
            epochs: d_seq_epochs(),
            batch_size: d_seq_batch(),
            learning_rate: d_seq_lr(),
            negatives: d_seq_negatives(),
            patience: d_seq_patience(),
            customer_embedding: d_seq_customer_embedding(),
            basket_completion: d_seq_basket_completion(),
            average_epochs: d_seq_average_epochs(),
        }
    }
}

impl Default for RecommenderModelSection {
    fn default() -> Self {
        Self {
            embedding_dim: d_embedding_dim(),
            segments: d_segments(),
            min_word_count: d_min_word_count(),
            architecture: Architecture::default(),
            mlp_layers: d_mlp_layers(),
            recent_items: d_recent_items(),
        }
    }
}
impl Default for RecommenderTrainingSection {
    fn default() -> Self {
        Self {
            epochs: d_rec_epochs(),
            batch_size: d_rec_batch(),
            learning_rate: d_rec_lr(),
            negatives: d_negatives(),
            negative_sampling: NegativeSampling::default(),
            loss: RankingLoss::default(),
            optimizer: TableOptimizer::default(),
            l2: d_l2(),
            patience: d_patience(),
            refit: false,
        }
    }
}
impl Default for RecommenderEvaluationSection {
    fn default() -> Self {
        Self {
            min_items_per_customer: d_min_items(),
            sampled_negatives: d_sampled_negatives(),
        }
    }
}
impl Default for ForecasterModelSection {
    fn default() -> Self {
        Self {
            context_length: d_context(),
            horizon: d_horizon(),
            hidden_size: d_hidden(),
            key_embedding_dim: d_key_dim(),
            quantiles: d_quantiles(),
            season_length: d_season(),
        }
    }
}
impl Default for ForecasterTrainingSection {
    fn default() -> Self {
        Self {
            epochs: d_fc_epochs(),
            batch_size: d_fc_batch(),
            learning_rate: d_fc_lr(),
            windows_per_series: d_windows(),
            patience: d_patience(),
            ensemble: d_ensemble(),
            refit: d_fc_refit(),
            average_epochs: d_fc_average_epochs(),
        }
    }
}
impl Default for ForecasterEvaluationSection {
    fn default() -> Self {
        Self {
            backtest_folds: d_folds(),
            moving_average_window: d_ma_window(),
            allow_worse_than_baseline: false,
        }
    }
}

impl ShopConfig {
    /// Reads, parses and validates a config file. Errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<LoadedConfig, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            what: "read the config file".into(),
            source: e,
        })?;
        let config = Self::parse(&text).map_err(|msg| DataError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        let config = config.check().map_err(|msg| DataError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(LoadedConfig {
            config,
            config_path: path.to_path_buf(),
            config_dir: base,
            data_dir_override: None,
        })
    }

    /// Parses TOML text; the error message names the key (`recommender.training.epochs`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| format!("invalid TOML: {e}"))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // toml's own message carries a snippet; keep its first line, which says what was wrong.
            let msg = inner.message().trim().to_string();
            if key.is_empty() || key == "." {
                msg
            } else {
                format!("key `{key}`: {msg}")
            }
        })
    }

    /// Serialises back to TOML (used to store the config as used inside a bundle).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    /// Checks value ranges and cross-field rules once, into the type the jobs take. The message
    /// names the key.
    pub fn check(self) -> Result<CheckedConfig, String> {
        self.validate()?;
        Ok(CheckedConfig(self))
    }

    fn validate(&self) -> Result<(), String> {
        self.monitoring.validate()?;
        self.business.validate()?;
        if self.recommender.is_none() && self.forecaster.is_none() {
            return Err("the config has neither a [recommender] nor a [forecaster] section".into());
        }
        if let Some(demo) = &self.demo {
            demo.validate()?;
        }
        if let Some(r) = &self.recommender {
            r.validate()?;
        }
        if let Some(f) = &self.forecaster {
            f.validate()?;
        }
        Ok(())
    }
}

/// `key`: at least 1.
fn positive(key: &str, v: usize) -> Result<(), String> {
    if v == 0 {
        return Err(format!("key `{key}`: must be at least 1, got 0"));
    }
    Ok(())
}

/// `key`: a number in (0, 1].
fn rate(key: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(format!("key `{key}`: must be a number in (0, 1], got {v}"));
    }
    Ok(())
}

/// `key`: a finite number, 0 or more.
fn non_negative(key: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("key `{key}`: must be a number, 0 or more, got {v}"));
    }
    Ok(())
}

impl MonitoringSection {
    fn validate(&self) -> Result<(), String> {
        let m = self;
        for (key, v) in [
            ("monitoring.max_volume_change", m.max_volume_change),
            (
                "monitoring.max_new_customer_share",
                m.max_new_customer_share,
            ),
            ("monitoring.max_new_product_share", m.max_new_product_share),
            ("monitoring.max_target_psi", m.max_target_psi),
            ("monitoring.max_covariate_psi", m.max_covariate_psi),
            ("monitoring.max_accuracy_loss", m.max_accuracy_loss),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("key `{key}`: must be a positive number, got {v}"));
            }
        }
        Ok(())
    }
}

impl BusinessSection {
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty()
            || self.name.contains(['/', '\\'])
            || self.name.starts_with('.')
        {
            return Err(format!(
            "key `business.name`: must be a non-empty name usable as a directory name, got {:?}",
            self.name
        ));
        }
        Ok(())
    }
}

impl DemoSection {
    fn validate(&self) -> Result<(), String> {
        let demo = self;
        positive("demo.customers", demo.customers)?;
        positive("demo.products", demo.products)?;
        positive("demo.categories", demo.categories)?;
        positive("demo.stores", demo.stores)?;
        positive("demo.series_products", demo.series_products)?;
        if demo.days < 120 {
            return Err(format!(
                "key `demo.days`: must be at least 120, got {}",
                demo.days
            ));
        }
        if demo.series_products > demo.products {
            return Err("key `demo.series_products`: cannot exceed `demo.products`".into());
        }
        if chrono::NaiveDate::parse_from_str(&demo.start_date, "%Y-%m-%d").is_err() {
            return Err(format!(
                "key `demo.start_date`: expected YYYY-MM-DD, got {:?}",
                demo.start_date
            ));
        }
        Ok(())
    }
}

impl SequenceSection {
    fn validate(&self, embedding_dim: usize) -> Result<(), String> {
        positive("recommender.sequence.max_sequence", self.max_sequence)?;
        positive("recommender.sequence.blocks", self.blocks)?;
        positive("recommender.sequence.epochs", self.epochs)?;
        positive("recommender.sequence.batch_size", self.batch_size)?;
        positive("recommender.sequence.negatives", self.negatives)?;
        rate("recommender.sequence.learning_rate", self.learning_rate)?;
        non_negative("recommender.sequence.average_epochs", self.average_epochs)?;
        if self.heads == 0 || !embedding_dim.is_multiple_of(self.heads) {
            return Err(format!(
                "key `recommender.sequence.heads`: must divide `recommender.model.embedding_dim` ({embedding_dim}), got {}",
                self.heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "key `recommender.sequence.dropout`: must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }
}

impl RecommenderSection {
    fn validate(&self) -> Result<(), String> {
        let r = self;
        let t = &r.training;
        positive("recommender.model.embedding_dim", r.model.embedding_dim)?;
        positive("recommender.model.segments", r.model.segments)?;
        positive("recommender.training.epochs", t.epochs)?;
        positive("recommender.training.batch_size", t.batch_size)?;
        positive("recommender.training.negatives", t.negatives)?;
        rate("recommender.training.learning_rate", t.learning_rate)?;
        if !(t.l2.is_finite() && t.l2 >= 0.0) {
            return Err(format!(
                "key `recommender.training.l2`: must be >= 0, got {}",
                t.l2
            ));
        }
        if r.model.mlp_layers.contains(&0) {
            return Err(
                "key `recommender.model.mlp_layers`: every layer needs at least 1 unit".into(),
            );
        }
        if r.data.rating_threshold.is_some() && r.data.rating.is_none() {
            return Err(
                "key `recommender.data.rating_threshold`: needs `rating` (the rating column)"
                    .into(),
            );
        }
        if r.data.value.is_some() && r.data.unit_price.is_some() {
            return Err("keys `recommender.data.value` and `unit_price`: set one, not both".into());
        }
        positive(
            "recommender.evaluation.sampled_negatives",
            r.evaluation.sampled_negatives,
        )?;
        r.sequence.validate(r.model.embedding_dim)?;
        if r.evaluation.min_items_per_customer < 3 {
            return Err(format!(
            "key `recommender.evaluation.min_items_per_customer`: must be at least 3 (train, validation and test items), got {}",
            r.evaluation.min_items_per_customer
        ));
        }
        for (ty, w) in &r.data.event_weights {
            if !(w.is_finite() && *w > 0.0) {
                return Err(format!(
                    "key `recommender.data.event_weights.{ty}`: must be > 0, got {w}"
                ));
            }
        }
        if r.data.event_type.is_some() && r.data.event_weights.is_empty() {
            return Err(
                "key `recommender.data.event_weights`: required when `event_type` is set".into(),
            );
        }
        if let Some(target) = &r.data.target_event {
            if !r.data.event_weights.contains_key(target) {
                return Err(format!(
                "key `recommender.data.target_event`: {target:?} is not one of the event_weights keys"
            ));
            }
        }
        check_filters("recommender.data.filters", &r.data.filters)?;
        for (name, table) in [
            ("customers", &r.data.customers),
            ("products", &r.data.products),
        ] {
            if let Some(table) = table {
                check_filters(&format!("recommender.data.{name}.filters"), &table.filters)?;
                for b in &table.numeric_bands {
                    if b.bands < 2 {
                        return Err(format!(
                        "key `recommender.data.{name}.numeric_bands`: `bands` must be at least 2 for column {:?}",
                        b.column
                    ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ForecasterSection {
    fn validate(&self) -> Result<(), String> {
        let f = self;
        let m = &f.model;
        positive("forecaster.model.context_length", m.context_length)?;
        positive("forecaster.model.horizon", m.horizon)?;
        positive("forecaster.model.hidden_size", m.hidden_size)?;
        positive("forecaster.model.key_embedding_dim", m.key_embedding_dim)?;
        positive("forecaster.model.season_length", m.season_length)?;
        if m.quantiles.is_empty() {
            return Err("key `forecaster.model.quantiles`: must not be empty".into());
        }
        for q in &m.quantiles {
            if !(q.is_finite() && *q > 0.0 && *q < 1.0) {
                return Err(format!(
                    "key `forecaster.model.quantiles`: each must be in (0, 1), got {q}"
                ));
            }
        }
        if m.quantiles.windows(2).any(|w| w[0] >= w[1]) {
            return Err("key `forecaster.model.quantiles`: must be strictly increasing".into());
        }
        if !m.quantiles.iter().any(|q| (q - 0.5).abs() < 1e-9) {
            return Err(
                "key `forecaster.model.quantiles`: must include 0.5 (the point forecast)".into(),
            );
        }
        let t = &f.training;
        positive("forecaster.training.epochs", t.epochs)?;
        positive("forecaster.training.batch_size", t.batch_size)?;
        positive("forecaster.training.ensemble", t.ensemble)?;
        positive(
            "forecaster.training.windows_per_series",
            t.windows_per_series,
        )?;
        rate("forecaster.training.learning_rate", t.learning_rate)?;
        non_negative("forecaster.training.average_epochs", t.average_epochs)?;
        positive(
            "forecaster.evaluation.backtest_folds",
            f.evaluation.backtest_folds,
        )?;
        positive(
            "forecaster.evaluation.moving_average_window",
            f.evaluation.moving_average_window,
        )?;
        let d = &f.data;
        if d.series_keys.is_empty() {
            return Err("key `forecaster.data.series_keys`: name at least one column".into());
        }
        if d.top_series == Some(0) {
            return Err("key `forecaster.data.top_series`: must be at least 1".into());
        }
        check_filters("forecaster.data.filters", &d.filters)?;
        Ok(())
    }
}

fn check_filters(key: &str, filters: &[RowFilter]) -> Result<(), String> {
    for (i, f) in filters.iter().enumerate() {
        let needs_number = matches!(
            f.op,
            FilterOp::Gt | FilterOp::Ge | FilterOp::Lt | FilterOp::Le
        );
        let needs_list = matches!(f.op, FilterOp::In | FilterOp::NotIn);
        let needs_text = matches!(
            f.op,
            FilterOp::StartsWith
                | FilterOp::NotStartsWith
                | FilterOp::Matches
                | FilterOp::NotMatches
        );
        let ok = match (&f.value, f.op) {
            (_, FilterOp::NotNull) => f.value.is_none(),
            (None, _) if needs_list => !f.values.is_empty(),
            (Some(FilterValue::Number(_)), _) if needs_number => true,
            (Some(FilterValue::Text(_)), _) if needs_text => true,
            (Some(_), FilterOp::Eq | FilterOp::Ne) => true,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "key `{key}[{i}]` (column {:?}): op {:?} needs {}",
                f.column,
                f.op,
                if needs_number {
                    "a numeric `value`"
                } else if needs_list {
                    "a non-empty `values` list"
                } else if needs_text {
                    "a string `value`"
                } else if f.op == FilterOp::NotNull {
                    "no value"
                } else {
                    "a `value`"
                }
            ));
        }
        if matches!(f.op, FilterOp::Matches | FilterOp::NotMatches) {
            if let Some(FilterValue::Text(p)) = &f.value {
                regex::Regex::new(p)
                    .map_err(|e| format!("key `{key}[{i}]`: invalid regular expression: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A config whose values passed [`ShopConfig::check`], the only way to make one: code that holds
/// it needs no range checks of its own. Reads as a [`ShopConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedConfig(ShopConfig);

impl std::ops::Deref for CheckedConfig {
    type Target = ShopConfig;
    fn deref(&self) -> &ShopConfig {
        &self.0
    }
}

impl CheckedConfig {
    /// The config as a run uses it: the seed and device of the command line, which are valid
    /// whatever they are, in place of the file's.
    pub fn with_run_settings(mut self, seed: u64, device: DeviceName) -> Self {
        self.0.business.seed = seed;
        self.0.business.device = device;
        self
    }
}

/// A checked config with the location it was read from, for resolving relative paths.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: CheckedConfig,
    pub config_path: PathBuf,
    pub config_dir: PathBuf,
    /// Set by `--data-dir` or [`DATA_DIR_ENV`]; wins over `business.data_dir`.
    pub data_dir_override: Option<PathBuf>,
}

impl LoadedConfig {
    /// Applies `--data-dir` (when given) or the `SHOPCAST_DATA_DIR` environment variable.
    pub fn with_data_dir_override(mut self, flag: Option<PathBuf>) -> Self {
        self.data_dir_override = flag.or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from));
        self
    }

    /// The directory data file paths are relative to.
    pub fn data_dir(&self) -> PathBuf {
        match &self.data_dir_override {
            Some(dir) => dir.clone(),
            None => self.config_dir.join(&self.config.business.data_dir),
        }
    }

    /// Resolves a data file path from the config.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.data_dir().join(path)
        }
    }
}
