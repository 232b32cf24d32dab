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
