//! Sorted-vector maps and sets for a profile's aggregates.
//!
//! A profile keeps a dozen small collections (event counts per type, channels,
//! currencies, days, ...), most with one to a few entries. A `BTreeMap` allocates a
//! whole node (eleven slots) for its first entry, which made those collections most
//! of the identity writer's memory (docs/benchmarks.md, "Identity writer"). These
//! keep their entries in one sorted `Vec` instead: the same ordered iteration and
//! the same serialized form (a map, a sequence), at the size of the entries.
//! Lookups are binary searches; inserts shift the tail, which is cheap at the sizes
//! a profile has (a profile's identifiers are capped at `profile_size_cap`).

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered map kept as a sorted `Vec` of pairs.
#[derive(Clone, PartialEq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn new() -> Self {
        VecMap(Vec::new())
    }

    fn find<Q: Ord + ?Sized>(&self, k: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(x, _)| x.borrow().cmp(k))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(k).is_ok()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (k, v));
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| self.0.remove(i).1)
    }

    /// The value of `k`, inserted with `make` first if absent.
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&k) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (k, make()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn entry(&mut self, k: K) -> Entry<'_, K, V> {
        Entry { map: self, key: k }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The entries whose key is at least `k`, in order.
    pub fn range_from<Q: Ord + ?Sized>(&self, k: &Q) -> impl DoubleEndedIterator<Item = (&K, &V)>
    where
        K: Borrow<Q>,
    {
        let from = self.find(k).unwrap_or_else(|i| i);
        self.0[from..].iter().map(|(k, v)| (k, v))
    }

    /// A copy as a `BTreeMap` (for messages and rows that carry one).
    pub fn to_btree(&self) -> std::collections::BTreeMap<K, V>
    where
        K: Clone,
        V: Clone,
    {
        self.0.iter().cloned().collect()
    }

    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.0.first().map(|(k, v)| (k, v))
    }

    pub fn last_key_value(&self) -> Option<(&K, &V)> {
        self.0.last().map(|(k, v)| (k, v))
    }

    /// Removes the entries from the first one on for as long as `drop` says so
    /// (the entries are in key order: this drops the smallest keys).
    pub fn drop_while(&mut self, mut drop: impl FnMut(&K) -> bool) {
        let n = self.0.iter().take_while(|(k, _)| drop(k)).count();
        self.0.drain(..n);
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for VecMap<K, V> {
    type Output = V;
    /// The value of a key that must be there (panics otherwise, as `BTreeMap`'s).
    fn index(&self, k: &Q) -> &V {
        self.get(k).expect("no entry for the key in VecMap")
    }
}

/// A place in a [`VecMap`] for one key, as `BTreeMap::entry` gives.
pub struct Entry<'a, K, V> {
    map: &'a mut VecMap<K, V>,
    key: K,
}

impl<'a, K: Ord, V> Entry<'a, K, V> {
    pub fn or_insert(self, v: V) -> &'a mut V {
        self.map.get_or_insert_with(self.key, || v)
    }

    pub fn or_insert_with(self, make: impl FnOnce() -> V) -> &'a mut V {
        self.map.get_or_insert_with(self.key, make)
    }

    pub fn or_default(self) -> &'a mut V
    where
        V: Default,
    {
        self.map.get_or_insert_with(self.key, V::default)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Self {
        let mut m = VecMap::new();
        m.extend(it);
        m
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, it: I) {
        for (k, v) in it {
            self.insert(k, v);
        }
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for V_<K, V> {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(K, V)> = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
                while let Some(e) = a.next_entry()? {
                    v.push(e);
                }
                // written in key order; anything else is sorted (the last of equal
                // keys wins, as a map's would)
                if !v.windows(2).all(|w| w[0].0 < w[1].0) {
                    v.reverse();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    v.dedup_by(|a, b| a.0 == b.0);
                }
                Ok(VecMap(v))
            }
        }
        d.deserialize_map(V_(PhantomData))
    }
}

/// An ordered set kept as a sorted `Vec`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    pub fn new() -> Self {
        VecSet(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn contains<Q: Ord + ?Sized>(&self, x: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.0.binary_search_by(|e| e.borrow().cmp(x)).is_ok()
    }

    /// True when `x` was not in the set.
    pub fn insert(&mut self, x: T) -> bool {
        match self.0.binary_search(&x) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, x);
                true
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, x: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        match self.0.binary_search_by(|e| e.borrow().cmp(x)) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut v: Vec<T> = it.into_iter().collect();
        v.sort();
        v.dedup();
        VecSet(v)
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, it: I) {
        let before = self.0.len();
        self.0.extend(it);
        if self.0.len() - before > 8 {
            self.0.sort();
            self.0.dedup();
        } else {
            // few new ones: insert them in place
            let new: Vec<T> = self.0.drain(before..).collect();
            for x in new {
                self.insert(x);
            }
        }
    }
}

impl<T> IntoIterator for VecSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for VecSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for x in &self.0 {
            q.serialize_element(x)?;
        }
        q.end()
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<T>(PhantomData<T>);
        impl<'de, T: Ord + Deserialize<'de>> Visitor<'de> for V_<T> {
            type Value = VecSet<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<T> = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                if !v.windows(2).all(|w| w[0] < w[1]) {
                    v.sort();
                    v.dedup();
                }
                Ok(VecSet(v))
            }
        }
        d.deserialize_seq(V_(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    proptest! {
        /// Any sequence of inserts and removals leaves the same entries, in the same
        /// order, as a BTreeMap, and the same JSON and postcard.
        #[test]
        fn behaves_like_btree(ops in proptest::collection::vec((0u8..3, 0u16..40, any::<u32>()), 0..200)) {
            let mut a: VecMap<u16, u32> = VecMap::new();
            let mut b: BTreeMap<u16, u32> = BTreeMap::new();
            let mut sa: VecSet<u16> = VecSet::new();
            let mut sb: BTreeSet<u16> = BTreeSet::new();
            for (op, k, v) in ops {
                match op {
                    0 => {
                        prop_assert_eq!(a.insert(k, v), b.insert(k, v));
                        prop_assert_eq!(sa.insert(k), sb.insert(k));
                    }
                    1 => {
                        prop_assert_eq!(a.remove(&k), b.remove(&k));
                        prop_assert_eq!(sa.remove(&k), sb.remove(&k));
                    }
                    _ => {
                        *a.entry(k).or_default() += 1;
                        *b.entry(k).or_default() += 1;
                    }
                }
                prop_assert_eq!(a.get(&k), b.get(&k));
                prop_assert_eq!(sa.contains(&k), sb.contains(&k));
            }
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), sb.iter().collect::<Vec<_>>());
            prop_assert_eq!(a.first_key_value(), b.first_key_value());
            prop_assert_eq!(a.last_key_value(), b.last_key_value());
            prop_assert_eq!(serde_json::to_string(&a).expect("encodes"), serde_json::to_string(&b).expect("encodes"));
            prop_assert_eq!(postcard::to_allocvec(&a).expect("encodes"), postcard::to_allocvec(&b).expect("encodes"));
            prop_assert_eq!(postcard::to_allocvec(&sa).expect("encodes"), postcard::to_allocvec(&sb).expect("encodes"));
            let back: VecMap<u16, u32> = postcard::from_bytes(&postcard::to_allocvec(&b).expect("encodes")).expect("encodes");
            prop_assert!(back == a);
            let back: VecSet<u16> = serde_json::from_str(&serde_json::to_string(&sb).expect("encodes")).expect("encodes");
            prop_assert!(back == sa);
            let mut c = a.clone();
            let mut d = b.clone();
            c.drop_while(|k| *k < 20);
            d.retain(|k, _| *k >= 20);
            prop_assert_eq!(c.iter().collect::<Vec<_>>(), d.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn unsorted_input_is_sorted_and_the_last_of_equal_keys_wins() {
        let m: VecMap<String, u32> =
            serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).expect("map");
        assert_eq!(
            m.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
            vec![("a", 2), ("b", 3)]
        );
        let s: VecSet<u8> = serde_json::from_str("[3, 1, 3, 2]").expect("set");
        assert_eq!(s.as_slice(), &[1, 2, 3]);
    }
}
