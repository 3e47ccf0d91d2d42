//! Byte strings as MessagePack `bin`, for `#[serde(with = ...)]` on `Vec<u8>` fields.
//!
//! serde encodes a plain `Vec<u8>` as a sequence, so rmp writes an array of integers: one
//! serializer call per byte, two bytes on the wire for every byte ≥ 0x80, and a decoder that
//! visits every byte. A replicated write set is nested several times (write set → Raft
//! entry → log row and Raft message), so each of its bytes paid that at every level: it was
//! the largest serde cost of a replicated write. These adapters write `bin` (one length
//! header, then the bytes) and read either `bin` or the old array of integers, so rows and
//! messages written before still decode.
//!
//! Compatibility: a node with these adapters reads what older nodes wrote and sent, but an
//! older node cannot read its `bin` fields (its `Vec<u8>` accepts arrays only).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// A borrowed byte string that serializes as `bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bin<'a>(pub &'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An owned byte string that deserializes from `bin` (or an array of integers, as written
/// before) and serializes as `bin`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinBuf(pub Vec<u8>);

impl Serialize for BinBuf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for BinBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BinVisitor)
    }
}

struct BinVisitor;

impl<'de> Visitor<'de> for BinVisitor {
    type Value = BinBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BinBuf, E> {
        Ok(BinBuf(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<BinBuf, E> {
        Ok(BinBuf(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BinBuf, A::Error> {
        // The size hint comes from the input: bounded, so a lying header cannot make us
        // allocate more than the bytes that actually follow (plus this much).
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(BinBuf(out))
    }
}

/// `#[serde(with = "cairn_storage::serde_bin::bytes")]` on a `Vec<u8>`.
pub mod bytes {
    use super::*;

    /// Writes `v` as `bin`.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads `bin` or an array of integers.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        BinBuf::deserialize(d).map(|b| b.0)
    }
}

/// `#[serde(with = ...)]` on a `Vec<(Vec<u8>, Option<Vec<u8>>)>` (a write set's entries).
pub mod entries {
    use super::*;

    /// A write set's entries: user key → encoded value, or `None` for a deletion.
    pub type Entries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    /// Writes each pair as a 2-array of `bin` and `bin` or nil.
    pub fn serialize<S: Serializer>(
        v: &[(Vec<u8>, Option<Vec<u8>>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (Bin(k), v.as_deref().map(Bin))))
    }

    /// Reads pairs of byte strings (`bin` or arrays of integers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        let pairs = Vec::<(BinBuf, Option<BinBuf>)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k.0, v.map(|v| v.0)))
            .collect())
    }
}

/// `#[serde(with = ...)]` on a `Vec<(Vec<u8>, Vec<u8>)>` (a snapshot keyspace's rows).
pub mod rows {
    use super::*;

    /// A snapshot keyspace's rows: `(user key, encoded value)`.
    pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    /// Writes each pair as a 2-array of `bin`.
    pub fn serialize<S: Serializer>(v: &[(Vec<u8>, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (Bin(k), Bin(v))))
    }

    /// Reads pairs of byte strings (`bin` or arrays of integers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rows, D::Error> {
        let pairs = Vec::<(BinBuf, BinBuf)>::deserialize(d)?;
        Ok(pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use crate::{KeyspaceData, WriteSetData};

    /// [`WriteSetData`] as it was encoded before `bin`: plain `Vec<u8>` (arrays of integers).
    #[derive(Serialize)]
    struct OldWriteSetData {
        keyspace: String,
        clear: bool,
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        alarm: Option<u64>,
    }

    #[derive(Serialize)]
    struct OldKeyspaceData {
        name: String,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        alarm: Option<u64>,
    }

    fn set() -> WriteSetData {
        WriteSetData {
            keyspace: "bench/o1".into(),
            clear: false,
            // Bytes ≥ 0x80 cost two bytes each as an array of integers.
            entries: vec![
                (b"v".to_vec(), Some(vec![0xC4; 100])),
                (b"gone".to_vec(), None),
            ],
            alarm: Some(Some(7)),
        }
    }

    #[test]
    fn write_set_values_travel_as_bin() {
        let bytes = rmp_serde::to_vec(&set()).unwrap();
        // keyspace (9) + key (2) + value (2 + 100) + deleted key (5) + markers: well under
        // the 200+ bytes the value alone took as an array of integers.
        assert!(bytes.len() < 130, "{} bytes", bytes.len());
        // The value's `bin 8` header, then its bytes.
        assert!(bytes.windows(2).any(|w| w == [0xC4, 100]));
        let back: WriteSetData = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, set());
    }

    #[test]
    fn write_sets_encoded_before_bin_still_decode() {
        let s = set();
        let old = OldWriteSetData {
            keyspace: s.keyspace.clone(),
            clear: s.clear,
            entries: s.entries.clone(),
            alarm: Some(7),
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        assert!(bytes.len() > 200, "the old encoding: {} bytes", bytes.len());
        let back: WriteSetData = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn snapshot_rows_travel_as_bin_and_old_rows_decode() {
        let ks = KeyspaceData {
            name: "k".into(),
            rows: vec![(vec![0x90, 1], vec![0xFF; 50])],
            alarm: None,
        };
        let bytes = rmp_serde::to_vec(&ks).unwrap();
        assert!(bytes.len() < 70, "{} bytes", bytes.len());
        assert_eq!(rmp_serde::from_slice::<KeyspaceData>(&bytes).unwrap(), ks);
        let old = OldKeyspaceData {
            name: ks.name.clone(),
            rows: ks.rows.clone(),
            alarm: None,
        };
        let old_bytes = rmp_serde::to_vec(&old).unwrap();
        assert!(old_bytes.len() > 100);
        assert_eq!(
            rmp_serde::from_slice::<KeyspaceData>(&old_bytes).unwrap(),
            ks
        );
    }
}
