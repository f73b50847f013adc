//! The one diff of "what a kernel map holds" against "what it should hold",
//! used by the tunnel, service and ipcache syncs: entries to remove, then
//! entries to write (new or changed). Unchanged entries are not touched, so
//! a sync that finds nothing to do writes nothing.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDiff<K, V> {
    /// Keys the map holds and should not.
    pub remove: Vec<K>,
    /// Entries missing from the map or holding another value.
    pub upsert: Vec<(K, V)>,
}

impl<K, V> MapDiff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.upsert.is_empty()
    }
}

impl<K, V> MapDiff<K, V> {
    /// Carries the diff out: every removal, then every write, each tried
    /// even after another failed (one entry the kernel refuses never stops
    /// the others); the first error is returned.
    pub fn apply<T: ?Sized, E>(
        self,
        map: &mut T,
        mut remove: impl FnMut(&mut T, K) -> Result<(), E>,
        mut upsert: impl FnMut(&mut T, K, V) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut first = None;
        for key in self.remove {
            if let Err(e) = remove(map, key) {
                first.get_or_insert(e);
            }
        }
        for (key, value) in self.upsert {
            if let Err(e) = upsert(map, key, value) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Compares the map's `current` entries with the `wanted` ones.
pub fn diff<K: Ord + Clone, V: PartialEq>(
    current: &BTreeMap<K, V>,
    wanted: BTreeMap<K, V>,
) -> MapDiff<K, V> {
    let remove = current
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    let upsert = wanted
        .into_iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .collect();
    MapDiff { remove, upsert }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_unwanted_and_writes_the_new_and_changed_only() {
        let current = BTreeMap::from([(1, "a"), (2, "b"), (3, "c")]);
        let wanted = BTreeMap::from([(2, "b"), (3, "C"), (4, "d")]);
        let d = diff(&current, wanted);
        assert_eq!(d.remove, vec![1]);
        assert_eq!(d.upsert, vec![(3, "C"), (4, "d")]);
        assert!(diff(&current, current.clone()).is_empty());
    }

    #[test]
    fn apply_tries_every_entry_and_returns_the_first_error() {
        let current = BTreeMap::from([(1, 1), (2, 2)]);
        let wanted = BTreeMap::from([(3, 3), (4, 4)]);
        let mut done = Vec::new();
        let result = diff(&current, wanted).apply(
            &mut done,
            |done, k| {
                if k == 1 {
                    Err(format!("remove {k}"))
                } else {
                    done.push(k);
                    Ok(())
                }
            },
            |_, k, _| {
                if k == 3 {
                    Err(format!("write {k}"))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(result, Err("remove 1".to_string()));
        assert_eq!(done, vec![2]);
    }
}
