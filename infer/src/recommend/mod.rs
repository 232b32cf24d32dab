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

mod catalogue;
mod cold_start;
mod explain;
mod inputs;
mod job;
mod load;
mod targets;

pub use catalogue::{Catalogue, NewProduct};
pub use explain::{CustomerContext, Explainer};
pub use inputs::{RECENT_ITEMS_COLUMN, RECENT_ITEMS_SEPARATOR};
pub use job::{recommend, RecommendOptions, INPUT_PIECE_ROWS};
pub use load::{load_recommender, read_recommender_artifacts, LoadedRecommender};

pub(crate) use inputs::{drop_opted_out, read_excluded, read_opt_outs, read_product_ids};
pub(crate) use load::to_vec_f32;
pub(crate) use targets::{known_targets, with_recent, Target};
