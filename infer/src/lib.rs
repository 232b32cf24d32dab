//! The `infer` batch-scoring jobs as a library: recommendations, forecasts (per series or summed
//! per key), reorder quantities and anomaly checks from a trained bundle, each written
//! atomically with a manifest beside its output.

pub mod anomalies;
pub mod audience;
pub mod forecast;
pub mod log;
pub mod monitor;
pub mod output;
pub mod quantiles;
pub mod recommend;
pub mod reorder;

pub use anomalies::{anomalies, AnomalyOptions};
pub use audience::{audience, AudienceOptions};
pub use forecast::{forecast, ForecastOptions};
pub use monitor::{monitor, MonitorOptions, RetrainAdvised};
pub use recommend::{recommend, RecommendOptions};
pub use reorder::{reorder, ReorderOptions};
