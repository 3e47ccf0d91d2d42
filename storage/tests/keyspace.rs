//! Keyspace data API: isolation, persistence, limits, list options, delete_all, transactions,
//! read-your-writes.

use cairn_storage::{
    Config, ListOptions, StorageError, Store, MAX_KEY_LEN, MAX_NAME_LEN, MAX_VALUE_LEN,
};
use serde::{Deserialize, Serialize};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), Config::default()).unwrap()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: String,
}

#[test]
fn typed_values_round_trip_as_messagepack() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("a").unwrap();
    let p = Point {
        x: -3,
        y: "hi".into(),
    };
    ks.put("p", &p).unwrap();
    ks.put(b"bytes-key".as_slice(), &vec![1u8, 2, 3]).unwrap();
    assert_eq!(ks.get::<Point>("p").unwrap(), Some(p));
    assert_eq!(ks.get::<Vec<u8>>("bytes-key").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(ks.get::<u32>("missing").unwrap(), None);
    ks.sync().unwrap();
    assert!(matches!(ks.get::<u32>("p"), Err(StorageError::Decode(_))));
}

#[test]
fn keyspaces_see_only_their_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = store.keyspace("a").unwrap();
    let b = store.keyspace("b").unwrap();
    assert_ne!(a.prefix(), b.prefix());
    a.put("k", &1u32).unwrap();
    a.put("only-a", &1u32).unwrap();
    b.put("k", &2u32).unwrap();
    assert_eq!(b.get::<u32>("only-a").unwrap(), None); // pending isolation
    a.sync().unwrap();
    b.sync().unwrap();
    assert_eq!(a.get::<u32>("k").unwrap(), Some(1));
    assert_eq!(b.get::<u32>("k").unwrap(), Some(2));
    assert_eq!(b.get::<u32>("only-a").unwrap(), None);
    let listed: Vec<(Vec<u8>, u32)> = b.list(&ListOptions::new()).unwrap();
    assert_eq!(listed, vec![(b"k".to_vec(), 2)]);
    b.delete_all().unwrap();
    b.sync().unwrap();
    assert_eq!(a.get::<u32>("k").unwrap(), Some(1));
    assert_eq!(a.list::<u32>(&ListOptions::new()).unwrap().len(), 2);
}

#[test]
fn handles_on_one_name_share_pending_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a1 = store.keyspace("a").unwrap();
    let a2 = store.keyspace("a").unwrap();
    a1.put("k", &1u8).unwrap();
    assert_eq!(a2.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn reopened_store_finds_each_names_data() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = {
        let store = open(&dir);
        let a = store.keyspace("alpha").unwrap();
        let b = store.keyspace("beta").unwrap();
        a.put("x", &"from alpha").unwrap();
        b.put("x", &"from beta").unwrap();
        a.commit();
        b.sync().unwrap();
        store.sync().unwrap();
        (a.prefix(), b.prefix())
    };
    let store = open(&dir);
    let b = store.keyspace("beta").unwrap();
    let a = store.keyspace("alpha").unwrap();
    let c = store.keyspace("gamma").unwrap();
    assert_eq!((a.prefix(), b.prefix()), (pa, pb));
    assert!(
        c.prefix() > pb.max(pa),
        "prefixes are allocated sequentially"
    );
    assert_eq!(a.get::<String>("x").unwrap().as_deref(), Some("from alpha"));
    assert_eq!(b.get::<String>("x").unwrap().as_deref(), Some("from beta"));
    let names: Vec<String> = store
        .keyspaces()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // A name is recorded with its first committed write set: gamma has none yet.
    assert_eq!(names, ["alpha", "beta"]);
    c.put("x", &1u8).unwrap();
    c.sync().unwrap();
    let names: Vec<String> = store
        .keyspaces()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
}

#[test]
fn over_limit_keys_values_and_names_are_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("a").unwrap();
    let max_key = vec![b'k'; MAX_KEY_LEN];
    ks.put(&max_key, &1u8).unwrap();
    ks.sync().unwrap();
    assert_eq!(ks.get::<u8>(&max_key).unwrap(), Some(1));

    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    match ks.put(&long_key, &1u8) {
        Err(StorageError::KeyTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_KEY_LEN + 1, MAX_KEY_LEN));
        }
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    assert!(matches!(
        ks.get::<u8>(&long_key),
        Err(StorageError::KeyTooLarge { .. })
    ));

    // A byte string encodes as bin32: 5 bytes of header, so MAX - 5 fits exactly.
    let fits = serde_bytes_like(MAX_VALUE_LEN - 5);
    ks.put("big", &fits).unwrap();
    let too_big = serde_bytes_like(MAX_VALUE_LEN - 4);
    match ks.put("huge", &too_big) {
        Err(StorageError::ValueTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_VALUE_LEN + 1, MAX_VALUE_LEN));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    // put_many is all-or-nothing on limits.
    let err = ks
        .put_many(
            [("ok1", &1u8), ("ok2", &2u8)]
                .into_iter()
                .chain([(std::str::from_utf8(&long_key).unwrap(), &3u8)]),
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::KeyTooLarge { .. }));
    ks.sync().unwrap();
    assert_eq!(ks.get::<u8>("ok1").unwrap(), None);
    assert_eq!(ks.get::<Bytes>("huge").unwrap(), None);
    assert_eq!(
        ks.get::<Bytes>("big").unwrap().map(|b| b.0.len()),
        Some(MAX_VALUE_LEN - 5)
    );

    assert!(matches!(
        store.keyspace(&"n".repeat(MAX_NAME_LEN + 1)),
        Err(StorageError::BadName { .. })
    ));
    assert!(matches!(
        store.keyspace(""),
        Err(StorageError::BadName { .. })
    ));
    store.keyspace(&"n".repeat(MAX_NAME_LEN)).unwrap();
}

/// A byte buffer serialized as MessagePack `bin` (not an array of integers).
#[derive(Debug, PartialEq)]
struct Bytes(Vec<u8>);
impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}
impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
fn serde_bytes_like(n: usize) -> Bytes {
    Bytes(vec![7u8; n])
}

fn keys(v: Vec<(Vec<u8>, u32)>) -> Vec<String> {
    v.into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

/// Keys a, b, ba, bb, bc, c — half committed, half pending, one committed key deleted while
/// pending — so every option is exercised over the merged view.
fn list_fixture(store: &Store) -> cairn_storage::Keyspace {
    let ks = store.keyspace("list").unwrap();
    for (i, k) in ["a", "ba", "bc", "zz"].iter().enumerate() {
        ks.put(k, &(i as u32)).unwrap();
    }
    ks.sync().unwrap();
    for (i, k) in ["b", "bb", "c"].iter().enumerate() {
        ks.put(k, &(10 + i as u32)).unwrap();
    }
    assert!(ks.delete("zz").unwrap());
    ks
}

#[test]
fn list_options_each_and_combined() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let other = store.keyspace("other").unwrap();
    other.put("b0", &0u32).unwrap();
    other.sync().unwrap();
    let ks = list_fixture(&store);
    let l = |o: ListOptions| keys(ks.list(&o).unwrap());
    assert_eq!(l(ListOptions::new()), ["a", "b", "ba", "bb", "bc", "c"]);
    assert_eq!(l(ListOptions::new().prefix("b")), ["b", "ba", "bb", "bc"]);
    assert_eq!(
        l(ListOptions::new().prefix("b").reverse(true)),
        ["bc", "bb", "ba", "b"]
    );
    assert_eq!(l(ListOptions::new().start("bb")), ["bb", "bc", "c"]);
    assert_eq!(l(ListOptions::new().start_after("bb")), ["bc", "c"]);
    assert_eq!(l(ListOptions::new().end("bb")), ["a", "b", "ba"]);
    assert_eq!(
        l(ListOptions::new().reverse(true)),
        ["c", "bc", "bb", "ba", "b", "a"]
    );
    assert_eq!(l(ListOptions::new().limit(2)), ["a", "b"]);
    assert_eq!(l(ListOptions::new().limit(0)), Vec::<String>::new());
    assert_eq!(l(ListOptions::new().reverse(true).limit(2)), ["c", "bc"]);
    assert_eq!(
        l(ListOptions::new().start("b").end("bc")),
        ["b", "ba", "bb"]
    );
    assert_eq!(
        l(ListOptions::new()
            .start_after("b")
            .end("c")
            .reverse(true)
            .limit(2)),
        ["bc", "bb"]
    );
    assert_eq!(
        l(ListOptions::new().prefix("b").start_after("ba").limit(1)),
        ["bb"]
    );
    assert_eq!(l(ListOptions::new().prefix("b").end("bb")), ["b", "ba"]);
    assert_eq!(
        l(ListOptions::new().start("c").end("b")),
        Vec::<String>::new()
    );
    assert_eq!(l(ListOptions::new().prefix("q")), Vec::<String>::new());
    // Values come with keys.
    let v: Vec<(Vec<u8>, u32)> = ks.list(&ListOptions::new().prefix("b").limit(2)).unwrap();
    assert_eq!(v, vec![(b"b".to_vec(), 10), (b"ba".to_vec(), 1)]);
    // Same answers once everything is committed.
    ks.sync().unwrap();
    assert_eq!(
        l(ListOptions::new().prefix("b").reverse(true)),
        ["bc", "bb", "ba", "b"]
    );
    assert_eq!(l(ListOptions::new()), ["a", "b", "ba", "bb", "bc", "c"]);
    assert!(matches!(
        ks.list::<u32>(&ListOptions::new().start("a").start_after("a")),
        Err(StorageError::ConflictingListOptions)
    ));
}

#[test]
fn list_start_after_a_maximum_length_key_pages_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("long").unwrap();
    let k1 = vec![b'a'; MAX_KEY_LEN];
    let mut k2 = k1.clone();
    k2[MAX_KEY_LEN - 1] = b'b';
    ks.put(&k1, &1u32).unwrap();
    ks.put(&k2, &2u32).unwrap();
    ks.sync().unwrap();
    let page: Vec<(Vec<u8>, u32)> = ks.list(&ListOptions::new().start_after(&k1)).unwrap();
    assert_eq!(page, vec![(k2, 2)]);
}

#[test]
fn delete_and_delete_many_report_what_existed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("d").unwrap();
    ks.put_many([("a", &1u8), ("b", &2u8), ("c", &3u8)])
        .unwrap();
    ks.sync().unwrap();
    assert!(ks.delete("a").unwrap());
    assert!(!ks.delete("a").unwrap());
    assert_eq!(ks.delete_many(["a", "b", "b", "zz"]).unwrap(), 1);
    assert_eq!(
        ks.get_many::<u8, _>(["a", "b", "c"]).unwrap(),
        vec![None, None, Some(3)]
    );
    ks.sync().unwrap();
    assert_eq!(
        ks.get_many::<u8, _>(["a", "b", "c"]).unwrap(),
        vec![None, None, Some(3)]
    );
}

#[test]
fn delete_all_keeps_the_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("x").unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000);
    ks.put("a", &1u8).unwrap();
    ks.set_alarm(at).unwrap();
    ks.sync().unwrap();
    ks.delete_all().unwrap();
    ks.put("after", &2u8).unwrap();
    assert_eq!(ks.get::<u8>("a").unwrap(), None);
    assert_eq!(ks.get_alarm().unwrap(), Some(at));
    ks.sync().unwrap();
    assert_eq!(keys(ks.list(&ListOptions::new()).unwrap()), ["after"]);
    assert_eq!(ks.get_alarm().unwrap(), Some(at));
    assert_eq!(store.next_alarm().unwrap().unwrap().name, "x");
}

#[test]
fn transaction_commits_on_ok_and_rolls_back_on_err() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("t").unwrap();
    ks.put("balance", &10i64).unwrap();
    let r: Result<(), StorageError> = ks.transaction(|txn| {
        let b: i64 = txn.get("balance")?.unwrap();
        txn.put("balance", &(b - 3))?;
        assert_eq!(txn.get::<i64>("balance")?, Some(7)); // sees its own writes
        assert_eq!(ks.get::<i64>("balance")?, Some(10)); // not yet visible outside
        txn.put("log", &"withdrew 3")?;
        Ok(())
    });
    r.unwrap();
    assert_eq!(ks.get::<i64>("balance").unwrap(), Some(7));

    #[derive(Debug)]
    enum AppError {
        Insufficient,
        #[allow(dead_code)] // carried for the `?` conversion
        Storage(StorageError),
    }
    impl From<StorageError> for AppError {
        fn from(e: StorageError) -> Self {
            AppError::Storage(e)
        }
    }
    let r: Result<(), AppError> = ks.transaction(|txn| {
        txn.put("balance", &-100i64)?;
        txn.delete_all()?;
        txn.set_alarm(std::time::SystemTime::now())?;
        Err(AppError::Insufficient)
    });
    assert!(matches!(r, Err(AppError::Insufficient)));
    assert_eq!(ks.get::<i64>("balance").unwrap(), Some(7));
    assert_eq!(
        ks.get::<String>("log").unwrap().as_deref(),
        Some("withdrew 3")
    );
    assert_eq!(ks.get_alarm().unwrap(), None);
    ks.sync().unwrap();
    assert_eq!(ks.get::<i64>("balance").unwrap(), Some(7));
}

#[test]
fn reads_see_pending_and_in_flight_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("ryw").unwrap();
    ks.put("old", &1u8).unwrap();
    ks.put("gone", &1u8).unwrap();
    ks.sync().unwrap();

    let hold = store.fault_injection().hold_commits();
    ks.put("a", &1u8).unwrap();
    assert!(ks.delete("gone").unwrap());
    let t1 = ks.commit(); // in flight: held by the writer
    ks.put("a", &2u8).unwrap(); // pending, over the in-flight set
    ks.put("b", &3u8).unwrap();
    assert!(!t1.is_done());
    assert_eq!(ks.get::<u8>("a").unwrap(), Some(2));
    assert_eq!(ks.get::<u8>("gone").unwrap(), None);
    assert_eq!(keys_u8(&ks), ["a", "b", "old"]);
    let t2 = ks.commit();
    // Both sets in flight now; an empty commit waits for the latest of them.
    let t3 = ks.commit();
    assert_eq!(ks.get::<u8>("a").unwrap(), Some(2));
    assert_eq!(keys_u8(&ks), ["a", "b", "old"]);
    // Another keyspace sees none of it.
    let other = store.keyspace("other").unwrap();
    assert_eq!(other.get::<u8>("a").unwrap(), None);
    assert!(!t2.is_done() && !t3.is_done());
    drop(hold);
    t1.wait().unwrap();
    t2.wait().unwrap();
    t3.wait().unwrap();
    assert_eq!(keys_u8(&ks), ["a", "b", "old"]);
    assert_eq!(ks.get::<u8>("a").unwrap(), Some(2));
    assert!(!ks.has_pending());
}

fn keys_u8(ks: &cairn_storage::Keyspace) -> Vec<String> {
    ks.list::<u8>(&ListOptions::new())
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn empty_commit_with_nothing_in_flight_is_ready_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("e").unwrap();
    let before = store.stats();
    let t = ks.commit();
    assert_eq!(t.try_result().map(|r| r.is_ok()), Some(true));
    store.sync().unwrap();
    assert_eq!(store.stats().commits, before.commits);
}
