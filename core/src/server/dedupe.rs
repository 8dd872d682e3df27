//! Per-process memory of accepted `process/write` ids.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` accepted write ids of one process (the Codex exec-server keeps 4,096).
/// A repeat of a remembered id is acknowledged as `accepted` without writing again; rejected
/// writes are never remembered.
#[derive(Debug)]
pub(crate) struct WriteDedupe {
    order: VecDeque<String>,
    ids: HashSet<String>,
    capacity: usize,
}

impl WriteDedupe {
    pub(crate) fn new(capacity: usize) -> Self {
        WriteDedupe {
            order: VecDeque::new(),
            ids: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` was accepted before (and is still remembered).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Remembers an accepted id, forgetting the oldest past the capacity.
    pub(crate) fn remember(&mut self, id: String) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_capacity_ids() {
        let mut d = WriteDedupe::new(3);
        for id in ["a", "b", "c", "d"] {
            d.remember(id.to_owned());
        }
        assert!(!d.contains("a"));
        assert!(d.contains("b") && d.contains("c") && d.contains("d"));
        d.remember("d".to_owned());
        assert!(d.contains("b"), "re-remembering must not evict");
    }
}
