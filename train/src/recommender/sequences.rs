//! Customers' histories as the sequential encoder reads them: each customer's allowed
//! interactions in time order, and the training windows cut from them.

use std::collections::HashSet;

use shopcast_datasets::interactions::RecommenderData;
use shopcast_model::SequenceEvent;

/// Per customer, their interactions among the `allowed` pairs, oldest first (ties in the order
/// of `data.pairs`, which the encoder does not read: a basket is a set to it).
pub fn histories(data: &RecommenderData, allowed: &HashSet<(u32, u32)>) -> Vec<Vec<SequenceEvent>> {
    let mut out = vec![Vec::new(); data.customers.len()];
    // `pairs` is sorted by (customer, time, product).
    for p in &data.pairs {
        if allowed.contains(&(p.customer, p.product)) {
            out[p.customer as usize].push(SequenceEvent {
                product: p.product,
                ts: p.ts,
                is_target: p.is_target,
            });
        }
    }
    out
}

/// A training window: a run of at most `max_sequence` consecutive interactions of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingWindow {
    pub customer: u32,
    pub start: usize,
    pub end: usize,
}

/// Each history cut into windows of `max_sequence` interactions from its latest one back (the
/// oldest window may be shorter); windows without a target event teach nothing and are left out.
pub fn training_windows(
    histories: &[Vec<SequenceEvent>],
    max_sequence: usize,
) -> Vec<TrainingWindow> {
    let mut windows = Vec::new();
    for (c, h) in histories.iter().enumerate() {
        let mut end = h.len();
        while end > 0 {
            let start = end.saturating_sub(max_sequence.max(1));
            if h[start..end].iter().any(|e| e.is_target) {
                windows.push(TrainingWindow {
                    customer: c as u32,
                    start,
                    end,
                });
            }
            end = start;
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(product: u32, is_target: bool) -> SequenceEvent {
        SequenceEvent {
            product,
            ts: product as i64,
            is_target,
        }
    }

    #[test]
    fn windows_cover_each_history_from_its_end() {
        let histories = vec![
            (0..7).map(|p| event(p, true)).collect::<Vec<_>>(),
            vec![event(0, false), event(1, false)],
            vec![],
        ];
        let w = training_windows(&histories, 3);
        let spans: Vec<(u32, usize, usize)> =
            w.iter().map(|w| (w.customer, w.start, w.end)).collect();
        // Customer 1 has views only: no window.
        assert_eq!(spans, vec![(0, 4, 7), (0, 1, 4), (0, 0, 1)]);
    }
}
