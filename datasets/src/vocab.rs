//! Id vocabularies: a business's string ids mapped to dense indices, stored in the bundle.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A sorted, deduplicated list of ids; an id's position is its index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct IdVocab {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl From<Vec<String>> for IdVocab {
    fn from(ids: Vec<String>) -> Self {
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        IdVocab { ids, index }
    }
}

impl From<IdVocab> for Vec<String> {
    fn from(v: IdVocab) -> Self {
        v.ids
    }
}

impl IdVocab {
    /// Builds a vocabulary from ids in any order, with duplicates; the result is sorted so that
    /// the same data always gives the same indices.
    pub fn build<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut v: Vec<String> = ids.into_iter().map(str::to_string).collect();
        v.sort_unstable();
        v.dedup();
        v.into()
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn id(&self, index: u32) -> &str {
        &self.ids[index as usize]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

impl IdVocab {
    /// Each index's rank when the ids are put in their natural order ([`natural_cmp`]): the
    /// order in which ties between interactions at one timestamp are broken, so that "2" comes
    /// before "100" as it does in the field's tools.
    pub fn natural_ranks(&self) -> Vec<u32> {
        let mut by_natural: Vec<u32> = (0..self.ids.len() as u32).collect();
        by_natural.sort_by(|&a, &b| natural_cmp(&self.ids[a as usize], &self.ids[b as usize]));
        let mut rank = vec![0u32; self.ids.len()];
        for (r, &i) in by_natural.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        rank
    }
}

/// Natural order of ids: runs of digits compare as numbers ("2" < "100", "A9" < "A10"), other
/// runs as text; ids that this leaves equal ("01" and "1") fall back to plain text order, so the
/// order is total.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return a.cmp(b),
            (true, false) => return std::cmp::Ordering::Less,
            (false, true) => return std::cmp::Ordering::Greater,
            _ => {}
        }
        let (run_x, rest_x) = leading_run(x);
        let (run_y, rest_y) = leading_run(y);
        let digits = |s: &str| s.as_bytes()[0].is_ascii_digit();
        let order = match (digits(run_x), digits(run_y)) {
            (true, true) => {
                let (nx, ny) = (run_x.trim_start_matches('0'), run_y.trim_start_matches('0'));
                nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
            }
            // Digits before letters, as in plain text order.
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => run_x.cmp(run_y),
        };
        if order.is_ne() {
            return order;
        }
        (x, y) = (rest_x, rest_y);
    }
}

/// The leading run of ASCII digits, or of anything else, and the rest.
fn leading_run(s: &str) -> (&str, &str) {
    let digit = s.as_bytes()[0].is_ascii_digit();
    let end = s
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit() != digit)
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_reads_numbers_as_numbers() {
        let mut ids = vec![
            "100", "2", "A10", "A9", "85123B", "85123A", "22423", "POST", "01", "1",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            ["01", "1", "2", "100", "22423", "85123A", "85123B", "A9", "A10", "POST"]
        );
        let vocab = IdVocab::build(["100", "2", "30"]);
        // Text order: "100", "2", "30"; natural ranks: 100 -> 2, 2 -> 0, 30 -> 1.
        assert_eq!(vocab.natural_ranks(), vec![2, 0, 1]);
    }
}
