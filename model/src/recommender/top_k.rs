//! Top-k products per customer without sorting whole rows: a host pass over blocks of scores on
//! the CPU backends, block maxima on the device for GPUs; and [`TopK`], the one selector of the
//! best `k` scored ids that training's evaluation and the scoring jobs share.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use rayon::prelude::*;

use super::{ProductMatrix, Recommender};
use crate::host::{host_values, matmul};

impl Recommender {
    /// The `k` best products `(index, score)` per customer `[C, d]`, best first (ties: lower
    /// index first), leaving out each customer's `lists[c]` and every `blocked` product; fewer
    /// than `k` when not enough are left.
    ///
    /// Burn's `topk` sorts whole rows, which on a 20k-product catalogue costs several times the
    /// matrix product that made the scores, and its `gather` is slow on the CPU backends. So:
    /// - on a CPU backend (flex, ndarray), whose tensors live in host memory, the score matrix
    ///   is read as it is and one pass per row keeps the best `k` allowed products (most scores
    ///   fall below the k-th best so far at the first comparison);
    /// - on a GPU, on the device: the score matrix cut into blocks of about sqrt(P) columns, the
    ///   maximum of every block and the `k + m` blocks with the largest maxima (`m` the longest
    ///   exclusion list: the best `k` allowed products lie in them, as a product outside them is
    ///   beaten by `k + m` block maxima of which at most `m` are excluded). Only those blocks'
    ///   scores, about `(k + m) sqrt(P)` per customer instead of `P`, are read back, and the
    ///   host picks the best `k` allowed among them. Customers with long exclusion lists get
    ///   their exclusions written into the score matrix on the device first, so that `k` blocks
    ///   suffice.
    pub fn top_k_excluding(
        &self,
        customers: Tensor<2>,
        products: &ProductMatrix,
        lists: &[&[u32]],
        blocked: &[u32],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, String> {
        let on_host = crate::device::memory_is_host(&customers.device());
        self.select_top_k(customers, products, lists, blocked, k, on_host)
    }

    /// [`Recommender::top_k_excluding`] with the path chosen by the caller (the tests run the
    /// GPU path on the CPU too).
    pub(super) fn select_top_k(
        &self,
        customers: Tensor<2>,
        products: &ProductMatrix,
        lists: &[&[u32]],
        blocked: &[u32],
        k: usize,
        on_host: bool,
    ) -> Result<Vec<Vec<(u32, f32)>>, String> {
        let rows = lists.len();
        let n_p = products.len();
        if rows == 0 || n_p == 0 || k == 0 {
            return Ok(vec![Vec::new(); rows]);
        }
        let mut blocked_sorted = blocked.to_vec();
        blocked_sorted.sort_unstable();
        if on_host && self.neumf.is_none() {
            return host_top_k(customers, products, lists, &blocked_sorted, k);
        }
        let device = customers.device();
        let mut scores = self.score_all(customers, products);
        let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0) + blocked.len();
        // A CPU backend's tensors are in host memory already: read the scores as they are
        // (one block per row) and select there.
        let block = if on_host {
            n_p
        } else {
            block_size(n_p, k + longest)
        };
        let blocks = n_p.div_ceil(block);
        let (wide, penalised) = if on_host || (k + longest) * 2 <= blocks {
            (k + longest, false)
        } else {
            let ex = Exclusions::new(lists, blocked, &device);
            scores = scores.scatter(1, ex.indices, ex.penalties, IndexingUpdateOp::Add);
            (k.min(blocks), true)
        };
        // Held as `TensorData` and borrowed as a slice: on a CPU backend that is the score
        // matrix itself, no copy.
        let read = |t: Tensor<2>| -> TensorData { t.into_data().convert::<f32>() };
        // Per row, the candidate blocks (all of them when the catalogue is read back whole) and
        // their scores, `block` per candidate block.
        let (top_blocks, values, wide) = if on_host || wide * block * 2 >= n_p {
            // Small catalogue, or most blocks needed anyway: read the rows back whole.
            let padded = pad_columns(scores, blocks * block);
            let all: Vec<i64> = (0..blocks as i64).collect();
            (all.repeat(rows), read(padded), blocks)
        } else {
            let blocked_scores = pad_columns(scores, blocks * block).reshape([rows, blocks, block]);
            let maxima = blocked_scores.clone().max_dim(2).reshape([rows, blocks]);
            let (_, top_blocks) = maxima.topk_with_indices(wide, 1); // [rows, wide]
            let candidates = blocked_scores.gather(
                1,
                top_blocks
                    .clone()
                    .reshape([rows, wide, 1])
                    .expand([rows, wide, block]),
            );
            let top_blocks = top_blocks
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| format!("reading indices back from the device: {e:?}"))?;
            (
                top_blocks,
                read(candidates.reshape([rows, wide * block])),
                wide,
            )
        };
        let values = values
            .as_slice::<f32>()
            .map_err(|e| format!("reading scores back from the device: {e:?}"))?;
        // Rows are independent: select on every core.
        Ok(lists
            .par_iter()
            .enumerate()
            .map(|(row, own)| {
                let mut best = AllowedTopK::new(k, own, &blocked_sorted, n_p, !penalised);
                for (j, &b) in top_blocks[row * wide..(row + 1) * wide].iter().enumerate() {
                    let first = (row * wide + j) * block;
                    best.scan(&values[first..first + block], b as usize * block);
                }
                best.into_sorted()
            })
            .collect())
    }
}

/// Top-k with exclusions on the CPU backends for the two-tower model: scores are computed in
/// blocks of a few customers by 2048 products straight into a buffer that stays in cache and
/// selected from there, so the `[C, P]` score matrix is never written to memory. Each element
/// is the same `[u, 1] . [v, bias]` product (in the same order) as [`Recommender::score_all`].
fn host_top_k(
    customers: Tensor<2>,
    products: &ProductMatrix,
    lists: &[&[u32]],
    blocked_sorted: &[u32],
    k: usize,
) -> Result<Vec<Vec<(u32, f32)>>, String> {
    // About 48 customers x 2048 products per block (measured best of 16-48 rows; the block,
    // 384 KiB, stays in the core's cache), in a number of groups that divides evenly over
    // the threads.
    const BLOCK: usize = 2048;
    let threads = rayon::current_num_threads().max(1);
    let [rows, d] = customers.dims();
    let n_p = products.len();
    let d1 = d + 1;
    let catalogue = products.host_rows()?;
    let u = host_values(customers)?;
    let mut with_one = vec![1f32; rows * d1];
    for (dst, src) in with_one.chunks_exact_mut(d1).zip(u.chunks_exact(d.max(1))) {
        dst[..d].copy_from_slice(&src[..d]);
    }
    let group = rows
        .div_ceil(rows.div_ceil(48).next_multiple_of(threads))
        .max(1);
    let groups: Vec<usize> = (0..rows).step_by(group).collect();
    let selected: Vec<Vec<Vec<(u32, f32)>>> = groups
        .par_iter()
        .map(|&r0| {
            let g = group.min(rows - r0);
            let mut best: Vec<AllowedTopK> = (r0..r0 + g)
                .map(|r| AllowedTopK::new(k, lists[r], blocked_sorted, n_p, true))
                .collect();
            let mut scores = vec![0f32; g * BLOCK];
            for p0 in (0..n_p).step_by(BLOCK) {
                let pb = BLOCK.min(n_p - p0);
                matmul(
                    &mut scores,
                    (g, pb, d1),
                    false,
                    (&with_one[r0 * d1..], d1, 1),
                    (&catalogue[p0 * d1..], 1, d1),
                );
                for (i, b) in best.iter_mut().enumerate() {
                    b.scan(&scores[i * pb..(i + 1) * pb], p0);
                }
            }
            best.into_iter().map(AllowedTopK::into_sorted).collect()
        })
        .collect();
    Ok(selected.into_iter().flatten().collect())
}

/// The best `k` of a stream of scored ids (payload `T` carried along): higher score first, ties
/// by lower id. The one selector of evaluation (`train`), `recommend` and `audience`.
#[derive(Debug, Clone)]
pub struct TopK<T = ()> {
    k: usize,
    /// Sorted: best first, ties by id.
    best: Vec<(u32, f32, T)>,
    /// Scores below this cannot enter (the k-th best so far, once there are k).
    floor: f32,
}

/// Scores at or below this are excluded (masked) entries, never selected.
const EXCLUDED: f32 = -1.0e29;

impl<T: Copy> TopK<T> {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            best: Vec::with_capacity(k + 1),
            floor: EXCLUDED,
        }
    }

    fn better(a: (u32, f32), b: (u32, f32)) -> bool {
        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)).is_lt()
    }

    /// Whether `(id, score)` would enter now: the cheap test to run before anything costly.
    pub fn would_enter(&self, id: u32, score: f32) -> bool {
        if score < self.floor || score <= EXCLUDED || self.k == 0 {
            return false;
        }
        self.best.len() < self.k || {
            let (last_id, last_score, _) = self.best[self.k - 1];
            Self::better((id, score), (last_id, last_score))
        }
    }

    /// Offers one candidate; it is kept when it is among the best `k` so far.
    pub fn offer(&mut self, id: u32, score: f32, payload: T) {
        if !self.would_enter(id, score) {
            return;
        }
        let at = self
            .best
            .partition_point(|&(i, s, _)| Self::better((i, s), (id, score)));
        self.best.insert(at, (id, score, payload));
        self.best.truncate(self.k);
        if self.best.len() == self.k {
            self.floor = self.best[self.k - 1].1;
        }
    }

    /// The lowest score that may still enter (scores below it cannot).
    pub fn floor(&self) -> f32 {
        self.floor
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<(u32, f32, T)> {
        self.best
    }
}

impl TopK {
    /// The best `k` indices of a whole row of scores, best first (masked entries, at
    /// `-inf`, and NaN are never selected).
    pub fn of_row(scores: &[f32], k: usize) -> Vec<u32> {
        let mut best = TopK::new(k);
        for (p, &v) in scores.iter().enumerate() {
            if !v.is_nan() {
                best.offer(p as u32, v, ());
            }
        }
        best.into_sorted().into_iter().map(|(p, _, ())| p).collect()
    }
}

/// The best `k` allowed products of one customer, fed scores block by block: [`TopK`] with the
/// customer's own products and the blocked ones left out.
struct AllowedTopK<'a> {
    best: TopK,
    own: Vec<u32>,
    blocked: &'a [u32],
    n_p: usize,
    /// False when the exclusions were already written into the scores (as penalties).
    check_exclusions: bool,
}

impl<'a> AllowedTopK<'a> {
    fn new(k: usize, own: &[u32], blocked: &'a [u32], n_p: usize, check: bool) -> Self {
        let mut own = own.to_vec();
        own.sort_unstable();
        AllowedTopK {
            best: TopK::new(k),
            own,
            blocked,
            n_p,
            check_exclusions: check,
        }
    }

    fn allowed(&self, p: u32) -> bool {
        (p as usize) < self.n_p
            && (!self.check_exclusions
                || (self.own.binary_search(&p).is_err() && self.blocked.binary_search(&p).is_err()))
    }

    /// Offers `scores` of products `first, first + 1, ...`.
    fn scan(&mut self, scores: &[f32], first: usize) {
        for (run, chunk) in scores.chunks(64).enumerate() {
            // A vectorised maximum skips runs of 64 scores that cannot enter.
            if chunk.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) < self.best.floor() {
                continue;
            }
            for (within, &v) in chunk.iter().enumerate() {
                let p = (first + run * 64 + within) as u32;
                // Exclusions are looked up only for scores that would enter.
                if self.best.would_enter(p, v) && self.allowed(p) {
                    self.best.offer(p, v, ());
                }
            }
        }
    }

    fn into_sorted(self) -> Vec<(u32, f32)> {
        self.best
            .into_sorted()
            .into_iter()
            .map(|(p, v, ())| (p, v))
            .collect()
    }
}

/// `scores` widened to `width` columns with a value below any score (penalised ones included).
fn pad_columns(scores: Tensor<2>, width: usize) -> Tensor<2> {
    let [rows, p] = scores.dims();
    if width <= p {
        return scores;
    }
    let pad = Tensor::<2>::full([rows, width - p], -1.0e38, &scores.device());
    Tensor::cat(vec![scores, pad], 1)
}

/// Products to keep out of each customer's list (already bought, out of stock), as a small
/// `[C, m]` table of product indices and penalties that is added onto the score matrix on the
/// device: m is the longest list, far smaller than the catalogue, so nothing catalogue-sized
/// crosses from the host.
#[derive(Debug, Clone)]
struct Exclusions {
    indices: Tensor<2, Int>,
    penalties: Tensor<2>,
}

impl Exclusions {
    /// Each row excludes its own list and every product of `blocked`.
    fn new(lists: &[&[u32]], blocked: &[u32], device: &Device) -> Self {
        let rows = lists.len();
        let width = lists.iter().map(|l| l.len()).max().unwrap_or(0) + blocked.len();
        let width = width.max(1);
        // Padding adds 0 to product 0.
        let mut indices = vec![0i64; rows * width];
        let mut penalties = vec![0f32; rows * width];
        for (r, list) in lists.iter().enumerate() {
            for (j, &p) in list.iter().chain(blocked).enumerate() {
                indices[r * width + j] = p as i64;
                penalties[r * width + j] = -1.0e30;
            }
        }
        Exclusions {
            indices: Tensor::from_data(TensorData::new(indices, [rows, width]), device),
            penalties: Tensor::from_data(TensorData::new(penalties, [rows, width]), device),
        }
    }
}

/// Columns per block: about sqrt(P) and at least `k`, preferably a divisor of P (padding the
/// score matrix to whole blocks costs a copy of it).
fn block_size(p: usize, k: usize) -> usize {
    let root = ((p as f64).sqrt().ceil() as usize).max(1);
    let lowest = k.max(1).max(root / 2);
    (root.max(lowest)..=2 * root.max(lowest))
        .find(|b| p.is_multiple_of(*b))
        .or_else(|| (lowest..root).rev().find(|b| p.is_multiple_of(*b)))
        .unwrap_or(root.max(lowest))
}
