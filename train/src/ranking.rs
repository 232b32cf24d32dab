//! Recommendation metrics under the two protocols, and the baselines they are compared with.
//!
//! * Sampled (NCF protocol): the held-out item against `n` products drawn uniformly (fixed seed)
//!   among those the customer never interacted with: HR@10 and NDCG@10.
//! * Full ranking: the held-out item among every product not in the customer's history:
//!   Recall@10, Recall@20, NDCG@10, and catalogue coverage of the top-10 lists.
//!
//! Ties are broken against the held-out item, so a method that cannot tell products apart gets no
//! credit for it.

use std::collections::{BTreeMap, HashSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopcast_model::recommender::TopK;

/// One held-out case: a customer, the held-out product, what to mask, and the sampled negatives.
#[derive(Debug, Clone)]
pub struct Case {
    pub customer: u32,
    pub item: u32,
    /// Products excluded from full ranking (the customer's known history), sorted.
    pub known: Vec<u32>,
    /// Sampled negatives for the NCF protocol.
    pub negatives: Vec<u32>,
}

/// Builds evaluation cases. `history` is every product each customer ever interacted with
/// (negatives avoid it); `known` is what is masked at ranking time.
pub fn build_cases(
    held_out: &[(u32, u32)],
    known: &[Vec<u32>],
    history: &[Vec<u32>],
    n_products: usize,
    sampled_negatives: usize,
    seed: u64,
) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_cafe);
    held_out
        .iter()
        .map(|&(c, item)| {
            let seen: HashSet<u32> = history[c as usize].iter().copied().chain([item]).collect();
            let available = n_products.saturating_sub(seen.len());
            let want = sampled_negatives.min(available);
            let mut negatives = Vec::with_capacity(want);
            let mut chosen = HashSet::new();
            while negatives.len() < want {
                let p = rng.random_range(0..n_products as u32);
                if !seen.contains(&p) && chosen.insert(p) {
                    negatives.push(p);
                }
            }
            let mut k: Vec<u32> = known[c as usize]
                .iter()
                .copied()
                .filter(|p| *p != item)
                .collect();
            k.sort_unstable();
            k.dedup();
            Case {
                customer: c,
                item,
                known: k,
                negatives,
            }
        })
        .collect()
}

/// Scores of every product for a customer.
pub trait Scorer {
    fn scores(&self, customer: u32, out: &mut Vec<f32>);
}

/// Metric values keyed as in `metrics.json` without the method prefix (`sampled.hr@10`...).
pub type Metrics = BTreeMap<String, f64>;

/// The ranking metrics `evaluate` reports, in the order reports show them.
pub const RANKING_METRICS: [&str; 6] = [
    "sampled.hr@10",
    "sampled.ndcg@10",
    "full.recall@10",
    "full.recall@20",
    "full.ndcg@10",
    "coverage@10",
];

fn rank_of(target: f32, others: impl Iterator<Item = f32>) -> usize {
    // Ties count against the held-out item.
    others.filter(|s| *s >= target).count()
}

fn ndcg(rank: usize, k: usize) -> f64 {
    if rank < k {
        1.0 / ((rank + 2) as f64).log2()
    } else {
        0.0
    }
}

/// What one case's scores say, all that the metrics need: the held-out item's rank among the
/// sampled negatives and in the full catalogue (history masked), and the top 10 (history masked).
/// Keeping these instead of score rows bounds evaluation's memory by the cases, not the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub sampled_rank: usize,
    pub full_rank: usize,
    pub top: Vec<u32>,
}

impl Outcome {
    /// From a case's scores over the whole catalogue; the history is masked in place.
    pub fn of(case: &Case, scores: &mut [f32]) -> Self {
        let s = scores[case.item as usize];
        let sampled_rank = rank_of(s, case.negatives.iter().map(|&p| scores[p as usize]));
        for &p in &case.known {
            scores[p as usize] = f32::NEG_INFINITY;
        }
        let s = scores[case.item as usize];
        let full_rank = rank_of(
            s,
            scores
                .iter()
                .enumerate()
                .filter(|(p, _)| *p != case.item as usize)
                .map(|(_, v)| *v),
        );
        Outcome {
            sampled_rank,
            full_rank,
            top: TopK::of_row(scores, 10),
        }
    }
}

/// Each case's outcome under a scorer.
pub fn outcomes(scorer: &dyn Scorer, cases: &[Case], n_products: usize) -> Vec<Outcome> {
    let mut scores = Vec::with_capacity(n_products);
    cases
        .iter()
        .map(|case| {
            scores.clear();
            scorer.scores(case.customer, &mut scores);
            Outcome::of(case, &mut scores)
        })
        .collect()
}

/// Both protocols' metrics over some cases' outcomes.
pub fn metrics_of<'a>(
    outcomes: impl IntoIterator<Item = &'a Outcome>,
    n_products: usize,
) -> Metrics {
    let (mut hr, mut sndcg, mut r10, mut r20, mut fndcg, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0);
    let mut covered = vec![false; n_products];
    for o in outcomes {
        hr += (o.sampled_rank < 10) as u8 as f64;
        sndcg += ndcg(o.sampled_rank, 10);
        r10 += (o.full_rank < 10) as u8 as f64;
        r20 += (o.full_rank < 20) as u8 as f64;
        fndcg += ndcg(o.full_rank, 10);
        for &p in &o.top {
            covered[p as usize] = true;
        }
        n += 1;
    }
    let n = n.max(1) as f64;
    let mut m = Metrics::new();
    m.insert("sampled.hr@10".into(), hr / n);
    m.insert("sampled.ndcg@10".into(), sndcg / n);
    m.insert("full.recall@10".into(), r10 / n);
    m.insert("full.recall@20".into(), r20 / n);
    m.insert("full.ndcg@10".into(), fndcg / n);
    m.insert(
        "coverage@10".into(),
        covered.iter().filter(|c| **c).count() as f64 / n_products.max(1) as f64,
    );
    m
}

/// Evaluates a scorer on cases under both protocols.
pub fn evaluate(scorer: &dyn Scorer, cases: &[Case], n_products: usize) -> Metrics {
    metrics_of(&outcomes(scorer, cases, n_products), n_products)
}

/// Mean full-ranking NDCG@10 of some outcomes (validation during training).
pub fn full_ndcg(outcomes: &[Outcome]) -> f64 {
    let total: f64 = outcomes.iter().map(|o| ndcg(o.full_rank, 10)).sum();
    total / outcomes.len().max(1) as f64
}

/// Most popular products first: the number of training customers per product.
pub struct Popularity {
    counts: Vec<f32>,
}

impl Popularity {
    pub fn fit(train: &[(u32, u32, f32)], n_products: usize) -> Self {
        let mut counts = vec![0f32; n_products];
        for &(_, p, _) in train {
            counts[p as usize] += 1.0;
        }
        Popularity { counts }
    }
}

impl Scorer for Popularity {
    fn scores(&self, _customer: u32, out: &mut Vec<f32>) {
        out.extend_from_slice(&self.counts);
    }
}

/// Item-kNN: cosine similarity over co-occurrence in customers' training histories; a customer's
/// score for a product is the sum of its similarities to the products they have.
pub struct ItemKnn {
    /// Per product, its nearest neighbours with similarities.
    neighbours: Vec<Vec<(u32, f32)>>,
    history: Vec<Vec<u32>>,
    n_products: usize,
}

/// Neighbours kept per product.
const KNN_NEIGHBOURS: usize = 200;

impl ItemKnn {
    pub fn fit(train: &[(u32, u32, f32)], n_customers: usize, n_products: usize) -> Self {
        let mut history = vec![Vec::new(); n_customers];
        let mut buyers = vec![Vec::new(); n_products];
        for &(c, p, _) in train {
            history[c as usize].push(p);
            buyers[p as usize].push(c);
        }
        for h in &mut history {
            h.sort_unstable();
            h.dedup();
        }
        for b in &mut buyers {
            b.sort_unstable();
            b.dedup();
        }
        let mut co = vec![0f32; n_products];
        let mut touched: Vec<usize> = Vec::new();
        let neighbours = (0..n_products)
            .map(|i| {
                for &c in &buyers[i] {
                    for &j in &history[c as usize] {
                        let j = j as usize;
                        if j != i {
                            if co[j] == 0.0 {
                                touched.push(j);
                            }
                            co[j] += 1.0;
                        }
                    }
                }
                let ni = buyers[i].len() as f32;
                let mut list: Vec<(u32, f32)> = touched
                    .iter()
                    .map(|&j| (j as u32, co[j] / (ni * buyers[j].len() as f32).sqrt()))
                    .collect();
                for &j in &touched {
                    co[j] = 0.0;
                }
                touched.clear();
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                list.truncate(KNN_NEIGHBOURS);
                list
            })
            .collect();
        ItemKnn {
            neighbours,
            history,
            n_products,
        }
    }
}

impl Scorer for ItemKnn {
    fn scores(&self, customer: u32, out: &mut Vec<f32>) {
        out.resize(self.n_products, 0.0);
        out.iter_mut().for_each(|v| *v = 0.0);
        for &i in &self.history[customer as usize] {
            for &(j, s) in &self.neighbours[i as usize] {
                out[j as usize] += s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Vec<f32>>);
    impl Scorer for Fixed {
        fn scores(&self, c: u32, out: &mut Vec<f32>) {
            out.extend_from_slice(&self.0[c as usize]);
        }
    }

    /// Hand-made example checked against a direct computation.
    #[test]
    fn metrics_match_hand_computation() {
        // 6 products. Customer 0: held-out item 2, history {0}. Customer 1: held-out 5, history {1, 2}.
        let scores = Fixed(vec![
            vec![9.0, 1.0, 5.0, 7.0, 0.5, 0.1], // item 2 ranks 2nd after masking 0 (3 beats it)
            vec![0.0, 9.0, 9.0, 1.0, 2.0, 0.5], // item 5 ranks 3rd after masking 1, 2 (4 and 3 beat it)
        ]);
        let cases = vec![
            Case {
                customer: 0,
                item: 2,
                known: vec![0],
                negatives: vec![3, 4],
            },
            Case {
                customer: 1,
                item: 5,
                known: vec![1, 2],
                negatives: vec![0, 3],
            },
        ];
        let m = evaluate(&scores, &cases, 6);
        // Sampled: case 0 rank 1 (3 beats it), case 1 rank 1 (3 beats it; 0 does not).
        assert_eq!(m["sampled.hr@10"], 1.0);
        let expected = (1.0 / 3f64.log2() + 1.0 / 3f64.log2()) / 2.0;
        assert!((m["sampled.ndcg@10"] - expected).abs() < 1e-12);
        // Full: case 0 rank 1, case 1 rank 2.
        let expected_full = (1.0 / 3f64.log2() + 1.0 / 4f64.log2()) / 2.0;
        assert!((m["full.ndcg@10"] - expected_full).abs() < 1e-12);
        assert_eq!(m["full.recall@10"], 1.0);
        // All 6 products minus masked ones appear in some top-10 list.
        assert!((m["coverage@10"] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_against_the_held_out_item() {
        let scores = Fixed(vec![vec![1.0; 12]]);
        let cases = vec![Case {
            customer: 0,
            item: 0,
            known: vec![],
            negatives: (1..12).collect(),
        }];
        let m = evaluate(&scores, &cases, 12);
        assert_eq!(m["sampled.hr@10"], 0.0);
        assert_eq!(m["full.recall@10"], 0.0);
    }

    #[test]
    fn item_knn_prefers_co_bought_products() {
        // Customers 0..3 buy 0 and 1 together; customer 4 buys 0 only.
        let mut train = Vec::new();
        for c in 0..4 {
            train.push((c, 0, 1.0));
            train.push((c, 1, 1.0));
        }
        train.push((4, 0, 1.0));
        train.push((5, 2, 1.0));
        let knn = ItemKnn::fit(&train, 6, 3);
        let mut s = Vec::new();
        knn.scores(4, &mut s);
        assert!(s[1] > s[2]);
    }
}
