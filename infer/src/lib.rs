//! The `infer` batch-scoring jobs as a library: recommendations and forecasts from a trained
//! bundle, written atomically with a manifest beside each output.

pub mod forecast;
pub mod output;
pub mod recommend;

pub use forecast::{forecast, ForecastOptions};
pub use recommend::{recommend, RecommendOptions};
