//! A bounded cache of unwrapped keys: at most `capacity` entries, each dropped `max_age` after
//! it was unwrapped, the least recently used first when full. Evicted values are dropped at
//! once; what they hold zeroizes itself on drop ([`super::Cipher`], [`super::DataKey`]).
//! Ages use the monotonic clock: they decide only how long a key stays in memory, never what
//! is recorded or deleted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Entries a [`KeyCache`] holds by default: enough for a discovery query over a thousand files
/// without unwrapping twice, small enough that a scan of every file of a large store does not
/// keep every key in memory.
pub const DEFAULT_CAPACITY: usize = 1024;
/// How long an unwrapped key stays cached by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

struct Slot<V> {
    value: V,
    unwrapped_at: Instant,
    used: u64,
}

/// See the module docs.
pub struct KeyCache<V> {
    capacity: usize,
    max_age: Duration,
    slots: HashMap<String, Slot<V>>,
    tick: u64,
    evicted: u64,
}

impl<V> std::fmt::Debug for KeyCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyCache({}/{})", self.slots.len(), self.capacity)
    }
}

impl<V: Clone> Default for KeyCache<V> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl<V: Clone> KeyCache<V> {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        KeyCache {
            capacity: capacity.max(1),
            max_age,
            slots: HashMap::new(),
            tick: 0,
            evicted: 0,
        }
    }

    /// The cached value of `id`, unless it is missing or too old (then dropped).
    pub fn get(&mut self, id: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let fresh = match self.slots.get_mut(id) {
            Some(s) if s.unwrapped_at.elapsed() <= self.max_age => {
                s.used = tick;
                return Some(s.value.clone());
            }
            Some(_) => false,
            None => return None,
        };
        if !fresh {
            self.slots.remove(id);
            self.evicted += 1;
        }
        None
    }

    /// Caches `value` as `id`, evicting the least recently used entry when full.
    pub fn insert(&mut self, id: &str, value: V) {
        self.tick += 1;
        if !self.slots.contains_key(id) && self.slots.len() >= self.capacity {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.slots.remove(&k);
                self.evicted += 1;
            }
        }
        let slot = Slot {
            value,
            unwrapped_at: Instant::now(),
            used: self.tick,
        };
        self.slots.insert(id.to_string(), slot);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries dropped so far for age or room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holds_at_most_capacity_and_evicts_the_least_recently_used() {
        let mut c = KeyCache::new(2, Duration::from_secs(60));
        c.insert("a", Arc::new(1));
        c.insert("b", Arc::new(2));
        assert_eq!(c.get("a").as_deref(), Some(&1));
        c.insert("c", Arc::new(3));
        assert_eq!(c.len(), 2);
        assert!(c.get("b").is_none(), "b was the least recently used");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.evicted(), 1);
    }

    #[test]
    fn drops_entries_past_their_age_and_the_value_with_them() {
        let mut c = KeyCache::new(8, Duration::from_millis(30));
        let v = Arc::new(7);
        c.insert("a", v.clone());
        assert_eq!(Arc::strong_count(&v), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("a").is_none());
        assert_eq!(
            Arc::strong_count(&v),
            1,
            "the cache let go of the evicted value"
        );
        assert!(c.is_empty());
    }
}
