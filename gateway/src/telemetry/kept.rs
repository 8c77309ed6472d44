//! Metric handles kept per label set, so a hot path pays one hash and one
//! uncontended lock per call instead of a prometheus label lookup (a hash
//! of every value and a read lock) per metric family it records into.
use std::{
    hash::BuildHasher,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

/// Most label sets kept; past it, handles are made on each call (still
/// counted, only slower), so a flood of distinct values cannot grow memory
/// without bound.
const MAX_KEPT: usize = 10_000;

/// Handles of type `T` made once per `N` label values.
pub struct Kept<const N: usize, T> {
    by_hash: Mutex<foldhash::HashMap<u64, Vec<Arc<Labelled<N, T>>>>>,
    count: AtomicUsize,
    hasher: RandomState,
}

/// foldhash, seeded per map: label values may come from outside (models
/// named in answers), so not a fixed seed; SipHash cost more than the rest
/// of a lookup.
type RandomState = foldhash::fast::RandomState;

/// One label set's handles.
pub struct Labelled<const N: usize, T> {
    labels: [String; N],
    pub handles: T,
}

impl<const N: usize, T> Labelled<N, T> {
    pub fn labels(&self) -> [&str; N] {
        std::array::from_fn(|i| self.labels[i].as_str())
    }
}

impl<const N: usize, T> Default for Kept<N, T> {
    fn default() -> Self {
        Kept {
            by_hash: Mutex::new(foldhash::HashMap::default()),
            count: AtomicUsize::new(0),
            hasher: RandomState::default(),
        }
    }
}

impl<const N: usize, T> Kept<N, T> {
    /// The handles of `labels`, made by `make` the first time.
    pub fn get(&self, labels: [&str; N], make: impl FnOnce() -> T) -> Arc<Labelled<N, T>> {
        let hash = self.hasher.hash_one(labels);
        let mut kept = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = kept.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| s.labels() == labels) {
            return Arc::clone(s);
        }
        let s = Arc::new(Labelled {
            labels: labels.map(str::to_owned),
            handles: make(),
        });
        if self.count.load(Ordering::Relaxed) < MAX_KEPT {
            self.count.fetch_add(1, Ordering::Relaxed);
            bucket.push(Arc::clone(&s));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_made_once_per_label_set() {
        let kept: Kept<2, u32> = Kept::default();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            made.get()
        };
        let a = kept.get(["x", "y"], make);
        let again = kept.get(["x", "y"], make);
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(made.get(), 1);
        // Not a concatenation: ("xy", "") is another set.
        let b = kept.get(["xy", ""], make);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((a.handles, b.handles), (1, 2));
        assert_eq!(b.labels(), ["xy", ""]);
    }
}
