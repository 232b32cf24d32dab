//! A seeded generator of a realistic small shop, written as the same files a real business would
//! hand over (customers, products, events, daily store sales), so demo and real data share one
//! code path.
//!
//! Hidden structure the models can find: customers' tastes over categories, brands and tags
//! depend on region and age band; popularity has a long tail; customers re-buy; sales have trend,
//! weekly and yearly seasonality, price elasticity, promotions, holidays and a temperature effect.

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

use crate::config::DemoSection;
use crate::error::DataError;
use crate::table::write_frame_atomic;

const CATEGORY_NAMES: [&str; 15] = [
    "kitchen",
    "garden",
    "toys",
    "books",
    "beauty",
    "sports",
    "electronics",
    "pets",
    "stationery",
    "home decor",
    "clothing",
    "shoes",
    "food",
    "drinks",
    "crafts",
];
const TAGS: [&str; 16] = [
    "eco",
    "gift",
    "premium",
    "budget",
    "handmade",
    "kids",
    "outdoor",
    "vintage",
    "organic",
    "compact",
    "family",
    "travel",
    "classic",
    "limited",
    "bestseller",
    "seasonal",
];
const REGIONS: [&str; 5] = ["north", "south", "east", "west", "central"];
const AGE_BANDS: [&str; 5] = ["18-24", "25-34", "35-44", "45-54", "55+"];
const LATENT: usize = 8;

/// Where the demo files live inside a data directory.
#[derive(Debug, Clone)]
pub struct DemoFiles {
    pub customers: PathBuf,
    pub products: PathBuf,
    pub events: PathBuf,
    pub sales: PathBuf,
}

impl DemoFiles {
    pub fn in_dir(dir: &Path, format: &str) -> Self {
        let ext = if format == "parquet" {
            "parquet"
        } else {
            "csv"
        };
        DemoFiles {
            customers: dir.join(format!("customers.{ext}")),
            products: dir.join(format!("products.{ext}")),
            events: dir.join(format!("events.{ext}")),
            sales: dir.join(format!("sales.{ext}")),
        }
    }

    fn all_exist(&self) -> bool {
        [&self.customers, &self.products, &self.events, &self.sales]
            .iter()
            .all(|p| p.exists())
    }
}

/// Generates the demo shop into `dir` unless all its files already exist. Returns whether it wrote.
pub fn generate_if_missing(dir: &Path, demo: &DemoSection, seed: u64) -> Result<bool, DataError> {
    let files = DemoFiles::in_dir(dir, &demo.format);
    if files.all_exist() {
        return Ok(false);
    }
    generate(dir, demo, seed)?;
    Ok(true)
}

fn normal(rng: &mut ChaCha8Rng, sd: f64) -> f64 {
    Normal::new(0.0, sd).map(|d| d.sample(rng)).unwrap_or(0.0)
}

fn latent(rng: &mut ChaCha8Rng, sd: f64) -> [f64; LATENT] {
    std::array::from_fn(|_| normal(rng, sd))
}

fn dot(a: &[f64; LATENT], b: &[f64; LATENT]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add(a: &mut [f64; LATENT], b: &[f64; LATENT], w: f64) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += w * y;
    }
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 1e-9 {
        return 0;
    }
    Poisson::new(lambda)
        .map(|d| d.sample(rng) as u64)
        .unwrap_or(0)
}

/// Samples an index from cumulative weights.
fn pick(rng: &mut ChaCha8Rng, cumulative: &[f64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let r = rng.random::<f64>() * total;
    cumulative
        .partition_point(|c| *c <= r)
        .min(cumulative.len().saturating_sub(1))
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

struct Catalogue {
    ids: Vec<String>,
    category: Vec<usize>,
    price: Vec<f64>,
    launch_day: Vec<usize>,
}

/// Writes the four demo files into `dir`.
pub fn generate(dir: &Path, demo: &DemoSection, seed: u64) -> Result<(), DataError> {
    let files = DemoFiles::in_dir(dir, &demo.format);
    let start =
        NaiveDate::parse_from_str(&demo.start_date, "%Y-%m-%d").map_err(|_| DataError::Config {
            path: dir.to_path_buf(),
            msg: "key `demo.start_date`: expected YYYY-MM-DD".into(),
        })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let catalogue = generate_shop(&files, demo, start, &mut rng)?;
    generate_sales(&files, demo, start, &catalogue, &mut rng)
}

fn category_name(c: usize) -> String {
    CATEGORY_NAMES
        .get(c)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("category {}", c + 1))
}

fn generate_shop(
    files: &DemoFiles,
    demo: &DemoSection,
    start: NaiveDate,
    rng: &mut ChaCha8Rng,
) -> Result<Catalogue, DataError> {
    let n_cat = demo.categories;
    let n_brands = (n_cat * 3).max(4);
    let cat_vec: Vec<[f64; LATENT]> = (0..n_cat).map(|_| latent(rng, 1.0)).collect();
    let cat_price: Vec<f64> = (0..n_cat)
        .map(|_| 5.0 * (rng.random::<f64>() * 3.0).exp())
        .collect();
    let brand_vec: Vec<[f64; LATENT]> = (0..n_brands).map(|_| latent(rng, 0.6)).collect();
    let brand_tier: Vec<f64> = (0..n_brands)
        .map(|_| 0.6 + rng.random::<f64>() * 1.2)
        .collect();
    let brand_cats: Vec<Vec<usize>> = (0..n_brands)
        .map(|b| {
            let mut v = vec![b % n_cat];
            if rng.random_bool(0.5) {
                v.push(rng.random_range(0..n_cat));
            }
            v
        })
        .collect();
    let tag_vec: Vec<[f64; LATENT]> = (0..TAGS.len()).map(|_| latent(rng, 0.5)).collect();
    // Some categories are bigger than others.
    let cat_weights = cumulative((0..n_cat).map(|c| 1.0 / (1.0 + c as f64 * 0.15)));

    let n_items = demo.products;
    let mut item_vec = Vec::with_capacity(n_items);
    let mut cat = Vec::with_capacity(n_items);
    let mut brand = Vec::with_capacity(n_items);
    let mut price: Vec<f64> = Vec::with_capacity(n_items);
    let mut tags = Vec::with_capacity(n_items);
    let mut popularity: Vec<f64> = Vec::with_capacity(n_items);
    let mut launch = Vec::with_capacity(n_items);
    let pop_dist = LogNormal::new(0.0, 1.1).map_err(|e| DataError::TooLittleData(e.to_string()))?;
    for i in 0..n_items {
        // The first categories each get a product first so that every category exists.
        let c = if i < n_cat {
            i
        } else {
            pick(rng, &cat_weights)
        };
        let brands_here: Vec<usize> = (0..n_brands)
            .filter(|b| brand_cats[*b].contains(&c))
            .collect();
        let b = if brands_here.is_empty() {
            c % n_brands
        } else {
            brands_here[rng.random_range(0..brands_here.len())]
        };
        let p = cat_price[c] * brand_tier[b] * (normal(rng, 0.3)).exp();
        let mut t: Vec<usize> = Vec::new();
        if p > cat_price[c] * 1.3 {
            t.push(2);
        } else if p < cat_price[c] * 0.8 {
            t.push(3);
        }
        for _ in 0..rng.random_range(1..3) {
            let tag = rng.random_range(0..TAGS.len());
            if !t.contains(&tag) {
                t.push(tag);
            }
        }
        let mut v = cat_vec[c];
        add(&mut v, &brand_vec[b], 0.6);
        for &tag in &t {
            add(&mut v, &tag_vec[tag], 0.4);
        }
        add(&mut v, &latent(rng, 0.25), 1.0);
        item_vec.push(v);
        cat.push(c);
        brand.push(b);
        price.push((p * 100.0).round() / 100.0);
        tags.push(t);
        popularity.push(pop_dist.sample(rng));
        // Most products exist from the start; some launch during the second half.
        launch.push(if i >= demo.series_products && rng.random_bool(0.12) {
            demo.days / 2 + rng.random_range(0..demo.days / 2)
        } else {
            0
        });
    }

    let region_vec: Vec<[f64; LATENT]> = (0..REGIONS.len()).map(|_| latent(rng, 0.7)).collect();
    let age_vec: Vec<[f64; LATENT]> = (0..AGE_BANDS.len()).map(|_| latent(rng, 0.7)).collect();
    let age_price_sensitivity = [0.9, 0.6, 0.35, 0.3, 0.45];
    let n_cust = demo.customers;
    let activity = LogNormal::new(3.1, 0.7).map_err(|e| DataError::TooLittleData(e.to_string()))?;
    let mut cust_rows: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
    let mut ev_c: Vec<String> = Vec::new();
    let mut ev_p: Vec<String> = Vec::new();
    let mut ev_t: Vec<String> = Vec::new();
    let mut ev_ts: Vec<String> = Vec::new();
    let mut ev_q: Vec<i64> = Vec::new();
    let mut ev_price: Vec<f64> = Vec::new();
    let item_ids: Vec<String> = (0..n_items).map(|i| format!("P{:04}", i + 1)).collect();
    // Day weights: weekends and the run-up to Christmas are busier.
    let day_weight: Vec<f64> = (0..demo.days)
        .map(|d| {
            let date = start + chrono::Days::new(d as u64);
            let weekend = if date.weekday().number_from_monday() >= 6 {
                1.25
            } else {
                1.0
            };
            let xmas = if date.month() == 12 && date.day() <= 24 {
                1.7
            } else if date.month() == 11 {
                1.25
            } else {
                1.0
            };
            weekend * xmas
        })
        .collect();
    let day_cum = cumulative(day_weight.iter().copied());
    let mut affinity = vec![0.0f64; n_items];
    for u in 0..n_cust {
        let cid = format!("C{:05}", u + 1);
        let region = pick(rng, &cumulative([1.3, 1.0, 1.0, 0.9, 1.2].into_iter()));
        let age = pick(rng, &cumulative([0.8, 1.2, 1.2, 1.0, 0.8].into_iter()));
        cust_rows.0.push(cid.clone());
        cust_rows.1.push(AGE_BANDS[age].to_string());
        cust_rows.2.push(REGIONS[region].to_string());
        // Taste: shaped by region and age band, plus two favourite categories.
        let mut taste = [0.0; LATENT];
        add(&mut taste, &region_vec[region], 0.8);
        add(&mut taste, &age_vec[age], 0.8);
        let fav_w = cumulative((0..n_cat).map(|c| (0.8 * dot(&taste, &cat_vec[c])).exp()));
        let fav1 = pick(rng, &fav_w);
        let fav2 = pick(rng, &fav_w);
        add(&mut taste, &cat_vec[fav1], 1.0);
        add(&mut taste, &cat_vec[fav2], 0.6);
        add(&mut taste, &latent(rng, 0.3), 1.0);
        let sens = age_price_sensitivity[age];
        for i in 0..n_items {
            affinity[i] = (0.9 * dot(&taste, &item_vec[i]) - sens * price[i].ln()
                + 0.8 * f64::ln(popularity[i]))
            .clamp(-30.0, 30.0);
        }
        let max_a = affinity.iter().copied().fold(f64::MIN, f64::max);
        let weights = cumulative(affinity.iter().map(|a| (a - max_a).exp()));
        let join_day = if rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(0..demo.days * 3 / 4)
        };
        let rate = f64::min(activity.sample(rng), 150.0) * (demo.days - join_day) as f64
            / demo.days as f64;
        let sessions = poisson(rng, rate);
        let mut bought: Vec<usize> = Vec::new();
        let mut days: Vec<usize> = (0..sessions)
            .filter_map(|_| {
                (0..20)
                    .map(|_| pick(rng, &day_cum))
                    .find(|d| *d >= join_day)
            })
            .collect();
        days.sort_unstable();
        for day in days {
            let mut second = rng.random_range(9 * 3600..22 * 3600);
            let mut emit = |p: usize, kind: &str, q: i64, second: &mut i64| {
                let date = start + chrono::Days::new(day as u64);
                let (h, m, s) = (*second / 3600, (*second / 60) % 60, *second % 60);
                ev_c.push(cid.clone());
                ev_p.push(item_ids[p].clone());
                ev_t.push(kind.to_string());
                ev_ts.push(format!(
                    "{} {:02}:{:02}:{:02}",
                    date.format("%Y-%m-%d"),
                    h,
                    m,
                    s
                ));
                ev_q.push(q);
                ev_price.push(price[p]);
                *second += rng_step(p, q);
            };
            let mut chosen: Vec<usize> = Vec::new();
            if !bought.is_empty() && rng.random_bool(0.15) {
                chosen.push(bought[rng.random_range(0..bought.len())]);
            } else {
                for _ in 0..rng.random_range(1..4) {
                    if let Some(p) = (0..10)
                        .map(|_| pick(rng, &weights))
                        .find(|p| launch[*p] <= day)
                    {
                        if !chosen.contains(&p) {
                            chosen.push(p);
                        }
                    }
                }
            }
            for (k, &p) in chosen.iter().enumerate() {
                emit(p, "view", 1, &mut second);
                // The first product looked at is the one most often bought.
                let cart_p = if k == 0 { 0.5 } else { 0.2 };
                if rng.random_bool(cart_p) {
                    let q = rng.random_range(1..4);
                    emit(p, "cart", q, &mut second);
                    if rng.random_bool(0.65) {
                        emit(p, "purchase", q, &mut second);
                        bought.push(p);
                    }
                }
            }
        }
    }

    let n_ev = ev_c.len();
    let mut customers = DataFrame::new(
        n_cust,
        vec![
            Column::new("customer_id".into(), cust_rows.0),
            Column::new("age_band".into(), cust_rows.1),
            Column::new("region".into(), cust_rows.2),
        ],
    )
    .map_err(|e| DataError::file(&files.customers, e.to_string()))?;
    let brand_names: Vec<String> = brand
        .iter()
        .map(|b| format!("Brand {}", (b'A' + (*b % 26) as u8) as char) + &"*".repeat(b / 26))
        .collect();
    let names: Vec<String> = (0..n_items)
        .map(|i| {
            format!(
                "{} {} {} no. {}",
                brand_names[i],
                TAGS[tags[i][0]],
                category_name(cat[i]),
                i + 1
            )
        })
        .collect();
    let mut products = DataFrame::new(
        n_items,
        vec![
            Column::new("product_id".into(), item_ids.clone()),
            Column::new("name".into(), names),
            Column::new(
                "category".into(),
                cat.iter().map(|c| category_name(*c)).collect::<Vec<_>>(),
            ),
            Column::new("brand".into(), brand_names),
            Column::new("price".into(), price.clone()),
            Column::new(
                "tags".into(),
                tags.iter()
                    .map(|t| t.iter().map(|x| TAGS[*x]).collect::<Vec<_>>().join("|"))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "launch_date".into(),
                launch
                    .iter()
                    .map(|d| {
                        (start + chrono::Days::new(*d as u64))
                            .format("%Y-%m-%d")
                            .to_string()
                    })
                    .collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| DataError::file(&files.products, e.to_string()))?;
    let mut events = DataFrame::new(
        n_ev,
        vec![
            Column::new("customer_id".into(), ev_c),
            Column::new("product_id".into(), ev_p),
            Column::new("event_type".into(), ev_t),
            Column::new("timestamp".into(), ev_ts),
            Column::new("quantity".into(), ev_q),
            Column::new("unit_price".into(), ev_price),
        ],
    )
    .map_err(|e| DataError::file(&files.events, e.to_string()))?;
    write_frame_atomic(&mut customers, &files.customers)?;
    write_frame_atomic(&mut products, &files.products)?;
    write_frame_atomic(&mut events, &files.events)?;
    Ok(Catalogue {
        ids: item_ids,
        category: cat,
        price,
        launch_day: launch,
    })
}

/// Seconds between two events of a session (deterministic, so no extra RNG draws).
fn rng_step(p: usize, q: i64) -> i64 {
    20 + ((p as i64 * 37 + q * 11) % 90)
}

/// Public holidays of the demo country for a year (fixed dates plus Easter Monday).
fn is_holiday(date: NaiveDate) -> bool {
    let (m, d) = (date.month(), date.day());
    if matches!(
        (m, d),
        (1, 1) | (5, 1) | (12, 25) | (12, 26) | (12, 31) | (8, 15) | (10, 3)
    ) {
        return true;
    }
    easter_monday(date.year()) == Some(date)
}

/// Easter Monday by the anonymous Gregorian algorithm.
fn easter_monday(y: i32) -> Option<NaiveDate> {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(y, month as u32, day as u32).map(|d| d + chrono::Days::new(1))
}

fn generate_sales(
    files: &DemoFiles,
    demo: &DemoSection,
    start: NaiveDate,
    catalogue: &Catalogue,
    rng: &mut ChaCha8Rng,
) -> Result<(), DataError> {
    let n_days = demo.days;
    let stores: Vec<(String, f64, f64)> = (0..demo.stores)
        .map(|s| {
            (
                format!("store_{}", s + 1),
                [1.0, 0.7, 1.4, 0.9, 1.2][s % 5],
                [0.0, 3.0, -2.5, 1.5, -1.0][s % 5],
            )
        })
        .collect();
    // Products sold in stores: the first ones of the catalogue that exist from day 0.
    let products: Vec<usize> = (0..catalogue.ids.len())
        .filter(|&i| catalogue.launch_day[i] == 0)
        .take(demo.series_products)
        .collect();
    let n_cat = demo.categories;
    // Per category: weekly shape, yearly amplitude and phase, temperature and holiday effects.
    let weekly: Vec<[f64; 7]> = (0..n_cat)
        .map(|_| {
            let amp = 0.15 + rng.random::<f64>() * 0.5;
            let weekend_up = rng.random_bool(0.7);
            std::array::from_fn(|d| {
                let weekend = d >= 5;
                let friday = d == 4;
                1.0 + amp * if weekend == weekend_up { 1.0 } else { -0.4 }
                    + if friday { 0.15 } else { 0.0 }
            })
        })
        .collect();
    let yearly: Vec<(f64, f64)> = (0..n_cat)
        .map(|_| {
            (
                0.1 + rng.random::<f64>() * 0.45,
                rng.random::<f64>() * 365.0,
            )
        })
        .collect();
    let temp_effect: Vec<f64> = (0..n_cat)
        .map(|c| {
            [
                0.0, 0.03, 0.0, -0.01, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, -0.02, 0.0, 0.0, 0.04, 0.0,
            ][c % 15]
        })
        .collect();
    let gift: Vec<bool> = (0..n_cat)
        .map(|c| {
            [
                false, false, true, true, true, false, true, false, true, true, false, false,
                false, false, true,
            ][c % 15]
        })
        .collect();

    let temperature: Vec<Vec<f64>> = stores
        .iter()
        .map(|(_, _, offset)| {
            let mut ar = 0.0;
            (0..n_days)
                .map(|d| {
                    let doy = (start + chrono::Days::new(d as u64)).ordinal0() as f64;
                    ar = 0.7 * ar + normal(rng, 2.0);
                    12.0 + offset
                        + 10.0 * ((doy - 110.0) / 365.25 * std::f64::consts::TAU).sin()
                        + ar
                })
                .collect()
        })
        .collect();
    let dates: Vec<NaiveDate> = (0..n_days)
        .map(|d| start + chrono::Days::new(d as u64))
        .collect();
    let holiday: Vec<bool> = dates.iter().map(|d| is_holiday(*d)).collect();

    let rows = stores.len() * products.len() * n_days;
    let mut c_store = Vec::with_capacity(rows);
    let mut c_product = Vec::with_capacity(rows);
    let mut c_category = Vec::with_capacity(rows);
    let mut c_date = Vec::with_capacity(rows);
    let mut c_units = Vec::with_capacity(rows);
    let mut c_price = Vec::with_capacity(rows);
    let mut c_promo = Vec::with_capacity(rows);
    let mut c_holiday = Vec::with_capacity(rows);
    let mut c_temp = Vec::with_capacity(rows);
    let date_text: Vec<String> = dates
        .iter()
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    for (s, (store_id, size, _)) in stores.iter().enumerate() {
        for &p in &products {
            let c = catalogue.category[p] % n_cat;
            // 35% slow movers with many zero days.
            let base = if rng.random_bool(0.35) {
                0.15 + rng.random::<f64>() * 0.8
            } else {
                (rng.random::<f64>() * 3.2).exp() + 1.5
            } * size;
            let trend = normal(rng, 0.35);
            let elasticity = -0.8 - rng.random::<f64>() * 1.7;
            let base_price = catalogue.price[p];
            let mut price_level = 1.0;
            let mut promo_left = 0usize;
            for d in 0..n_days {
                if rng.random_bool(1.0 / 90.0) {
                    price_level = (price_level * (1.0 + normal(rng, 0.08))).clamp(0.75, 1.3);
                }
                if promo_left == 0 && rng.random_bool(0.008) {
                    promo_left = rng.random_range(7..15);
                }
                let promo = promo_left > 0;
                promo_left = promo_left.saturating_sub(1);
                let price = base_price * price_level * if promo { 0.8 } else { 1.0 };
                let date = dates[d];
                let dow = date.weekday().num_days_from_monday() as usize;
                let doy = date.ordinal0() as f64;
                let (amp, phase) = yearly[c];
                let mut lambda = base
                    * (trend * d as f64 / 365.0).exp()
                    * weekly[c][dow]
                    * (1.0 + amp * ((doy - phase) / 365.25 * std::f64::consts::TAU).sin())
                    * (price / base_price).powf(elasticity)
                    * if promo { 1.3 } else { 1.0 }
                    * (1.0 + temp_effect[c] * (temperature[s][d] - 15.0)).max(0.2);
                if gift[c] && date.month() == 12 && date.day() <= 23 {
                    lambda *= 1.6;
                }
                if holiday[d] {
                    lambda *= if date.month() == 12 && date.day() == 25 {
                        0.05
                    } else {
                        0.55
                    };
                }
                lambda *= (normal(rng, 0.15)).exp();
                c_store.push(store_id.clone());
                c_product.push(catalogue.ids[p].clone());
                c_category.push(category_name(c));
                c_date.push(date_text[d].clone());
                c_units.push(poisson(rng, lambda) as i64);
                c_price.push((price * 100.0).round() / 100.0);
                c_promo.push(promo as i64);
                c_holiday.push(holiday[d] as i64);
                c_temp.push((temperature[s][d] * 10.0).round() / 10.0);
            }
        }
    }
    let mut sales = DataFrame::new(
        rows,
        vec![
            Column::new("store_id".into(), c_store),
            Column::new("product_id".into(), c_product),
            Column::new("category".into(), c_category),
            Column::new("date".into(), c_date),
            Column::new("units".into(), c_units),
            Column::new("price".into(), c_price),
            Column::new("promo".into(), c_promo),
            Column::new("holiday".into(), c_holiday),
            Column::new("temperature".into(), c_temp),
        ],
    )
    .map_err(|e| DataError::file(&files.sales, e.to_string()))?;
    write_frame_atomic(&mut sales, &files.sales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_monday_known_dates() {
        assert_eq!(easter_monday(2024), NaiveDate::from_ymd_opt(2024, 4, 1));
        assert_eq!(easter_monday(2025), NaiveDate::from_ymd_opt(2025, 4, 21));
        assert_eq!(easter_monday(2023), NaiveDate::from_ymd_opt(2023, 4, 10));
    }
}
