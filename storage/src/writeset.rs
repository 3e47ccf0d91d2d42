//! Write sets (the implicit transaction's pending writes) and reads through layers of them.
//!
//! A read of a keyspace sees, newest first: an explicit [`Transaction`](crate::Transaction)'s
//! local set (if any), the keyspace's pending set, its in-flight sets (handed to the writer,
//! not yet committed) newest to oldest, and finally the committed LMDB snapshot. A layer with
//! `clear` set (a `delete_all`) hides every older layer's data, but not the alarm.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;
use crate::lmdb::{ReadTxn, Table};

/// Encoded value, or `None` for a deletion.
pub(crate) type Entry = Option<Vec<u8>>;

/// An alarm change: `None` deletes, `Some(ms)` sets.
pub(crate) type AlarmOp = Option<u64>;

/// The writes of one implicit (or explicit) transaction of one keyspace.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteSet {
    /// Delete every key of the keyspace before applying `entries` (`delete_all`).
    pub(crate) clear: bool,
    /// User key → new value or deletion.
    pub(crate) entries: BTreeMap<Vec<u8>, Entry>,
    /// Alarm change, if any.
    pub(crate) alarm: Option<AlarmOp>,
    /// Approximate encoded size (keys + values), for the batching bound.
    pub(crate) bytes: usize,
}

/// What one layer says about one key.
pub(crate) enum Lookup<'a> {
    /// The layer decides: the value, or `None` when deleted.
    Decided(Option<&'a [u8]>),
    /// The layer says nothing; ask the next older one.
    Unknown,
}

impl WriteSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.clear && self.entries.is_empty() && self.alarm.is_none()
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.entries.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.entries.insert(key, None);
    }

    pub(crate) fn clear(&mut self) {
        self.clear = true;
        self.entries.clear();
        self.bytes = 0;
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        match self.entries.get(key) {
            Some(e) => Lookup::Decided(e.as_deref()),
            None if self.clear => Lookup::Decided(None),
            None => Lookup::Unknown,
        }
    }

    /// Applies `newer` on top of `self` (used when an explicit transaction succeeds).
    pub(crate) fn merge(&mut self, newer: WriteSet) {
        if newer.clear {
            self.clear();
        }
        self.bytes += newer.bytes;
        self.entries.extend(newer.entries);
        if newer.alarm.is_some() {
            self.alarm = newer.alarm;
        }
    }
}

/// The full LMDB key of `user_key` in the keyspace with `prefix`.
pub(crate) fn full_key(prefix: &[u8; 8], user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + user_key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(user_key);
    k
}

/// Reads one key through `layers` (newest first), then `rtxn`.
pub(crate) fn get_raw(
    layers: &[&WriteSet],
    rtxn: &ReadTxn<'_>,
    prefix: &[u8; 8],
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    for l in layers {
        if let Lookup::Decided(v) = l.lookup(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
    }
    Ok(rtxn
        .get(Table::Data, &full_key(prefix, key))?
        .map(<[u8]>::to_vec))
}

/// Reads the alarm (unix ms) through `layers` (newest first), then `rtxn`.
pub(crate) fn get_alarm_raw(
    layers: &[&WriteSet],
    rtxn: &ReadTxn<'_>,
    prefix: &[u8; 8],
) -> Result<Option<u64>> {
    for l in layers {
        if let Some(op) = l.alarm {
            return Ok(op);
        }
    }
    Ok(rtxn.get(Table::Alarms, prefix)?.map(decode_u64))
}

pub(crate) fn decode_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// A key and what the collapsed overlay says about it (`None`: deleted).
type OverlayEntry<'a> = (&'a [u8], Option<&'a [u8]>);

/// A resolved key range in user-key space: `lo <= key < hi` (`hi == None`: unbounded).
pub(crate) struct Range {
    pub(crate) lo: Vec<u8>,
    pub(crate) hi: Option<Vec<u8>>,
    pub(crate) reverse: bool,
    pub(crate) limit: usize,
}

/// Lists `(key, value)` pairs of the merged view of `layers` (newest first) over `rtxn`, in
/// byte order (descending if `range.reverse`), at most `range.limit` of them.
pub(crate) fn list_raw(
    layers: &[&WriteSet],
    rtxn: &ReadTxn<'_>,
    prefix: &[u8; 8],
    range: &Range,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if range.limit == 0 {
        return Ok(out);
    }
    let lo = range.lo.as_slice();
    let hi = range.hi.as_deref();
    if hi.is_some_and(|hi| hi <= lo) {
        return Ok(out);
    }
    let bounds = (
        Bound::Included(lo),
        hi.map_or(Bound::Unbounded, Bound::Excluded),
    );
    // Collapse the overlay layers, oldest first, into one map.
    let mut over: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
    let mut base_cleared = false;
    for l in layers.iter().rev() {
        if l.clear {
            over.clear();
            base_cleared = true;
        }
        for (k, v) in l.entries.range::<[u8], _>(bounds) {
            over.insert(k.as_slice(), v.as_deref());
        }
    }
    let mut ov: Box<dyn Iterator<Item = OverlayEntry<'_>>> = if range.reverse {
        Box::new(over.iter().rev().map(|(k, v)| (*k, *v)))
    } else {
        Box::new(over.iter().map(|(k, v)| (*k, *v)))
    };
    let mut next_ov = ov.next();
    let reverse = range.reverse;
    // Whether `a` comes strictly before `b` in the listing direction.
    let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    let limit = range.limit;
    let emit = |out: &mut Vec<(Vec<u8>, Vec<u8>)>, k: &[u8], v: Option<&[u8]>| {
        if let Some(v) = v {
            out.push((k.to_vec(), v.to_vec()));
        }
        out.len() < limit
    };
    if !base_cleared {
        let flo = full_key(prefix, lo);
        let fhi = match hi {
            Some(hi) => full_key(prefix, hi),
            None => (u64::from_be_bytes(*prefix) + 1).to_be_bytes().to_vec(),
        };
        rtxn.scan(Table::Data, &flo, Some(&fhi), reverse, |fk, fv| {
            let k = &fk[8..];
            while let Some((ok, ovv)) = next_ov {
                if !before(ok, k) {
                    break;
                }
                next_ov = ov.next();
                if !emit(&mut out, ok, ovv) {
                    return false;
                }
            }
            match next_ov {
                Some((ok, ovv)) if ok == k => {
                    next_ov = ov.next();
                    emit(&mut out, k, ovv)
                }
                _ => emit(&mut out, k, Some(fv)),
            }
        })?;
    }
    while out.len() < limit {
        match next_ov {
            Some((k, v)) => {
                next_ov = ov.next();
                emit(&mut out, k, v);
            }
            None => break,
        }
    }
    Ok(out)
}

/// The smallest byte string greater than every string that starts with `p`, or `None` if there
/// is none (`p` is empty or all `0xFF`).
pub(crate) fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_skips_trailing_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn merge_of_clearing_set_hides_older_entries() {
        let mut a = WriteSet::default();
        a.put(b"x".to_vec(), vec![1]);
        let mut b = WriteSet::default();
        b.clear();
        b.put(b"y".to_vec(), vec![2]);
        a.merge(b);
        assert!(a.clear);
        assert!(matches!(a.lookup(b"x"), Lookup::Decided(None)));
        assert!(matches!(a.lookup(b"y"), Lookup::Decided(Some([2]))));
    }
}
