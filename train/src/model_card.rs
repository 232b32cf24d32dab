//! `MODEL_CARD.md`: what a bundle was trained on and how well it does, for the people who decide
//! whether to use it. Only counts, date ranges, column names and metrics are written, never a
//! customer's or product's own values.

use std::collections::BTreeMap;
use std::fmt::Write;

use shopcast_datasets::artifacts::metric_keys;
use shopcast_datasets::config::{
    AttributeTable, ForecasterSection, RecommenderSection, ShopConfig,
};
use shopcast_model::Architecture;

use crate::forecaster::ForecasterOutcome;
use crate::recommender::{GroupMetrics, RecommenderOutcome};

/// A group whose full recall@10 is below this share of the overall one is flagged.
const UNDERSERVED: f64 = 0.8;

/// What the card is written from.
pub struct CardInputs<'a> {
    pub config: &'a ShopConfig,
    pub recommender: Option<&'a RecommenderOutcome>,
    pub forecaster: Option<&'a ForecasterOutcome>,
    pub metrics: &'a BTreeMap<String, f64>,
    pub device: &'a str,
    pub seed: u64,
    pub created_at: &'a str,
}

fn fmt(x: Option<&f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "–".into(),
    }
}

fn summary_table(out: &mut String, rows: &[(String, String)]) {
    out.push_str("| | |\n|---|---|\n");
    for (what, value) in rows {
        let _ = writeln!(out, "| {what} | {value} |");
    }
    out.push('\n');
}

fn attribute_columns(t: &AttributeTable) -> String {
    let mut cols: Vec<String> = t.categorical.clone();
    cols.extend(
        t.multi_valued
            .iter()
            .map(|m| format!("{} (multi-valued)", m.column)),
    );
    cols.extend(t.text.iter().map(|c| format!("{c} (words)")));
    cols.extend(
        t.numeric_bands
            .iter()
            .map(|b| format!("{} ({} bands)", b.column, b.bands)),
    );
    if cols.is_empty() {
        "none".into()
    } else {
        cols.join(", ")
    }
}

/// A metric table: one row per metric, one column per method (`prefix` of its keys).
fn metric_table(
    out: &mut String,
    metrics: &BTreeMap<String, f64>,
    names: &[&str],
    methods: &[(&str, &str)],
) {
    let header: Vec<&str> = methods.iter().map(|(label, _)| *label).collect();
    let _ = writeln!(out, "| metric | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(methods.len()));
    for name in names {
        let cells: Vec<String> = methods
            .iter()
            .map(|(_, prefix)| fmt(metrics.get(&format!("{prefix}{name}"))))
            .collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn group_tables(out: &mut String, groups: &[GroupMetrics], overall_recall: f64) -> Vec<String> {
    let mut flagged = Vec::new();
    let mut attributes: Vec<&str> = groups.iter().map(|g| g.attribute.as_str()).collect();
    attributes.dedup();
    for attribute in attributes {
        let _ = writeln!(out, "### By {attribute}\n");
        out.push_str(
            "| value | test customers | HR@10 (sampled) | recall@10 | NDCG@10 | popularity recall@10 |\n\
             |---|---|---|---|---|---|\n",
        );
        for g in groups.iter().filter(|g| g.attribute == attribute) {
            let recall = g.model.get("full.recall@10").copied().unwrap_or(f64::NAN);
            let low = g.customers >= 20 && recall < UNDERSERVED * overall_recall;
            if low {
                flagged.push(format!(
                    "{attribute} = {}: recall@10 {recall:.3} against {overall_recall:.3} overall ({} test customers)",
                    g.value, g.customers
                ));
            }
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} | {} | {} |",
                g.value,
                if low { " (below overall)" } else { "" },
                g.customers,
                fmt(g.model.get("sampled.hr@10")),
                fmt(g.model.get("full.recall@10")),
                fmt(g.model.get("full.ndcg@10")),
                fmt(g.popularity.get("full.recall@10")),
            );
        }
        out.push('\n');
    }
    flagged
}

/// Renders the model card.
pub fn render(inputs: &CardInputs<'_>) -> String {
    let c = inputs.config;
    let m = inputs.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# Model card: {}\n", c.business.name);
    let _ = writeln!(
        out,
        "Trained {} on `{}` with seed {} (shopcast {}). Only counts, date ranges, column names and \
         metrics appear here, never a customer's own values.\n",
        inputs.created_at,
        inputs.device,
        inputs.seed,
        env!("CARGO_PKG_VERSION")
    );
    let mut limitations: Vec<String> = Vec::new();

    if let (Some(r), Some(sec)) = (inputs.recommender, &c.recommender) {
        recommender_section(&mut out, &mut limitations, r, sec, m);
    }
    if let (Some(f), Some(sec)) = (inputs.forecaster, &c.forecaster) {
        forecaster_section(&mut out, &mut limitations, f, sec, m);
    }
    out.push_str("## Known limitations\n\n");
    for l in &limitations {
        let _ = writeln!(out, "- {l}");
    }
    out.push_str(
        "- Trained on this business's own history only: a change of assortment, prices or \
         customers' habits after the data's last date is not in it; retrain regularly.\n",
    );
    out
}

/// The recommender's part of the card: data, model, metrics, groups, explanations.
fn recommender_section(
    out: &mut String,
    limitations: &mut Vec<String>,
    r: &RecommenderOutcome,
    sec: &RecommenderSection,
    m: &BTreeMap<String, f64>,
) {
    let d = &sec.data;
    out.push_str("## Recommender\n\n### Data\n\n");
    let mut cols = vec![
        format!("customer `{}`", d.customer_id),
        format!("product `{}`", d.product_id),
        format!("time `{}`", d.timestamp),
    ];
    if let Some(e) = &d.event_type {
        let weights: Vec<String> = d
            .event_weights
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        cols.push(format!("event `{e}` (weights: {})", weights.join(", ")));
    }
    if let Some(r) = &d.rating {
        cols.push(format!("rating `{r}`"));
    }
    let _ = writeln!(out, "Interactions: {}.", cols.join(", "));
    if let Some(t) = &d.customers {
        let _ = writeln!(out, "Customer attributes: {}.", attribute_columns(t));
    }
    if let Some(t) = &d.products {
        let _ = writeln!(out, "Product attributes: {}.", attribute_columns(t));
    }
    out.push('\n');
    summary_table(out, &r.data_summary);
    let mc = &r.model_config;
    let tc = &r.training_config;
    out.push_str("### Model\n\n");
    let _ = writeln!(
        out,
        "Hybrid `{}`: id embeddings plus mean attribute embeddings (dimension {}) for customers \
         and products, scored by {}; a product bias. Trained with {} loss, {} sampled negatives \
         per positive ({} sampling), Adam at learning rate {}, batch size {}, L2 {}; early \
         stopping on validation NDCG@10 (best epoch {}, {} epochs run){}. Recency term weight {}.\n",
        mc.architecture,
        mc.embedding_dim,
        if mc.architecture == Architecture::Neumf {
            "GMF and an MLP"
        } else {
            "their dot product"
        },
        tc.loss,
        tc.negatives,
        tc.negative_sampling,
        tc.learning_rate,
        tc.batch_size,
        tc.l2,
        r.best_epoch,
        r.epochs_run,
        if tc.refit {
            ", then refitted on training and validation data"
        } else {
            ""
        },
        m.get("recommender.recency_weight").copied().unwrap_or(0.0)
    );
    candidate_table(out, r);
    out.push_str(
        "### Metrics against baselines\n\nTest protocol: each test customer's latest item is held \
         out; `sampled` ranks it among 99 sampled negatives, `full` among every product the \
         customer has not interacted with.\n\n",
    );
    metric_table(
        out,
        m,
        &crate::ranking::RANKING_METRICS,
        &metric_keys::RECOMMENDER_METHODS,
    );
    if !r.group_metrics.is_empty() {
        out.push_str("### Metrics per customer group\n\n");
        let overall = m
            .get("recommender.full.recall@10")
            .copied()
            .unwrap_or(f64::NAN);
        let flagged = group_tables(out, &r.group_metrics, overall);
        for f in flagged {
            limitations.push(format!("Served worse than average: {f}."));
        }
    }
    out.push_str(
        "### How a recommendation is explained\n\nEvery row carries one reason, the first that \
         holds: \"because you bought X\" / \"because you viewed X\" (the customer's past product \
         most similar to the recommended one, cosine of the product vectors at least 0.35); \
         \"new in a category you buy\" (a product without history); \"popular with customers \
         like you\" (among the top products of the customer's segment); \"more from C, a \
         category you buy\"; otherwise \"liked by customers like you\" (the collaborative signal \
         alone). Segments are k-means clusters of the customer vectors.\n\n",
    );
    let coverage = m
        .get("recommender.coverage@10")
        .copied()
        .unwrap_or(f64::NAN);
    if coverage.is_finite() {
        limitations.push(format!(
            "Popularity bias: the top 10 lists of the test customers cover {:.1}% of the catalogue.",
            coverage * 100.0
        ));
    }
    limitations.push(
        "Customers and products without history are placed from their attributes (and, for \
         customers, their recent items); they are served less well than known ones."
            .into(),
    );
}

/// With `architecture = "auto"`: each candidate's validation NDCG@10, the chosen one marked.
fn candidate_table(out: &mut String, r: &RecommenderOutcome) {
    if !r.candidates.is_empty() {
        out.push_str(
            "Architecture chosen on the validation items (`auto`): each candidate trained with \
             early stopping and its own recency weight.\n\n| candidate | validation NDCG@10 |\n|---|---|\n",
        );
        for (candidate, score) in &r.candidates {
            let chosen = if *candidate == r.model_config.architecture {
                " (chosen)"
            } else {
                ""
            };
            let _ = writeln!(out, "| `{candidate}`{chosen} | {score:.4} |");
        }
        out.push('\n');
    }
}

/// The forecaster's part of the card: data, model, backtest metrics, the quality gate.
fn forecaster_section(
    out: &mut String,
    limitations: &mut Vec<String>,
    f: &ForecasterOutcome,
    sec: &ForecasterSection,
    m: &BTreeMap<String, f64>,
) {
    let d = &sec.data;
    out.push_str("## Demand forecaster\n\n### Data\n\n");
    let _ = writeln!(
        out,
        "Series keys {}; date `{}`; target `{}`; known future covariates: {}; past covariates: \
         {}; static attributes: {}.\n",
        d.series_keys
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", "),
        d.date,
        d.target,
        if d.known_covariates.is_empty() {
            "none".into()
        } else {
            d.known_covariates.join(", ")
        },
        if d.past_covariates.is_empty() {
            "none".into()
        } else {
            d.past_covariates.join(", ")
        },
        if d.static_attributes.is_empty() {
            "none".into()
        } else {
            d.static_attributes.join(", ")
        },
    );
    summary_table(out, &f.data_summary);
    let mc = &f.model_config;
    let tc = &f.training_config;
    out.push_str("### Model\n\n");
    let _ = writeln!(
        out,
        "A global LSTM encoder-decoder (hidden size {}, context {} periods, horizon {}) over all \
         series, predicting quantiles {:?} as a correction to each series' exponential \
         smoothing; each quantile is blended with the exponential smoothing by a weight chosen \
         on validation. Pinball loss, Adam at learning rate {}, batch size {}, {} windows per \
         series per epoch, early stopping (best epoch {}), ensemble of {}.\n",
        mc.hidden_size,
        sec.model.context_length,
        sec.model.horizon,
        sec.model.quantiles,
        tc.learning_rate,
        tc.batch_size,
        tc.windows_per_series,
        f.best_epoch,
        tc.ensemble,
    );
    let _ = writeln!(
        out,
        "### Metrics against baselines\n\nRolling-origin backtest, {} folds of {} periods.\n",
        tc.backtest_folds, sec.model.horizon
    );
    let names: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix(metric_keys::SEASONAL_NAIVE))
        .map(str::to_string)
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    metric_table(out, m, &names, &metric_keys::FORECASTER_METHODS);
    if f.gate_failures.is_empty() {
        out.push_str("Quality gate (not worse than seasonal naive on MASE and WQL): passed.\n\n");
    } else {
        let _ = writeln!(
            out,
            "Quality gate: **failed** ({}).\n",
            f.gate_failures.join("; ")
        );
        limitations.push("The forecaster failed its quality gate: prefer the baseline.".into());
    }
    limitations.push(
        "Forecasts assume the planned future covariates given to `infer forecast` (or flags off \
         and prices unchanged without them); quantiles of sums treat series as independent."
            .into(),
    );
}
