//! The sequential customer encoder: self-attention over a customer's latest interactions
//! (SASRec, Kang & McAuley 2018), read as baskets.
//!
//! Items that share a timestamp (the lines of one invoice, the ratings of one sitting) are one
//! basket and have no order: every slot of a basket gets the same position (the basket's ordinal
//! in the window), and a slot reads only slots of *strictly earlier* baskets. So the prediction
//! made at a basket never sees that basket's own items, nor an order among them that a
//! tie-break made up.
//!
//! Two streams per slot keep that true through several blocks. The *query* stream of a slot
//! starts from its position alone and is refined by attention; what other slots read (the
//! *memory*) is the slot's own content (product vector, event kind, days since the previous
//! basket) plus its query stream. A slot's query stream only ever holds earlier baskets, so the
//! memory of slot `j` holds `j`'s basket and earlier ones, and reading only strictly earlier
//! baskets stays leak-free at every depth. Training reads the query stream of every product slot
//! as the prediction of that slot's product (all of a window's targets in one pass, as SASRec);
//! scoring appends one empty slot after the latest basket and reads its query stream: the next
//! basket.
//!
//! Optionally, *completion queries* predict an item from the rest of its own basket as well: a
//! query at a basket's position that reads the memory of earlier baskets and of its own basket's
//! other slots, but not the slot whose product it predicts. Memories only ever hold strictly
//! earlier baskets' query streams, so the hidden product cannot reach its query through another
//! slot either; the basket's other items are read as a set (nothing depends on their order).
//! Nothing reads a completion query. At scoring time one completion query per customer reads
//! the whole history from the latest basket's position: what goes with that basket.

use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};

use crate::dropout::dropout;

/// Buckets of the days since the previous basket: 0 = none (first basket of the window, the
/// start slot, the scoring slot), then `1 + floor(log2(1 + days))`, the last bucket open-ended.
pub const GAP_BUCKETS: usize = 12;

/// The attention bias of a slot pair that may not be read.
const BLOCKED: f32 = -1.0e9;

/// One interaction of a customer's history as the encoder reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceEvent {
    pub product: u32,
    /// Seconds; equal timestamps make one basket.
    pub ts: i64,
    /// A target event (a purchase) rather than a view or a cart.
    pub is_target: bool,
}

/// Shapes of a [`SequenceEncoder`] (saved in the bundle through the recommender's config).
#[derive(Config, Debug)]
pub struct SequenceEncoderConfig {
    pub embedding_dim: usize,
    /// Interactions per window (the latest ones at scoring time).
    #[config(default = 50)]
    pub max_sequence: usize,
    #[config(default = 2)]
    pub blocks: usize,
    #[config(default = 1)]
    pub heads: usize,
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Whether the customer's id embedding is added to the reading (kept here so that the
    /// model knows it from its own structure).
    #[config(default = false)]
    pub customer_embedding: bool,
    /// Weight of the latest basket's completion query in a customer's reading (0: the next
    /// basket's query alone).
    #[config(default = 0.0)]
    pub completion_weight: f64,
}

impl SequenceEncoderConfig {
    /// The message names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.max_sequence == 0 {
            return Err("max_sequence: must be at least 1, got 0".into());
        }
        if self.heads == 0 || !self.embedding_dim.is_multiple_of(self.heads) {
            return Err(format!(
                "heads: must divide embedding_dim ({}), got {}",
                self.embedding_dim, self.heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout: must be in [0, 1), got {}", self.dropout));
        }
        if !(0.0..=1.0).contains(&self.completion_weight) {
            return Err(format!(
                "completion_weight: must be in [0, 1], got {}",
                self.completion_weight
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> SequenceEncoder {
        let d = self.embedding_dim;
        let table = |rows: usize| {
            EmbeddingConfig::new(rows, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.05,
                })
                .init(device)
        };
        SequenceEncoder {
            start: table(1),
            // 0 for the start slot, then baskets 1..=max_sequence (the scoring slot after a full
            // window shares the last); one spare row keeps the table's shape stable.
            position: table(self.max_sequence + 2),
            kind: table(2),
            gap: table(GAP_BUCKETS),
            blocks: (0..self.blocks)
                .map(|_| SequenceBlock {
                    query_norm: LayerNormConfig::new(d).init(device),
                    memory_norm: LayerNormConfig::new(d).init(device),
                    query: LinearConfig::new(d, d).init(device),
                    key: LinearConfig::new(d, d).init(device),
                    value: LinearConfig::new(d, d).init(device),
                    output: LinearConfig::new(d, d).init(device),
                    ffn_norm: LayerNormConfig::new(d).init(device),
                    ffn_in: LinearConfig::new(d, d).init(device),
                    ffn_out: LinearConfig::new(d, d).init(device),
                    dropout: DropoutConfig::new(self.dropout).init(),
                    heads: self.heads,
                })
                .collect(),
            norm: LayerNormConfig::new(d).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            customer_embedding: self.customer_embedding,
            completion_weight: self.completion_weight,
        }
    }
}

/// Self-attention over baskets; see the module comment.
#[derive(Module, Debug)]
pub struct SequenceEncoder {
    /// Content of the start slot, which every slot may read (so no slot reads nothing).
    start: Embedding,
    /// Basket ordinal within the window.
    position: Embedding,
    /// 0 = target event (purchase), 1 = other event.
    kind: Embedding,
    /// Days since the previous basket, bucketed ([`GAP_BUCKETS`]).
    gap: Embedding,
    blocks: Vec<SequenceBlock>,
    norm: LayerNorm,
    dropout: Dropout,
    customer_embedding: bool,
    completion_weight: f64,
}

/// One pre-norm attention block: the query stream reads the memory, then a feed-forward layer.
#[derive(Module, Debug)]
pub struct SequenceBlock {
    query_norm: LayerNorm,
    memory_norm: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    ffn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    dropout: Dropout,
    heads: usize,
}

impl SequenceBlock {
    /// `x`: `[B, Tq, d]` (the queries), `memory`: `[B, Tk, d]`; `bias`: `[B, Tq, Tk]` (0 = may
    /// read, [`BLOCKED`] = may not).
    fn forward(&self, x: Tensor<3>, memory: Tensor<3>, bias: Tensor<3>) -> Tensor<3> {
        let [b, tq, d] = x.dims();
        let tk = memory.dims()[1];
        let (h, dh) = (self.heads, d / self.heads);
        let split = |y: Tensor<3>, t: usize| y.reshape([b, t, h, dh]).swap_dims(1, 2); // [B, h, T, dh]
        let memory = self.memory_norm.forward(memory);
        let q = split(self.query.forward(self.query_norm.forward(x.clone())), tq);
        let k = split(self.key.forward(memory.clone()), tk);
        let v = split(self.value.forward(memory), tk);
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt() + bias.unsqueeze_dim::<4>(1);
        let weights = dropout(&self.dropout, softmax(scores, 3));
        let read = weights.matmul(v).swap_dims(1, 2).reshape([b, tq, d]);
        let x = x + dropout(&self.dropout, self.output.forward(read));
        let ffn = self
            .ffn_out
            .forward(gelu(self.ffn_in.forward(self.ffn_norm.forward(x.clone()))));
        x + dropout(&self.dropout, ffn)
    }
}

impl SequenceEncoder {
    /// The basket-position table's parameter (tests compare its gradients).
    #[cfg(test)]
    pub(crate) fn position_weight_id(&self) -> burn::module::ParamId {
        self.position.weight.id
    }

    /// Whether the customer's id embedding is added to what the encoder reads.
    pub fn adds_customer_embedding(&self) -> bool {
        self.customer_embedding
    }

    /// Interactions per window.
    pub fn max_sequence(&self) -> usize {
        self.position.weight.dims()[0] - 2
    }

    /// Weight of the latest basket's completion query in a customer's reading.
    pub fn completion_weight(&self) -> f64 {
        self.completion_weight
    }

    pub(crate) fn set_completion_weight(&mut self, weight: f64) {
        self.completion_weight = weight;
    }

    /// The query stream of every slot, then of every completion query: `[B, T + Q, d]`;
    /// `products` are the hybrid vectors of the slots' products (`[B, T, d]`, any value where a
    /// slot holds none).
    pub fn forward(&self, input: &SequenceInput, products: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = products.dims();
        let start = self.start.weight.val().reshape([1, 1, d]).expand([b, t, d]);
        let position = self.position.forward(input.position.clone());
        let content = products * input.is_product.clone()
            + start * input.is_start.clone()
            + self.kind.forward(input.kind.clone())
            + self.gap.forward(input.gap.clone());
        let content = dropout(&self.dropout, content);
        let mut x = dropout(&self.dropout, position.clone());
        if let Some(queries) = &input.query_position {
            let queries = dropout(&self.dropout, self.position.forward(queries.clone()));
            x = Tensor::cat(vec![x, queries], 1);
        }
        for block in &self.blocks {
            // Memories hold the slots' own query streams only, never a completion query's.
            let memory = content.clone() + position.clone() + x.clone().narrow(1, 0, t);
            x = block.forward(x, memory, input.attention_bias.clone());
        }
        self.norm.forward(x)
    }
}

/// The slots of a batch of windows in host memory, padded to one length.
#[derive(Debug, Clone, Default)]
pub struct SequenceSlots {
    pub rows: usize,
    pub len: usize,
    /// `[rows * len]`: the product of each slot (0 where it holds none).
    pub products: Vec<u32>,
    pub is_product: Vec<f32>,
    pub is_start: Vec<f32>,
    pub position: Vec<u32>,
    pub kind: Vec<u32>,
    pub gap: Vec<u32>,
    /// Basket of each slot (0 = start slot, `u32::MAX` = padding): slot `i` reads slot `j` iff
    /// `basket[j] < basket[i]`.
    pub basket: Vec<u32>,
    /// Completion queries per row (see the module comment); the encoder reads `len + queries`
    /// rows per window, the queries after the slots.
    pub queries: usize,
    /// `[rows * queries]`: the basket each query completes (`u32::MAX` = padding): it reads
    /// slot `j` iff `basket[j] <= query_basket`, except `query_hidden`.
    pub query_basket: Vec<u32>,
    /// `[rows * queries]`: the position of that basket.
    pub query_position: Vec<u32>,
    /// `[rows * queries]`: the slot (within the row) whose product the query predicts, which it
    /// may not read (`u32::MAX`: none).
    pub query_hidden: Vec<u32>,
}

/// One window as slots: the start slot, then one slot per event (oldest first), then, for
/// scoring, one empty slot for the next basket.
struct Window {
    products: Vec<u32>,
    is_product: Vec<f32>,
    position: Vec<u32>,
    kind: Vec<u32>,
    gap: Vec<u32>,
    basket: Vec<u32>,
}

fn gap_bucket(seconds: i64) -> u32 {
    let days = seconds.max(0) as f64 / 86_400.0;
    1 + ((1.0 + days).log2().floor() as u32).min(GAP_BUCKETS as u32 - 2)
}

impl Window {
    /// `events` sorted by time. Positions are capped at `max_sequence`, the largest a training
    /// window reaches, so that the scoring slot after a full window reads from a position that
    /// training has taught (it shares the last one).
    fn of(events: &[SequenceEvent], max_sequence: usize, scoring_slot: bool) -> Self {
        let cap = max_sequence as u32;
        let n = 1 + events.len() + usize::from(scoring_slot);
        let mut w = Window {
            products: Vec::with_capacity(n),
            is_product: Vec::with_capacity(n),
            position: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            gap: Vec::with_capacity(n),
            basket: Vec::with_capacity(n),
        };
        w.push(0, 0.0, 0, 0, 0, 0);
        let mut basket = 0u32;
        let mut previous: Option<i64> = None;
        let mut gap = 0;
        for e in events {
            if previous != Some(e.ts) {
                gap = previous.map_or(0, |p| gap_bucket(e.ts - p));
                basket += 1;
                previous = Some(e.ts);
            }
            w.push(
                e.product,
                1.0,
                basket,
                basket.min(cap),
                u32::from(!e.is_target),
                gap,
            );
        }
        if scoring_slot {
            w.push(0, 0.0, basket + 1, (basket + 1).min(cap), 0, 0);
        }
        w
    }

    fn push(
        &mut self,
        product: u32,
        is_product: f32,
        basket: u32,
        position: u32,
        kind: u32,
        gap: u32,
    ) {
        self.products.push(product);
        self.is_product.push(is_product);
        self.position.push(position);
        self.kind.push(kind);
        self.gap.push(gap);
        self.basket.push(basket);
    }
}

impl SequenceSlots {
    /// Training windows: the start slot, then the events (each a target for its own slot).
    pub fn training(windows: &[&[SequenceEvent]], max_sequence: usize) -> Self {
        Self::of(windows, max_sequence, false)
    }

    /// Scoring windows: each customer's latest `max_sequence` events, then the slot whose query
    /// stream is the customer's next basket (the last slot of each row, see
    /// [`SequenceSlots::scoring_slots`]), and one completion query of the latest basket
    /// ([`SequenceSlots::completion_slots`]).
    pub fn scoring(histories: &[&[SequenceEvent]], max_sequence: usize) -> Self {
        let latest: Vec<&[SequenceEvent]> = histories
            .iter()
            .map(|h| latest_events(h, max_sequence))
            .collect();
        let slots = Self::of(&latest, max_sequence, true);
        let latest_basket: Vec<Vec<(u32, u32)>> = (0..slots.rows)
            .map(|r| {
                // The slot before the scoring slot: the latest event, or the start slot.
                let last = slots.used(r).saturating_sub(2);
                let at = r * slots.len + last;
                vec![(slots.basket[at], slots.position[at])]
            })
            .collect();
        slots.with_queries(&latest_basket, &vec![Vec::new(); latest_basket.len()])
    }

    /// Training windows plus, per row, a completion query for each of the slots listed in
    /// `completed[row]` (indices within the row): at the slot's basket, hiding the slot.
    pub fn with_completion_queries(self, completed: &[Vec<u32>]) -> Self {
        let baskets: Vec<Vec<(u32, u32)>> = completed
            .iter()
            .enumerate()
            .map(|(r, slots)| {
                slots
                    .iter()
                    .map(|&j| {
                        let at = r * self.len + j as usize;
                        (self.basket[at], self.position[at])
                    })
                    .collect()
            })
            .collect();
        self.with_queries(&baskets, completed)
    }

    /// Adds per row the queries `(basket, position)` of `queries[row]`, each hiding the slot at
    /// the same index of `hidden[row]` (none where that list is shorter).
    fn with_queries(mut self, queries: &[Vec<(u32, u32)>], hidden: &[Vec<u32>]) -> Self {
        let q = queries.iter().map(Vec::len).max().unwrap_or(0);
        self.queries = q;
        self.query_basket = vec![u32::MAX; self.rows * q];
        self.query_position = vec![0; self.rows * q];
        self.query_hidden = vec![u32::MAX; self.rows * q];
        for (r, row) in queries.iter().enumerate().take(self.rows) {
            for (k, &(basket, position)) in row.iter().enumerate() {
                self.query_basket[r * q + k] = basket;
                self.query_position[r * q + k] = position;
                if let Some(&h) = hidden.get(r).and_then(|h| h.get(k)) {
                    self.query_hidden[r * q + k] = h;
                }
            }
        }
        self
    }

    /// Rows of the encoder's output per window: the slots, then the completion queries.
    pub fn width(&self) -> usize {
        self.len + self.queries
    }

    /// Flat index of slot `slot` of row `row` in the encoder's output (`[rows * width]`).
    pub fn flat_slot(&self, row: usize, slot: usize) -> u32 {
        (row * self.width() + slot) as u32
    }

    /// Flat index of completion query `k` of row `row` in the encoder's output.
    pub fn flat_query(&self, row: usize, k: usize) -> u32 {
        (row * self.width() + self.len + k) as u32
    }

    /// Slots of row `r` before its padding.
    fn used(&self, r: usize) -> usize {
        let row = &self.basket[r * self.len..(r + 1) * self.len];
        row.iter().take_while(|&&b| b != u32::MAX).count()
    }

    fn of(windows: &[&[SequenceEvent]], max_sequence: usize, scoring_slot: bool) -> Self {
        let windows: Vec<Window> = windows
            .iter()
            .map(|w| Window::of(w, max_sequence, scoring_slot))
            .collect();
        let len = windows.iter().map(|w| w.basket.len()).max().unwrap_or(1);
        let rows = windows.len();
        let mut s = SequenceSlots {
            rows,
            len,
            products: vec![0; rows * len],
            is_product: vec![0.0; rows * len],
            is_start: vec![0.0; rows * len],
            position: vec![0; rows * len],
            kind: vec![0; rows * len],
            gap: vec![0; rows * len],
            basket: vec![u32::MAX; rows * len],
            ..SequenceSlots::default()
        };
        for (r, w) in windows.iter().enumerate() {
            let at = r * len;
            let n = w.basket.len();
            s.products[at..at + n].copy_from_slice(&w.products);
            s.is_product[at..at + n].copy_from_slice(&w.is_product);
            s.is_start[at] = 1.0;
            s.position[at..at + n].copy_from_slice(&w.position);
            s.kind[at..at + n].copy_from_slice(&w.kind);
            s.gap[at..at + n].copy_from_slice(&w.gap);
            s.basket[at..at + n].copy_from_slice(&w.basket);
        }
        s
    }

    /// Flat index in the encoder's output of each row's scoring slot (its last non-padding
    /// slot).
    pub fn scoring_slots(&self) -> Vec<u32> {
        (0..self.rows)
            .map(|r| self.flat_slot(r, self.used(r).max(1) - 1))
            .collect()
    }

    /// Flat index in the encoder's output of each row's first completion query (from
    /// [`SequenceSlots::scoring`]: the latest basket's).
    pub fn completion_slots(&self) -> Vec<u32> {
        (0..self.rows).map(|r| self.flat_query(r, 0)).collect()
    }

    /// `[rows, len + queries, len]` attention bias. Slot `i` may read slot `j` iff `j`'s basket
    /// is strictly earlier; a completion query reads its own basket too, but for the slot it
    /// hides. The start slot, padding and padded queries read the start slot (so no row is
    /// empty).
    fn attention_bias(&self) -> Vec<f32> {
        let (rows, len, width) = (self.rows, self.len, self.width());
        let mut bias = vec![BLOCKED; rows * width * len];
        for r in 0..rows {
            let baskets = &self.basket[r * len..(r + 1) * len];
            let row_bias = &mut bias[r * width * len..(r + 1) * width * len];
            for (i, &bi) in baskets.iter().enumerate() {
                let out = &mut row_bias[i * len..(i + 1) * len];
                if bi == 0 || bi == u32::MAX {
                    out[0] = 0.0;
                    continue;
                }
                for (j, &bj) in baskets.iter().enumerate() {
                    if bj < bi {
                        out[j] = 0.0;
                    }
                }
            }
            for k in 0..self.queries {
                let out = &mut row_bias[(len + k) * len..(len + k + 1) * len];
                let (qb, hidden) = (
                    self.query_basket[r * self.queries + k],
                    self.query_hidden[r * self.queries + k],
                );
                out[0] = 0.0;
                if qb == u32::MAX {
                    continue;
                }
                for (j, &bj) in baskets.iter().enumerate() {
                    if bj <= qb && j as u32 != hidden {
                        out[j] = 0.0;
                    }
                }
            }
        }
        bias
    }

    /// The slots as tensors on a device.
    pub fn to_device(&self, device: &Device) -> SequenceInput {
        let (rows, len) = (self.rows, self.len);
        let int = |v: &[u32]| {
            Tensor::<2, Int>::from_data(
                TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), [rows, len]),
                device,
            )
        };
        let column =
            |v: &[f32]| Tensor::<3>::from_data(TensorData::new(v.to_vec(), [rows, len, 1]), device);
        SequenceInput {
            products: int(&self.products),
            is_product: column(&self.is_product),
            is_start: column(&self.is_start),
            position: int(&self.position),
            kind: int(&self.kind),
            gap: int(&self.gap),
            query_position: (self.queries > 0).then(|| {
                let v: Vec<i64> = self.query_position.iter().map(|&x| x as i64).collect();
                Tensor::<2, Int>::from_data(TensorData::new(v, [rows, self.queries]), device)
            }),
            attention_bias: Tensor::from_data(
                TensorData::new(self.attention_bias(), [rows, self.width(), len]),
                device,
            ),
        }
    }
}

/// The latest `max_sequence` events of a history sorted by time.
pub fn latest_events(history: &[SequenceEvent], max_sequence: usize) -> &[SequenceEvent] {
    &history[history.len().saturating_sub(max_sequence)..]
}

/// The slots of a batch on a device (see [`SequenceSlots`]).
#[derive(Debug, Clone)]
pub struct SequenceInput {
    /// `[B, T]`.
    pub products: Tensor<2, Int>,
    /// `[B, T, 1]`: 1 where the slot holds a product.
    pub is_product: Tensor<3>,
    /// `[B, T, 1]`: 1 for the start slot.
    pub is_start: Tensor<3>,
    pub position: Tensor<2, Int>,
    pub kind: Tensor<2, Int>,
    pub gap: Tensor<2, Int>,
    /// `[B, Q]`: the completion queries' positions (`None` without queries).
    pub query_position: Option<Tensor<2, Int>>,
    /// `[B, T + Q, T]`.
    pub attention_bias: Tensor<3>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(product: u32, ts: i64) -> SequenceEvent {
        SequenceEvent {
            product,
            ts,
            is_target: true,
        }
    }

    #[test]
    fn a_basket_shares_one_position_and_reads_only_earlier_baskets() {
        // Products 7 and 8 share a timestamp: one basket.
        let history = [
            event(5, 0),
            event(7, 86_400),
            event(8, 86_400),
            event(9, 3 * 86_400),
        ];
        let s = SequenceSlots::scoring(&[&history], 10);
        assert_eq!(s.len, 6);
        assert_eq!(s.basket, vec![0, 1, 2, 2, 3, 4]);
        assert_eq!(s.position, vec![0, 1, 2, 2, 3, 4]);
        assert_eq!(s.gap, vec![0, 0, 2, 2, 2, 0]);
        assert_eq!(s.scoring_slots(), vec![5]);
        let bias = s.attention_bias();
        let reads =
            |i: usize| -> Vec<usize> { (0..6).filter(|&j| bias[i * 6 + j] == 0.0).collect() };
        assert_eq!(reads(0), vec![0]);
        assert_eq!(reads(1), vec![0]);
        // Neither slot of the basket reads the other.
        assert_eq!(reads(2), vec![0, 1]);
        assert_eq!(reads(3), vec![0, 1]);
        assert_eq!(reads(4), vec![0, 1, 2, 3]);
        assert_eq!(reads(5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn short_windows_are_padded_and_padding_is_never_read() {
        let long = [event(1, 0), event(2, 1), event(3, 2)];
        let short = [event(4, 0)];
        let s = SequenceSlots::scoring(&[&long, &short], 10);
        assert_eq!((s.rows, s.len), (2, 5));
        // Each row is read out as its 5 slots and its completion query.
        assert_eq!(s.scoring_slots(), vec![4, 8]);
        assert_eq!(s.completion_slots(), vec![5, 11]);
        let bias = s.attention_bias();
        for i in 0..6 {
            for j in 3..5 {
                assert_eq!(bias[(6 + i) * 5 + j], BLOCKED, "slot {i} of the short row");
            }
        }
        // Only the latest events are kept, positions capped.
        let s = SequenceSlots::scoring(&[&long], 2);
        assert_eq!(s.products, vec![0, 2, 3, 0]);
        assert_eq!(s.position, vec![0, 1, 2, 2]);
    }

    /// An encoder of width `d` (two heads, windows of 10) with `blocks` blocks, seeded.
    fn test_encoder(d: usize, blocks: usize, seed: u64) -> SequenceEncoder {
        let device = Device::flex();
        let config = SequenceEncoderConfig::new(d)
            .with_max_sequence(10)
            .with_blocks(blocks)
            .with_heads(2);
        crate::seeded_init(&device, seed, || config.init(&device))
    }

    fn read(
        encoder: &SequenceEncoder,
        slots: &SequenceSlots,
        products: &[f32],
        d: usize,
    ) -> Vec<f32> {
        let device = Device::flex();
        let input = slots.to_device(&device);
        let products = Tensor::<3>::from_data(
            TensorData::new(products.to_vec(), [slots.rows, slots.len, d]),
            &device,
        );
        encoder
            .forward(&input, products)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values")
    }

    /// What the encoder reads at a basket depends on earlier baskets only: changing the
    /// products of that basket or of any later one leaves the reading of its slots unchanged,
    /// through every block, and changing an earlier basket changes it.
    #[test]
    fn a_basket_is_read_from_earlier_baskets_only() {
        let d = 8;
        let encoder = test_encoder(d, 3, 7);
        // Baskets: {1}, {2, 3}, {4}, {5, 6}; slot 0 is the start slot.
        let history = [
            event(1, 10),
            event(2, 20),
            event(3, 20),
            event(4, 30),
            event(5, 40),
            event(6, 40),
        ];
        let slots = SequenceSlots::training(&[&history], 10);
        let basket_of_slot = [0usize, 1, 2, 2, 3, 4, 4];
        let mut seed = 1u32;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let products = random(slots.len * d);
        let base = read(&encoder, &slots, &products, d);
        for changed_basket in 1..=4 {
            let mut other = products.clone();
            let replacement = random(slots.len * d);
            for (slot, &b) in basket_of_slot.iter().enumerate() {
                if b == changed_basket {
                    other[slot * d..(slot + 1) * d]
                        .copy_from_slice(&replacement[slot * d..(slot + 1) * d]);
                }
            }
            let after = read(&encoder, &slots, &other, d);
            for (slot, &b) in basket_of_slot.iter().enumerate() {
                let diff: f32 = (0..d)
                    .map(|k| (base[slot * d + k] - after[slot * d + k]).abs())
                    .fold(0.0, f32::max);
                if b <= changed_basket {
                    assert!(diff < 1e-6, "slot {slot} (basket {b}) moved by {diff} when basket {changed_basket} changed");
                } else {
                    assert!(
                        diff > 1e-4,
                        "slot {slot} (basket {b}) did not read basket {changed_basket}"
                    );
                }
            }
        }
    }

    /// A completion query reads the other items of its basket and earlier baskets, through every
    /// block, but never the item it predicts nor a later basket; it changes no slot's reading.
    #[test]
    fn a_completion_query_reads_its_basket_but_not_its_own_item() {
        let d = 8;
        let encoder = test_encoder(d, 3, 5);
        // Baskets: {1}, {2, 3, 4}, {5}; the query completes slot 3 (product 3) of basket 2.
        let history = [
            event(1, 10),
            event(2, 20),
            event(3, 20),
            event(4, 20),
            event(5, 30),
        ];
        let plain = SequenceSlots::training(&[&history], 10);
        let slots = plain.clone().with_completion_queries(&[vec![3]]);
        assert_eq!((slots.len, slots.queries, slots.width()), (6, 1, 7));
        let query = slots.flat_query(0, 0) as usize;
        let products: Vec<f32> = (0..slots.len * d)
            .map(|i| ((i * 29) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let base = read(&encoder, &slots, &products, d);
        // The slots read the same with or without the query.
        let without = read(&encoder, &plain, &products, d);
        for (a, b) in without.iter().zip(&base) {
            assert!((a - b).abs() < 1e-6);
        }
        let moved = |slot: usize| -> f32 {
            let mut other = products.clone();
            // Not a uniform shift, which the layer norms would remove.
            for (k, v) in other[slot * d..(slot + 1) * d].iter_mut().enumerate() {
                *v += 0.1 * k as f32 - 0.3;
            }
            let after = read(&encoder, &slots, &other, d);
            (0..d)
                .map(|k| (base[query * d + k] - after[query * d + k]).abs())
                .fold(0.0, f32::max)
        };
        assert!(moved(3) < 1e-6, "the hidden item reached its query");
        assert!(moved(5) < 1e-6, "a later basket reached the query");
        for slot in [1, 2, 4] {
            assert!(moved(slot) > 1e-4, "slot {slot} was not read");
        }
    }

    /// The latest basket's completion query at scoring time reads what a training query of one
    /// more item in that basket reads.
    #[test]
    fn the_scoring_completion_query_reads_like_a_training_one() {
        let d = 8;
        let encoder = test_encoder(d, 2, 11);
        let history = [event(1, 10), event(2, 20), event(3, 20)];
        let longer = [event(1, 10), event(2, 20), event(3, 20), event(4, 20)];
        let scoring = SequenceSlots::scoring(&[&history], 10);
        let training = SequenceSlots::training(&[&longer], 10).with_completion_queries(&[vec![4]]);
        assert_eq!(scoring.len, training.len);
        let products: Vec<f32> = (0..scoring.len * d)
            .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let a = read(&encoder, &scoring, &products, d);
        let b = read(&encoder, &training, &products, d);
        let (qa, qb) = (
            scoring.completion_slots()[0] as usize,
            training.flat_query(0, 0) as usize,
        );
        for k in 0..d {
            assert!((a[qa * d + k] - b[qb * d + k]).abs() < 1e-6);
        }
    }

    /// The scoring slot reads what a training slot of the next basket reads: scoring a history
    /// and training on it with one more basket agree at that basket.
    #[test]
    fn the_scoring_slot_reads_like_the_next_baskets_training_slot() {
        let d = 8;
        let encoder = test_encoder(d, 2, 9);
        let history = [event(1, 10), event(2, 20), event(3, 20)];
        let longer = [event(1, 10), event(2, 20), event(3, 20), event(4, 30)];
        let scoring = SequenceSlots::scoring(&[&history], 10);
        let training = SequenceSlots::training(&[&longer], 10);
        assert_eq!(scoring.len, training.len);
        // Product vectors: the same for the shared slots; the last slot's never matters.
        let products: Vec<f32> = (0..scoring.len * d)
            .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let a = read(&encoder, &scoring, &products, d);
        let b = read(&encoder, &training, &products, d);
        let last = scoring.len - 1;
        for k in 0..d {
            assert!((a[last * d + k] - b[last * d + k]).abs() < 1e-6);
        }
    }
}
