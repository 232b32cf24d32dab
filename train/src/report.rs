//! `report.html`: one self-contained page per training run (no network: the charts are inline
//! SVG drawn with plotters, the styles inline) with the loss curves, the metrics against the
//! baselines, forecast-versus-actual charts with the P10-P90 band for the best, median and worst
//! series, the recommender's popularity bias and catalogue coverage, and the segment profiles.

use std::collections::BTreeMap;
use std::fmt::Write;

use plotters::prelude::*;

use crate::checkpoint::EpochLog;
use shopcast_datasets::artifacts::metric_keys;
use shopcast_datasets::charts::{bounds, draw_legend, forecast_chart, grid_styles};

use crate::forecaster::ForecasterOutcome;
use crate::ranking::RANKING_METRICS;
use crate::recommender::RecommenderOutcome;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// What the report is drawn from.
pub struct ReportInputs<'a> {
    pub business: &'a str,
    pub created_at: &'a str,
    pub device: &'a str,
    pub seed: u64,
    pub metrics: &'a BTreeMap<String, f64>,
    pub recommender: Option<&'a RecommenderOutcome>,
    pub forecaster: Option<&'a ForecasterOutcome>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Lines over epochs, as an SVG string: integer epoch ticks, `y_desc` naming the values.
fn epoch_chart(
    title: &str,
    y_desc: &str,
    lines: &[(&str, Vec<(u32, f64)>)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let epochs = || lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
        let first = epochs().min().unwrap_or(1);
        let last = epochs().max().unwrap_or(1).max(first + 1);
        let (y0, y1) = bounds(lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(first..last, y0..y1)
            .map_err(|e| e.to_string())?;
        let (bold, light) = grid_styles();
        chart
            .configure_mesh()
            .bold_line_style(bold)
            .light_line_style(light)
            .x_labels(((last - first + 1) as usize).min(12))
            .x_desc("epoch")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Grouped bars: one group per category, one bar per series; `(x_desc, y_desc)` name the axes.
fn bar_chart(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let top = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            .max(1e-6)
            * 1.1;
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..n, 0f64..top)
            .map_err(|e| e.to_string())?;
        let labels = categories.to_vec();
        let (bold, light) = grid_styles();
        chart
            .configure_mesh()
            .bold_line_style(bold)
            .light_line_style(light)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(categories.len().max(1))
            .x_label_formatter(&move |x| {
                labels.get(x.floor() as usize).cloned().unwrap_or_default()
            })
            .disable_x_mesh()
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / series.len().max(1) as f64;
        for (k, (name, values)) in series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x = i as f64 + 0.1 + k as f64 * width;
                    Rectangle::new([(x, 0.0), (x + width, v)], color.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn figure(out: &mut String, id: &str, svg: Result<String, String>) {
    match svg {
        Ok(svg) => {
            let _ = writeln!(out, "<figure id=\"{id}\">{svg}</figure>");
        }
        // A chart that cannot be drawn does not cost the run its report.
        Err(e) => {
            let _ = writeln!(out, "<p id=\"{id}\">Chart not drawn: {}</p>", escape(&e));
        }
    }
}

fn fmt(v: Option<&f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "–".into(),
    }
}

fn metric_table(
    out: &mut String,
    id: &str,
    metrics: &BTreeMap<String, f64>,
    names: &[String],
    methods: &[(&str, &str)],
) {
    let _ = write!(out, "<table id=\"{id}\"><tr><th>metric</th>");
    for (label, _) in methods {
        let _ = write!(out, "<th>{}</th>", escape(label));
    }
    out.push_str("</tr>\n");
    for name in names {
        let _ = write!(out, "<tr><td>{}</td>", escape(name));
        for (_, prefix) in methods {
            let _ = write!(
                out,
                "<td>{}</td>",
                fmt(metrics.get(&format!("{prefix}{name}")))
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Training and validation values per epoch.
type Curve = Vec<(u32, f64)>;

fn curves(history: &[EpochLog]) -> (Curve, Curve) {
    let train = history
        .iter()
        .map(|e| (e.epoch as u32, e.train_loss))
        .collect();
    let validation = history
        .iter()
        .filter_map(|e| Some((e.epoch as u32, e.validation?)))
        .collect();
    (train, validation)
}

/// Renders the report.
pub fn render(inputs: &ReportInputs<'_>) -> String {
    let m = inputs.metrics;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>shopcast report: {name}</title><style>\
         body{{font-family:sans-serif;max-width:780px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}figure{{margin:1em 0}}</style></head><body>\n\
         <h1>Training report: {name}</h1>\n<p>Trained {at} on <code>{device}</code>, seed {seed}.</p>\n",
        name = escape(inputs.business),
        at = escape(inputs.created_at),
        device = escape(inputs.device),
        seed = inputs.seed
    );
    if let Some(r) = inputs.recommender {
        recommender_section(&mut out, r, m);
    }
    if let Some(f) = inputs.forecaster {
        forecaster_section(&mut out, f, m);
    }
    out.push_str("</body></html>\n");
    out
}

/// The recommender's part: loss and validation curves, metrics, popularity bias, segments.
fn recommender_section(out: &mut String, r: &RecommenderOutcome, m: &BTreeMap<String, f64>) {
    out.push_str("<h2>Recommender</h2>\n");
    let (train, validation) = curves(&r.history);
    figure(
        out,
        "loss-recommender",
        epoch_chart(
            "Training loss per epoch",
            "mean loss per training pair",
            &[("training loss", train)],
        ),
    );
    figure(
        out,
        "validation-recommender",
        epoch_chart(
            "Validation NDCG@10 per epoch",
            "NDCG@10 (0-1, higher is better)",
            &[("validation NDCG@10", validation)],
        ),
    );
    out.push_str("<h3>Metrics against baselines (test customers)</h3>\n");
    let names: Vec<String> = RANKING_METRICS.map(String::from).to_vec();
    metric_table(
        out,
        "metrics-recommender",
        m,
        &names,
        &metric_keys::RECOMMENDER_METHODS,
    );
    out.push_str("<h3>Popularity bias and catalogue coverage</h3>\n");
    let _ = writeln!(
        out,
        "<p>Share of the test customers' top-10 slots by the products' popularity decile \
         (decile 1: the 10% most bought). Catalogue coverage@10: model {}, popularity {}, \
         item-kNN {}.</p>",
        fmt(m.get("recommender.coverage@10")),
        fmt(m.get("baseline.popularity.coverage@10")),
        fmt(m.get("baseline.itemknn.coverage@10")),
    );
    let deciles: Vec<String> = (1..=10).map(|d| d.to_string()).collect();
    figure(
        out,
        "popularity-bias",
        bar_chart(
            "Top-10 slots by popularity decile",
            (
                "popularity decile of the products (1: the 10% most bought)",
                "share of the top-10 slots",
            ),
            &deciles,
            &r.popularity_slots,
        ),
    );
    out.push_str("<h3>Segments</h3>\n<table id=\"segments\"><tr><th>segment</th><th>customers</th><th>top categories</th><th>products per customer</th><th>average spend</th></tr>\n");
    for s in &r.artifacts.segment_profiles {
        let cats: Vec<String> = s
            .top_categories
            .iter()
            .map(|(c, share)| format!("{} {:.0}%", escape(c), share * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            s.segment,
            s.customers,
            cats.join(", "),
            s.mean_products,
            s.average_spend.map_or("–".into(), |v| format!("{v:.2}"))
        );
    }
    out.push_str("</table>\n");
    let sizes: Vec<String> = r
        .artifacts
        .segment_profiles
        .iter()
        .map(|s| s.segment.to_string())
        .collect();
    figure(
        out,
        "segment-sizes",
        bar_chart(
            "Customers per segment",
            ("segment", "customers"),
            &sizes,
            &[(
                "customers".to_string(),
                r.artifacts
                    .segment_profiles
                    .iter()
                    .map(|s| s.customers as f64)
                    .collect(),
            )],
        ),
    );
}

/// The forecaster's part: loss curves, backtest metrics, forecasts against what happened.
fn forecaster_section(out: &mut String, f: &ForecasterOutcome, m: &BTreeMap<String, f64>) {
    out.push_str("<h2>Demand forecaster</h2>\n");
    let (train, validation) = curves(&f.history);
    figure(
        out,
        "loss-forecaster",
        epoch_chart(
            "Pinball loss per epoch",
            "pinball loss (scaled units)",
            &[("training", train), ("validation", validation)],
        ),
    );
    out.push_str("<h3>Metrics against baselines (rolling-origin backtest)</h3>\n");
    let names: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix(metric_keys::SEASONAL_NAIVE))
        .map(str::to_string)
        .collect();
    metric_table(
        out,
        "metrics-forecaster",
        m,
        &names,
        &metric_keys::FORECASTER_METHODS,
    );
    out.push_str("<h3>Forecasts against what happened (latest backtest fold)</h3>\n");
    for s in &f.samples {
        let title = format!(
            "{} series by MASE: {} (MASE {:.2})",
            s.label,
            s.keys.join(" / "),
            s.mase
        );
        figure(
            out,
            &format!("forecast-{}", s.label),
            forecast_chart(&title, s),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts an SVG draws.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn epoch_charts_tick_whole_epochs_and_name_both_axes() {
        let points: Vec<(u32, f64)> = (1..=7).map(|e| (e, 1.0 / e as f64)).collect();
        let svg = epoch_chart(
            "Loss",
            "pinball loss (scaled units)",
            &[("training", points)],
        )
        .expect("chart");
        let labels = texts(&svg);
        assert!(labels.iter().any(|t| t == "epoch"), "{labels:?}");
        assert!(
            labels.iter().any(|t| t == "pinball loss (scaled units)"),
            "{labels:?}"
        );
        for e in 1..=7 {
            assert!(labels.contains(&e.to_string()), "no tick {e}: {labels:?}");
        }
        // No fractional epoch ticks (the y axis labels the loss, which is below 1.1 here).
        assert!(
            !labels
                .iter()
                .any(|t| t.parse::<f64>().is_ok_and(|v| v > 1.5 && v.fract() != 0.0)),
            "{labels:?}"
        );
    }
}
