//! [`OpMap`]: one value per operation, the per-operation tables of the
//! state manager, the store, the snapshots and the database's restore.
//!
//! A table is as wide as the operation names interned when it is made
//! ([`Operation::interned`]); every operation of an engine's registry is
//! interned before the engine makes its first table, so an operation the
//! engine runs always has its place. Writing to an operation interned
//! later (a name an attached server showed after the table was made)
//! widens the table; reading one gives `None` from [`OpMap::get`].

use std::ops::{Index, IndexMut};

use super::Operation;

/// One `T` per operation, indexed by [`Operation`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpMap<T> {
    items: Vec<T>,
}

impl<T: Default> Default for OpMap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Default> OpMap<T> {
    /// A table with a default value for every operation interned so far.
    pub fn new() -> Self {
        Self::filled_with(|_| T::default())
    }

    /// The value of `op`, the table widened when it is new: to every
    /// operation interned so far, in room of exactly that size (an empty
    /// table written once is as wide as one made full).
    pub fn entry(&mut self, op: Operation) -> &mut T {
        if op.index() >= self.items.len() {
            let width = Operation::interned().max(op.index() + 1);
            self.items.reserve_exact(width - self.items.len());
            self.items.resize_with(width, T::default);
        }
        &mut self.items[op.index()]
    }
}

impl<T: Clone + Default> OpMap<T> {
    /// A copy as wide as every operation interned so far: an operation
    /// this table has no room for (an [`OpMap::empty`] one never written)
    /// reads as the default.
    pub fn widened(&self) -> Self {
        Self::filled_with(|op| self.get(op).cloned().unwrap_or_default())
    }
}

impl<T> OpMap<T> {
    /// A table with no room yet, which allocates nothing: [`OpMap::get`]
    /// gives `None` until [`OpMap::entry`] makes room. For what most
    /// sessions never write.
    pub const fn empty() -> Self {
        Self { items: Vec::new() }
    }

    /// A table whose value for each operation interned so far is `f(op)`.
    pub fn filled_with(mut f: impl FnMut(Operation) -> T) -> Self {
        let items = (0..Operation::interned())
            .map(|i| f(Operation::at(i)))
            .collect();
        Self { items }
    }

    pub fn get(&self, op: Operation) -> Option<&T> {
        self.items.get(op.index())
    }

    pub fn get_mut(&mut self, op: Operation) -> Option<&mut T> {
        self.items.get_mut(op.index())
    }

    /// Every operation's value, in the order names were interned.
    pub fn iter(&self) -> impl Iterator<Item = (Operation, &T)> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, v)| (Operation::at(i), v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Operation, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .map(|(i, v)| (Operation::at(i), v))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut()
    }

    pub fn map<U>(&self, mut f: impl FnMut(Operation, &T) -> U) -> OpMap<U> {
        OpMap {
            items: self.iter().map(|(op, v)| f(op, v)).collect(),
        }
    }
}

/// A table from values in interned order: the first for
/// [`Operation::SUMMARY`], the second for [`Operation::MIND_MAP`], and so on.
impl<T, const N: usize> From<[T; N]> for OpMap<T> {
    fn from(items: [T; N]) -> Self {
        Self {
            items: items.into(),
        }
    }
}

/// On the wire, a table is an object keyed by operation name:
/// `{"summary": …, "mind_map": …}`.
impl<T: serde::Serialize> serde::Serialize for OpMap<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.items.len()))?;
        for (op, v) in self.iter() {
            map.serialize_entry(op.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de, T: serde::Deserialize<'de> + Default> serde::Deserialize<'de> for OpMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = std::collections::BTreeMap::<Operation, T>::deserialize(d)?;
        let mut table = OpMap::new();
        for (op, v) in pairs {
            *table.entry(op) = v;
        }
        Ok(table)
    }
}

/// Reads the value of an operation the table was made for. An operation of
/// the engine's registry always has one (see the module's docs); one
/// interned after the table was made is a caller's bug, and panics.
impl<T> Index<Operation> for OpMap<T> {
    type Output = T;

    fn index(&self, op: Operation) -> &T {
        match self.items.get(op.index()) {
            Some(v) => v,
            None => panic!("{op} is newer than this table: read it with get()"),
        }
    }
}

impl<T> IndexMut<Operation> for OpMap<T> {
    fn index_mut(&mut self, op: Operation) -> &mut T {
        match self.items.get_mut(op.index()) {
            Some(v) => v,
            None => panic!("{op} is newer than this table: write it with entry()"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_holds_every_interned_operation_and_widens_for_newer_ones() {
        let mut table: OpMap<u32> = OpMap::new();
        table[Operation::SUMMARY] = 3;
        *table.entry(Operation::MIND_MAP) += 2;
        assert_eq!(table[Operation::SUMMARY], 3);
        assert_eq!(table.get(Operation::MIND_MAP), Some(&2));
        let newer = Operation::named("table_test_op").unwrap();
        let older: OpMap<u32> = OpMap::filled_with(|op| op.index() as u32);
        let mut grown = older.clone();
        *grown.entry(newer) = 9;
        assert_eq!(grown.get(newer), Some(&9));
        assert_eq!(grown.items.capacity(), grown.items.len(), "widened exactly");
        assert!(grown.iter().any(|(op, v)| op == newer && *v == 9));
        assert_eq!(older.get(Operation::MIND_MAP), Some(&1));
    }

    #[test]
    fn an_empty_table_takes_room_for_every_operation_at_its_first_write() {
        let mut table: OpMap<u32> = OpMap::empty();
        assert_eq!(
            (table.get(Operation::SUMMARY), table.items.capacity()),
            (None, 0)
        );
        *table.entry(Operation::SUMMARY) = 1;
        // Other tests intern names meanwhile: the width is read back.
        let width = table.items.len();
        assert!(width > Operation::MIND_MAP.index(), "every built-in");
        assert_eq!(table.items.capacity(), width, "room of exactly that");
        assert_eq!(table.get(Operation::MIND_MAP), Some(&0));
        *table.entry(Operation::MIND_MAP) = 2;
        assert_eq!(table.items.capacity(), width, "no second allocation");
    }

    #[test]
    fn on_the_wire_a_table_is_keyed_by_name() {
        let mut table: OpMap<u32> = OpMap::new();
        table[Operation::MIND_MAP] = 4;
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(json["mind_map"], 4);
        assert_eq!(json["summary"], 0);
        let back: OpMap<u32> = serde_json::from_value(json).unwrap();
        assert_eq!(back[Operation::MIND_MAP], 4);
        let bad = serde_json::from_str::<OpMap<u32>>(r#"{"Not A Name": 1}"#);
        assert!(bad.is_err());
    }
}
