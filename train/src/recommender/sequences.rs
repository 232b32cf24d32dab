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

/// A training window: a run of at most `max_sequence` consecutive interactions of one customer,
/// of which those from `first_target` on are its targets and the earlier ones only context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingWindow {
    pub customer: u32,
    pub start: usize,
    pub end: usize,
    pub first_target: usize,
}

/// Each history cut into windows of `max_sequence` interactions from its latest one back, a
/// window every `max_sequence / 2` interactions. Each interaction is a target in exactly one
/// window and, except in a history's oldest window, is predicted with at least
/// `max_sequence / 2` earlier interactions in view: at scoring time the encoder reads a full
/// window, and with disjoint windows a target saw half a window on average (with baskets of
/// twenty lines, often nothing but its own basket's predecessors). Windows whose targets are
/// all views teach nothing and are left out.
pub fn training_windows(
    histories: &[Vec<SequenceEvent>],
    max_sequence: usize,
) -> Vec<TrainingWindow> {
    let max_sequence = max_sequence.max(1);
    let stride = (max_sequence / 2).max(1);
    let mut windows = Vec::new();
    for (c, h) in histories.iter().enumerate() {
        let mut end = h.len();
        while end > 0 {
            let start = end.saturating_sub(max_sequence);
            // The oldest window (the one reaching the history's start) owns all its events.
            let first_target = if start == 0 { 0 } else { end - stride };
            if h[first_target..end].iter().any(|e| e.is_target) {
                windows.push(TrainingWindow {
                    customer: c as u32,
                    start,
                    end,
                    first_target,
                });
            }
            end = first_target;
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
        let w = training_windows(&histories, 4);
        let spans: Vec<(u32, usize, usize, usize)> = w
            .iter()
            .map(|w| (w.customer, w.start, w.end, w.first_target))
            .collect();
        // Windows of 4 every 2: targets 5-6, 3-4, then the oldest window owns 0-2.
        // Customer 1 has views only: no window.
        assert_eq!(spans, vec![(0, 3, 7, 5), (0, 1, 5, 3), (0, 0, 3, 0)]);
    }

    #[test]
    fn every_purchase_is_a_target_once_with_half_a_window_in_view() {
        for max_sequence in [1, 2, 3, 4, 7, 50] {
            for len in 0..60 {
                let history: Vec<SequenceEvent> =
                    (0..len).map(|p| event(p as u32, p % 3 != 1)).collect();
                let windows = training_windows(std::slice::from_ref(&history), max_sequence);
                let mut times_target = vec![0; len];
                for w in &windows {
                    assert!(w.end - w.start <= max_sequence);
                    assert!(w.start <= w.first_target && w.first_target < w.end);
                    if w.start > 0 {
                        assert!(
                            w.first_target - w.start >= max_sequence - (max_sequence / 2).max(1)
                        );
                    }
                    for t in &mut times_target[w.first_target..w.end] {
                        *t += 1;
                    }
                }
                for (i, e) in history.iter().enumerate() {
                    // Views between windows may fall in no window's target part; purchases never.
                    if e.is_target {
                        assert_eq!(
                            times_target[i], 1,
                            "max {max_sequence}, len {len}, event {i}"
                        );
                    } else {
                        assert!(times_target[i] <= 1);
                    }
                }
            }
        }
    }
}
