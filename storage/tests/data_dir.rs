//! The data dir: its node identity (persisted, creation raised on every start, another
//! node's dir refused) and its exclusive lock (in this process and across processes).

use cairn_storage::{Config, DataDir, Identity, StorageError, Store, IDENTITY_FILE};
use cairn_testkit::ChildRun;

/// Environment variable that makes `lock_holder_child` run (the data dir to hold).
const HOLD_VAR: &str = "CAIRN_TEST_HOLD_DATA_DIR";

#[test]
fn the_identity_is_persisted_and_creation_rises_on_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.identity().unwrap(), None);
        data.claim_identity("n1", 42).unwrap()
    };
    assert_eq!(
        first,
        Identity {
            name: "n1".into(),
            node: 42,
            creation: 1
        }
    );
    let data = DataDir::open(dir.path()).unwrap();
    assert_eq!(data.identity().unwrap(), Some(first));
    assert_eq!(data.claim_identity("n1", 42).unwrap().creation, 2);
    assert_eq!(data.claim_identity("n1", 42).unwrap().creation, 3);
    drop(data);
    let data = DataDir::open(dir.path()).unwrap();
    assert_eq!(data.identity().unwrap().unwrap().creation, 3);
    // Written by rename: no scratch file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_data_dir_of_another_node_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    data.claim_identity("n1", 42).unwrap();
    let other_name = data.claim_identity("n2", 42).unwrap_err();
    assert!(
        matches!(&other_name, StorageError::WrongIdentity { found_name, name, .. }
            if found_name == "n1" && name == "n2"),
        "{other_name:?}"
    );
    let message = other_name.to_string();
    assert!(
        message.contains("\"n1\"") && message.contains("\"n2\""),
        "{message}"
    );
    let other_id = data.claim_identity("n1", 43).unwrap_err();
    assert!(
        matches!(
            other_id,
            StorageError::WrongIdentity {
                found_node: 42,
                node: 43,
                ..
            }
        ),
        "{other_id:?}"
    );
    assert_eq!(data.identity().unwrap().unwrap().creation, 1);
}

#[test]
fn a_garbled_identity_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(IDENTITY_FILE), b"{not json").unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let err = data.claim_identity("n1", 42).unwrap_err();
    assert!(matches!(err, StorageError::BadIdentity { .. }), "{err:?}");
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(dir.path().join(IDENTITY_FILE)).unwrap(),
        b"{not json"
    );
}

#[test]
fn a_second_open_of_a_locked_data_dir_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let again = DataDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(&again, StorageError::Locked { path } if path == dir.path()),
        "{again:?}"
    );
    assert!(matches!(
        Store::open(dir.path(), Config::default()),
        Err(StorageError::Locked { .. })
    ));
    // A store opened in the locked dir keeps the lock after the `DataDir` is dropped.
    let store = Store::open_in(&data, Config::default()).unwrap();
    drop(data);
    assert!(matches!(
        DataDir::open(dir.path()),
        Err(StorageError::Locked { .. })
    ));
    let ks = store.keyspace("k").unwrap();
    drop(store);
    // ... and so does a keyspace handle outliving its store (the environment is open).
    assert!(matches!(
        DataDir::open(dir.path()),
        Err(StorageError::Locked { .. })
    ));
    drop(ks);
    DataDir::open(dir.path()).unwrap();
    Store::open(dir.path(), Config::default()).unwrap();
}

/// The child's body: holds the data dir's lock until killed. Does nothing unless run by
/// the test below.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var(HOLD_VAR) else {
        return;
    };
    cairn_testkit::abort_on_panic();
    let _store = Store::open(&dir, Config::default()).unwrap();
    cairn_testkit::tell_parent("HOLDING");
    loop {
        std::thread::park();
    }
}

#[test]
fn another_process_is_refused_while_a_node_holds_the_data_dir_and_a_kill_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let mut child = ChildRun::start("lock_holder_child", &[(HOLD_VAR, &path)], |_| {});
    let first = child.lines().next();
    assert_eq!(first.as_deref(), Some("HOLDING"));
    assert!(matches!(
        Store::open(dir.path(), Config::default()),
        Err(StorageError::Locked { .. })
    ));
    // SIGKILL: the kernel drops the lock with the process; no stale lock is left.
    child.child.kill().unwrap();
    let (status, _stderr) = child.finish();
    assert!(!status.success());
    Store::open(dir.path(), Config::default()).unwrap();
}
