//! Charts of forecasts, drawn with plotters as SVG (no font or bitmap backends): the run report
//! and `infer forecast --plot` draw the same picture.

use plotters::prelude::*;

use crate::table::date_of_day;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);

/// One series' backtest forecast against what happened, for a chart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForecastSample {
    /// What the chart shows, e.g. `best` (by the series' backtest MASE).
    pub label: String,
    pub keys: Vec<String>,
    /// The series' backtest MASE (NaN when not known).
    pub mase: f64,
    /// Day number of the first history period; periods are `period_days` apart.
    pub first_day: i64,
    pub period_days: i64,
    /// The periods before the origin and the actuals after it (empty for a forecast of the
    /// future).
    pub history: Vec<f32>,
    pub actual: Vec<f32>,
    /// Per horizon step, the quantiles.
    pub forecast: Vec<Vec<f32>>,
}

/// The series' legend, on a white box, at `position`.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The grid lines every chart draws: major lines faint, minor lines fainter, so that the data
/// stands out.
pub fn grid_styles() -> (ShapeStyle, ShapeStyle) {
    (
        BLACK.mix(0.12).stroke_width(1),
        BLACK.mix(0.04).stroke_width(1),
    )
}

/// The y axis title of a forecast chart: units per period.
fn units_per_period(period_days: i64) -> &'static str {
    if period_days == 7 {
        "units sold per week"
    } else {
        "units sold per day"
    }
}

/// Padded bounds of some values (a flat or empty series still gets a range).
pub fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// History, actuals, the median forecast and the outer-quantile band of one series.
pub fn forecast_chart(title: &str, sample: &ForecastSample) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let origin = sample.history.len() as f64;
        let h = sample.forecast.len();
        let lowest = |q: &Vec<f32>| q.first().copied().unwrap_or(0.0) as f64;
        let highest = |q: &Vec<f32>| q.last().copied().unwrap_or(0.0) as f64;
        let median = |q: &Vec<f32>| q.get(q.len() / 2).copied().unwrap_or(0.0) as f64;
        let all = sample
            .history
            .iter()
            .chain(&sample.actual)
            .map(|&v| v as f64)
            .chain(sample.forecast.iter().flat_map(|q| [lowest(q), highest(q)]));
        let (y0, y1) = bounds(all);
        let x1 = origin + h as f64;
        let first_day = sample.first_day;
        let period = sample.period_days;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..x1.max(1.0), y0.min(0.0)..y1)
            .map_err(|e| e.to_string())?;
        let (bold, light) = grid_styles();
        chart
            .configure_mesh()
            .bold_line_style(bold)
            .light_line_style(light)
            .x_labels(6)
            .x_label_formatter(&move |x| {
                date_of_day(first_day + x.round() as i64 * period)
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .x_desc("date")
            .y_desc(units_per_period(period))
            .draw()
            .map_err(|e| e.to_string())?;
        let steps = |f: &dyn Fn(&Vec<f32>) -> f64| -> Vec<(f64, f64)> {
            sample
                .forecast
                .iter()
                .enumerate()
                .map(|(j, q)| (origin + j as f64, f(q)))
                .collect()
        };
        let mut band = steps(&highest);
        band.extend(steps(&lowest).into_iter().rev());
        let band_color = BLUE.mix(0.25);
        chart
            .draw_series(std::iter::once(Polygon::new(band, band_color.filled())))
            .map_err(|e| e.to_string())?
            .label("P10-P90")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], band_color.filled())
            });
        let history: Vec<(f64, f64)> = sample
            .history
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(t, &v)| (t as f64, v as f64))
            .collect();
        let actual: Vec<(f64, f64)> = sample
            .actual
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(j, &v)| (origin + j as f64, v as f64))
            .collect();
        for (name, points, color) in [
            ("history", history, BLACK),
            ("actual", actual, ORANGE),
            ("P50 forecast", steps(&median), BLUE),
        ] {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        // Upper left: the forecast is on the right.
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
