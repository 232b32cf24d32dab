//! From a period's forecast quantiles to the numbers planning needs: a mean, a spread, and
//! quantiles of sums over several periods or series.
//!
//! A period's demand is summarised by a mean (Swanson's 30-40-30 rule on the outer quantiles and
//! the median, which follows skewed demand better than the median alone) and a standard
//! deviation read off the outer quantiles as if they were normal. Sums over periods (lead time)
//! or series (a store) treat the parts as independent and the sum as normal, which the central
//! limit theorem makes reasonable for sums of many parts and which is the textbook safety-stock
//! computation.

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// below 1.2e-9 over (0, 1)). Hand-written: it is twenty lines, and the statistics crates that
/// provide it pull in linear algebra this project does not otherwise need.
// The coefficients are written as published, digit for digit.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| -> f64 {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// One period's forecast summarised for planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodDemand {
    pub mean: f64,
    pub sd: f64,
}

/// Summarises one period's quantiles (`levels` ascending, one of them 0.5).
pub fn period_demand(quantiles: &[f32], levels: &[f64]) -> PeriodDemand {
    let median = levels
        .iter()
        .position(|q| (q - 0.5).abs() < 1e-9)
        .unwrap_or(levels.len() / 2);
    let (lo, hi) = (0, levels.len() - 1);
    let m = quantiles[median] as f64;
    if lo == hi {
        return PeriodDemand { mean: m, sd: 0.0 };
    }
    let (q_lo, q_hi) = (quantiles[lo] as f64, quantiles[hi] as f64);
    let z_span = normal_quantile(levels[hi]) - normal_quantile(levels[lo]);
    PeriodDemand {
        mean: 0.3 * q_lo + 0.4 * m + 0.3 * q_hi,
        sd: ((q_hi - q_lo) / z_span).max(0.0),
    }
}

/// The quantile at `level` of a sum of independent parts, each weighted (a fraction of a
/// period, or a price), never negative.
pub fn sum_quantile(parts: &[(PeriodDemand, f64)], level: f64) -> f64 {
    let mean: f64 = parts.iter().map(|(d, w)| d.mean * w).sum();
    let var: f64 = parts.iter().map(|(d, w)| (d.sd * w).powi(2)).sum();
    (mean + normal_quantile(level) * var.sqrt()).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.9, 1.2815515655),
            (0.95, 1.6448536270),
            (0.975, 1.9599639845),
            (0.99, 2.3263478740),
            (0.001, -3.0902323062),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-7,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn period_demand_by_hand() {
        let d = period_demand(&[2.0, 5.0, 12.0], &[0.1, 0.5, 0.9]);
        assert!((d.mean - (0.6 + 2.0 + 3.6)).abs() < 1e-9);
        assert!((d.sd - 10.0 / (2.0 * 1.2815515655)).abs() < 1e-6);
        let total = sum_quantile(&[(d, 1.0), (d, 0.5)], 0.95);
        let by_hand = 6.2 * 1.5 + 1.6448536270 * (d.sd * d.sd * 1.25).sqrt();
        assert!((total - by_hand).abs() < 1e-6);
    }
}
