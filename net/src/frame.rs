//! Length-prefixed MessagePack frames, and a sans-IO decoder for them.
//!
//! # Wire format
//!
//! Every frame is an 8-byte header followed by the payload:
//!
//! | byte | meaning                                                                |
//! |------|------------------------------------------------------------------------|
//! | 0    | payload length, bits 31..24 (big-endian `u32`)                         |
//! | 1    | payload length, bits 23..16                                            |
//! | 2    | payload length, bits 15..8                                             |
//! | 3    | payload length, bits 7..0                                              |
//! | 4    | format version; only [`FRAME_VERSION`] (1) is defined                   |
//! | 5    | reserved, must be 0                                                    |
//! | 6    | reserved, must be 0                                                    |
//! | 7    | reserved, must be 0                                                    |
//! | 8..  | payload: exactly one MessagePack value of `length` bytes (`length ≥ 1`) |
//!
//! The length counts the payload only, not the header. A receiver rejects a header whose
//! length exceeds its configured maximum ([`MAX_FRAME_DEFAULT`] unless changed) *before*
//! buffering the payload, so a peer cannot make it allocate more than the maximum. Reserved
//! bytes must be zero in version 1 so that a later version may give them a meaning.
//!
//! Frames are encoded with `rmp_serde::encode::write` (structs as arrays, positional): a
//! frame is the mesh's own envelope (`mesh::wire::Wire`), whose layout is fixed by
//! [`FRAME_VERSION`], and field names in every envelope cost more than the message (an
//! 83-byte envelope became 50, and decoding it 703 → 244 ns). Application messages inside an
//! envelope are encoded separately with field names (`to_vec_named`), so a peer built from a
//! later version of a message type that added optional fields can still read them. The
//! decoder accepts either form.
//!
//! # Decoder protocol
//!
//! [`FrameDecoder`] performs no I/O: push whatever bytes arrived with
//! [`FrameDecoder::push`], then pop frames with [`FrameDecoder::pop`] (validated raw
//! payloads) or [`FrameDecoder::pop_as`] (deserialized values) until they return
//! `Ok(None)`. Bytes may arrive split at any boundary. Once a pop returns an error the
//! stream is unrecoverable (framing is lost), so the decoder is *poisoned*: every later pop
//! returns [`FrameError::Poisoned`]. The decoder never panics on any input (see the
//! property test and the `frame_decoder` fuzz target).

use std::io::Cursor;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The only frame format version defined so far.
pub const FRAME_VERSION: u8 = 1;

/// Default maximum payload length: 16 MiB. Large enough for any single actor message we
/// expect (bulk data should be chunked), small enough that a hostile length costs little.
pub const MAX_FRAME_DEFAULT: usize = 16 * 1024 * 1024;

/// Maximum nesting of MessagePack arrays and maps in a payload. Deserialization recurses
/// once per level; 128 levels is far beyond any message type we define and keeps a hostile
/// `[[[[...]]]]` from using much stack.
pub const MAX_NESTING: usize = 128;

/// The decoder compacts its buffer (moves unread bytes to the front) once the consumed
/// prefix is at least this large and at least half the buffer: amortized O(1) per byte
/// without shifting on every pop.
const COMPACT_THRESHOLD: usize = 64 * 1024;

/// Why a frame was rejected (decoding) or could not be built (encoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a payload longer than the configured maximum.
    #[error("frame payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length announced (decoding) or produced (encoding).
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The header's version byte is not one this build understands.
    #[error("unknown frame version {version}")]
    UnknownVersion {
        /// The version byte received.
        version: u8,
    },
    /// A reserved header byte is not zero.
    #[error("reserved frame header bytes are not zero: {reserved:02x?}")]
    Reserved {
        /// Header bytes 5..8 as received.
        reserved: [u8; 3],
    },
    /// The header announces an empty payload (no MessagePack value is empty).
    #[error("empty frame payload")]
    Empty,
    /// The payload is not exactly one well-formed MessagePack value of the expected type.
    #[error("malformed frame payload: {reason}")]
    Malformed {
        /// What the MessagePack decoder reported.
        reason: String,
    },
    /// A value could not be encoded as MessagePack.
    #[error("cannot encode frame payload: {reason}")]
    Encode {
        /// What the MessagePack encoder reported.
        reason: String,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes left over)")]
    Truncated {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
    /// An earlier pop failed; the stream has lost its framing.
    #[error("frame decoder poisoned by an earlier error")]
    Poisoned,
}

/// One received frame: a payload that holds exactly one well-formed MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    payload: Vec<u8>,
}

impl Frame {
    /// The raw MessagePack payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Deserializes the payload as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        decode_payload(&self.payload)
    }
}

/// Deserializes exactly one value from `payload`: trailing bytes are an error, and nesting
/// is limited to [`MAX_NESTING`].
///
/// Fast path: when [`value_len`] finds that the payload is exactly one value, it is
/// deserialized straight from the slice (`from_read_ref`): strings, map keys and byte
/// strings are borrowed, not copied. The reader-based deserializer copies every one of
/// them through `Read::read_to_end`, which was ~half of the receiving node's CPU in the
/// `remote-throughput` profile (a mesh frame has a dozen keys and strings). Anything else
/// takes the reader path, which reports the precise error.
pub(crate) fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if value_len(payload) == Some(payload.len()) {
        let mut de = rmp_serde::Deserializer::from_read_ref(payload);
        de.set_max_depth(MAX_NESTING);
        return T::deserialize(&mut de).map_err(|e| FrameError::Malformed {
            reason: e.to_string(),
        });
    }
    decode_payload_slow(payload)
}

/// The byte length of the MessagePack value at the start of `bytes`, or `None` if it is
/// cut short or holds the never-used marker `0xc1`. A sans-IO scan of markers and lengths
/// (no recursion: it counts the values still to skip), nothing is decoded.
fn value_len(bytes: &[u8]) -> Option<usize> {
    /// Reads an `n`-byte big-endian length at `*at` and moves past it.
    fn length(bytes: &[u8], at: &mut usize, n: usize) -> Option<u64> {
        let field = bytes.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(field.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    }
    let mut at = 0usize;
    // Values still to skip: a map of n entries adds 2n, an array n.
    let mut left: u64 = 1;
    while left > 0 {
        left -= 1;
        let marker = *bytes.get(at)?;
        at += 1;
        // Bytes to skip after the marker and its length field.
        let skip: u64 = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => {
                left += 2 * u64::from(marker & 0x0f);
                0
            }
            0x90..=0x9f => {
                left += u64::from(marker & 0x0f);
                0
            }
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xc1 => return None,
            // bin 8/16/32, str 8/16/32
            0xc4 | 0xd9 => length(bytes, &mut at, 1)?,
            0xc5 | 0xda => length(bytes, &mut at, 2)?,
            0xc6 | 0xdb => length(bytes, &mut at, 4)?,
            // ext 8/16/32: length, then a type byte and the data
            0xc7 => length(bytes, &mut at, 1)? + 1,
            0xc8 => length(bytes, &mut at, 2)? + 1,
            0xc9 => length(bytes, &mut at, 4)? + 1,
            // float 32/64, uint and int 8/16/32/64
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            // fixext 1/2/4/8/16: a type byte and the data
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            // array 16/32, map 16/32
            0xdc..=0xdf => {
                let n = length(bytes, &mut at, if marker & 1 == 0 { 2 } else { 4 })?;
                left += if marker >= 0xde { 2 * n } else { n };
                0
            }
        };
        at = at.checked_add(usize::try_from(skip).ok()?)?;
        if at > bytes.len() {
            return None;
        }
        // Each value still to skip takes at least one byte: more than remain is truncated.
        if left > (bytes.len() - at) as u64 {
            return None;
        }
    }
    Some(at)
}

/// The reader-based path of [`decode_payload`]: also for malformed input, whose error it
/// reports (including trailing bytes).
fn decode_payload_slow<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(payload));
    de.set_max_depth(MAX_NESTING);
    let value = T::deserialize(&mut de).map_err(|e| FrameError::Malformed {
        reason: e.to_string(),
    })?;
    let used = de.position();
    if used != payload.len() as u64 {
        return Err(FrameError::Malformed {
            reason: format!(
                "{} trailing bytes after the value",
                payload.len() as u64 - used
            ),
        });
    }
    Ok(value)
}

/// Appends one frame holding `value` to `out`. On error `out` is left as it was.
pub fn encode_frame<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    max_frame: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, FRAME_VERSION, 0, 0, 0]);
    if let Err(e) = rmp_serde::encode::write(out, value) {
        out.truncate(start);
        return Err(FrameError::Encode {
            reason: e.to_string(),
        });
    }
    let len = out.len() - start - HEADER_LEN;
    let len32 = match u32::try_from(len) {
        Ok(len32) if len <= max_frame => len32,
        _ => {
            out.truncate(start);
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: max_frame,
            });
        }
    };
    out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    len: usize,
}

/// Parses and validates a header; `bytes` holds at least [`HEADER_LEN`] bytes.
fn parse_header(bytes: &[u8; HEADER_LEN], max_frame: usize) -> Result<Header, FrameError> {
    let [l0, l1, l2, l3, version, r0, r1, r2] = *bytes;
    if version != FRAME_VERSION {
        return Err(FrameError::UnknownVersion { version });
    }
    if [r0, r1, r2] != [0, 0, 0] {
        return Err(FrameError::Reserved {
            reserved: [r0, r1, r2],
        });
    }
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let too_large = FrameError::TooLarge {
        len: u64::from(len),
        max: max_frame,
    };
    let len = usize::try_from(len).map_err(|_| too_large.clone())?;
    if len > max_frame {
        return Err(too_large);
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(Header { len })
}

/// Sans-IO frame decoder: push bytes, pop frames. See the module docs for the protocol.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes; `buf[start..]` are not yet consumed.
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
    poisoned: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads up to [`MAX_FRAME_DEFAULT`].
    pub fn new() -> Self {
        FrameDecoder::with_max_frame(MAX_FRAME_DEFAULT)
    }

    /// A decoder accepting payloads up to `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
            poisoned: false,
        }
    }

    /// The maximum payload length accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes pushed but not yet popped as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether an earlier pop failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Appends received bytes. Ignored once poisoned.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= COMPACT_THRESHOLD && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Pops the next complete frame, validated as one well-formed MessagePack value.
    /// `Ok(None)` means more bytes are needed.
    pub fn pop(&mut self) -> Result<Option<Frame>, FrameError> {
        self.pop_with(|payload| {
            decode_payload::<IgnoredAny>(payload)?;
            Ok(Frame {
                payload: payload.to_vec(),
            })
        })
    }

    /// Pops the next complete frame and deserializes it as a `T`. `Ok(None)` means more
    /// bytes are needed. A payload that is not a `T` poisons the decoder like any other
    /// error: the transport carries one message type per stream.
    pub fn pop_as<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        self.pop_with(decode_payload::<T>)
    }

    /// Call when the stream has ended: an error if part of a frame is left over (or the
    /// decoder is poisoned).
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => {
                self.poisoned = true;
                Err(FrameError::Truncated { buffered })
            }
        }
    }

    /// Validates the header of the next frame without waiting for its payload, so an
    /// oversized or unknown header is refused as soon as its 8 bytes arrive.
    fn next_header(&self) -> Result<Option<Header>, FrameError> {
        let Some(bytes) = self.buf.get(self.start..self.start + HEADER_LEN) else {
            return Ok(None);
        };
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(bytes);
        parse_header(&header, self.max_frame).map(Some)
    }

    fn pop_with<R>(
        &mut self,
        decode: impl FnOnce(&[u8]) -> Result<R, FrameError>,
    ) -> Result<Option<R>, FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        let result = self.next_header().and_then(|header| {
            let Some(header) = header else {
                return Ok(None);
            };
            let body = self.start + HEADER_LEN;
            let Some(payload) = self.buf.get(body..body + header.len) else {
                return Ok(None);
            };
            let value = decode(payload)?;
            self.start = body + header.len;
            Ok(Some(value))
        });
        if result.is_err() {
            self.poisoned = true;
            self.buf = Vec::new();
            self.start = 0;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Msg {
        seq: u64,
        text: String,
        data: Vec<u8>,
    }

    fn msg(seq: u64) -> Msg {
        Msg {
            seq,
            text: format!("message {seq}"),
            data: vec![seq as u8; (seq % 7) as usize],
        }
    }

    fn encode_all(msgs: &[Msg]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            encode_frame(m, &mut out, MAX_FRAME_DEFAULT).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_whole_buffer() {
        let msgs: Vec<Msg> = (0..100).map(msg).collect();
        let bytes = encode_all(&msgs);
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        for m in &msgs {
            assert_eq!(dec.pop_as::<Msg>().unwrap().as_ref(), Some(m));
        }
        assert_eq!(dec.pop_as::<Msg>().unwrap(), None);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn header_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_frame(&7u8, &mut out, MAX_FRAME_DEFAULT).unwrap();
        // 7 encodes as a positive fixint: one byte.
        assert_eq!(out, [0, 0, 0, 1, FRAME_VERSION, 0, 0, 0, 7]);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let msgs: Vec<Msg> = (0..5).map(msg).collect();
        let bytes = encode_all(&msgs);
        for split in 0..=bytes.len() {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                dec.push(part);
                while let Some(m) = dec.pop_as::<Msg>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "split at {split}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let msgs: Vec<Msg> = (0..20).map(msg).collect();
        let bytes = encode_all(&msgs);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            while let Some(frame) = dec.pop().unwrap() {
                got.push(frame.decode::<Msg>().unwrap());
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn oversized_header_is_rejected_before_payload() {
        let mut dec = FrameDecoder::with_max_frame(1024);
        dec.push(&[0, 0, 4, 1, FRAME_VERSION, 0, 0, 0]);
        assert_eq!(
            dec.pop().unwrap_err(),
            FrameError::TooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert!(dec.is_poisoned());
        assert_eq!(dec.pop().unwrap_err(), FrameError::Poisoned);
        let mut dec = FrameDecoder::new();
        dec.push(&[0xff, 0xff, 0xff, 0xff, FRAME_VERSION, 0, 0, 0]);
        assert!(matches!(dec.pop(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn max_frame_is_inclusive() {
        let mut out = Vec::new();
        // A 3-byte string encodes as 4 bytes (fixstr header + 3).
        encode_frame("abc", &mut out, 4).unwrap();
        assert_eq!(
            encode_frame("abcd", &mut out, 4),
            Err(FrameError::TooLarge { len: 5, max: 4 })
        );
        assert_eq!(
            out.len(),
            HEADER_LEN + 4,
            "failed encode leaves out unchanged"
        );
        let mut dec = FrameDecoder::with_max_frame(4);
        dec.push(&out);
        assert_eq!(dec.pop_as::<String>().unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn bad_version_reserved_and_empty_are_rejected() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 1, 2, 0, 0, 0, 7]);
        assert_eq!(
            dec.pop().unwrap_err(),
            FrameError::UnknownVersion { version: 2 }
        );
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 1, FRAME_VERSION, 0, 9, 0, 7]);
        assert_eq!(
            dec.pop().unwrap_err(),
            FrameError::Reserved {
                reserved: [0, 9, 0]
            }
        );
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 0, FRAME_VERSION, 0, 0, 0]);
        assert_eq!(dec.pop().unwrap_err(), FrameError::Empty);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        // 0xc1 is never used in MessagePack.
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 1, FRAME_VERSION, 0, 0, 0, 0xc1]);
        assert!(matches!(dec.pop(), Err(FrameError::Malformed { .. })));
        // Two values in one frame: trailing bytes.
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 2, FRAME_VERSION, 0, 0, 0, 1, 2]);
        assert!(matches!(dec.pop(), Err(FrameError::Malformed { .. })));
        // A truncated array (claims 2^32-1 elements, has none).
        let mut dec = FrameDecoder::new();
        dec.push(&[
            0,
            0,
            0,
            5,
            FRAME_VERSION,
            0,
            0,
            0,
            0xdd,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        assert!(matches!(dec.pop(), Err(FrameError::Malformed { .. })));
        // Well-formed, but the wrong type.
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 1, FRAME_VERSION, 0, 0, 0, 7]);
        assert!(matches!(
            dec.pop_as::<String>(),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        // 100_000 nested one-element arrays (0x91), then nil.
        let mut payload = vec![0x91u8; 100_000];
        payload.push(0xc0);
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
        bytes.extend_from_slice(&payload);
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        assert!(matches!(dec.pop(), Err(FrameError::Malformed { .. })));
        // Within the limit it is fine.
        let mut payload = vec![0x91u8; MAX_NESTING - 1];
        payload.push(0xc0);
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
        bytes.extend_from_slice(&payload);
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        assert!(dec.pop().unwrap().is_some());
    }

    #[test]
    fn finish_reports_truncation() {
        let mut out = Vec::new();
        encode_frame(&"hello", &mut out, MAX_FRAME_DEFAULT).unwrap();
        let mut dec = FrameDecoder::new();
        dec.push(&out[..out.len() - 1]);
        assert_eq!(dec.pop().unwrap(), None);
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                buffered: out.len() - 1
            })
        );
        let mut dec = FrameDecoder::new();
        dec.push(&out);
        assert!(dec.pop().unwrap().is_some());
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn compaction_keeps_partial_frames() {
        let msgs: Vec<Msg> = (0..20_000).map(msg).collect();
        let bytes = encode_all(&msgs);
        let mut dec = FrameDecoder::new();
        let mut got = 0;
        for chunk in bytes.chunks(1000) {
            dec.push(chunk);
            while let Some(m) = dec.pop_as::<Msg>().unwrap() {
                assert_eq!(m, msgs[got]);
                got += 1;
            }
        }
        assert_eq!(got, msgs.len());
    }

    /// xorshift64*: a seeded PRNG so the property test is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn value_len_finds_exactly_one_value() {
        use std::collections::BTreeMap;
        #[derive(Serialize)]
        enum E {
            Unit,
            New(i64),
            Tuple(u8, String),
            Struct { a: Option<u32>, b: Vec<f64> },
        }
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut add = |bytes: Vec<u8>| values.push(bytes);
        for n in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            add(rmp_serde::to_vec(&n).unwrap());
        }
        for n in [-1i64, -32, -33, -128, -129, -32_768, -32_769, i64::MIN] {
            add(rmp_serde::to_vec(&n).unwrap());
        }
        add(rmp_serde::to_vec(&1.5f32).unwrap());
        add(rmp_serde::to_vec(&-2.25f64).unwrap());
        add(rmp_serde::to_vec(&(true, false, ())).unwrap());
        for len in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536] {
            add(rmp_serde::to_vec(&"s".repeat(len)).unwrap());
            add(rmp_serde::to_vec(&serde_bytes_like(len)).unwrap());
            add(rmp_serde::to_vec(&vec![7u8; len.min(20_000)]).unwrap());
        }
        let map: BTreeMap<String, Vec<u32>> = (0..40)
            .map(|i| (format!("k{i}"), vec![i; i as usize]))
            .collect();
        add(rmp_serde::to_vec(&map).unwrap());
        add(rmp_serde::to_vec_named(&map).unwrap());
        for e in [
            E::Unit,
            E::New(-5),
            E::Tuple(3, "x".into()),
            E::Struct {
                a: Some(9),
                b: vec![1.0; 17],
            },
        ] {
            add(rmp_serde::to_vec(&e).unwrap());
            add(rmp_serde::to_vec_named(&e).unwrap());
        }
        add(rmp_serde::to_vec_named(&msg(12_345)).unwrap());
        // ext and fixext values, written by hand.
        add(vec![0xd4, 1, 2]);
        add(vec![0xd8, 1].into_iter().chain([0; 16]).collect());
        add(vec![0xc7, 3, 1, 9, 9, 9]);
        add(vec![0xc8, 0, 1, 1, 9]);
        for v in &values {
            assert_eq!(
                value_len(v),
                Some(v.len()),
                "{:02x?}",
                &v[..v.len().min(16)]
            );
            let mut trailing = v.clone();
            trailing.push(0xc0);
            assert_eq!(value_len(&trailing), Some(v.len()));
            for cut in [0, 1, v.len() / 2, v.len() - 1] {
                if cut < v.len() {
                    assert_eq!(value_len(&v[..cut]), None, "prefix of {} bytes", cut);
                }
            }
        }
        assert_eq!(value_len(&[0xc1]), None);
        // A map announcing 2^32 - 1 entries in 5 bytes is truncated, not a long scan.
        assert_eq!(value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff]), None);
    }

    /// `len` bytes as a MessagePack `bin`.
    fn serde_bytes_like(len: usize) -> crate::mesh::wire::Bytes {
        crate::mesh::wire::Bytes(vec![1; len])
    }

    #[test]
    fn fast_and_slow_decoding_agree() {
        // Trailing bytes and truncation are errors on both paths; valid input decodes alike.
        let good = rmp_serde::to_vec_named(&msg(3)).unwrap();
        assert_eq!(decode_payload::<Msg>(&good).unwrap(), msg(3));
        assert_eq!(decode_payload_slow::<Msg>(&good).unwrap(), msg(3));
        let mut trailing = good.clone();
        trailing.push(1);
        assert!(decode_payload::<Msg>(&trailing).is_err());
        assert!(decode_payload::<Msg>(&good[..good.len() - 1]).is_err());
        // A well-formed value of another shape is refused by the fast path too.
        let other = rmp_serde::to_vec_named(&(1u8, 2u8, 3u8)).unwrap();
        assert!(decode_payload::<(u8, u8)>(&other).is_err());
        assert!(decode_payload_slow::<(u8, u8)>(&other).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_cafe_f00d_0001);
        for case in 0..20_000 {
            let mut dec = FrameDecoder::with_max_frame(1 + rng.below(4096) as usize);
            let mut input = Vec::new();
            // Half the cases start with a plausible header so payload decoding gets exercised.
            if case % 2 == 0 {
                let len = rng.below(64) as u32;
                input.extend_from_slice(&len.to_be_bytes());
                input.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
            }
            let n = rng.below(256) as usize;
            input.extend((0..n).map(|_| rng.next() as u8));
            let mut rest = &input[..];
            while !rest.is_empty() {
                let take = 1 + rng.below(rest.len() as u64) as usize;
                dec.push(&rest[..take]);
                rest = &rest[take..];
                // Stops at `Ok(None)` (needs bytes) or an error (poisoned from then on).
                while let Ok(Some(frame)) = dec.pop() {
                    // A validated frame decodes as some value.
                    frame.decode::<IgnoredAny>().unwrap();
                }
            }
        }
    }
}
