//! The node's conveniences for an application's `main`: `NodeBuilder::temporary` (a data
//! dir that lives as long as the node), `Node::supervise` and `Node::actor_named`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cairn::prelude::*;

/// This process's temporary data dirs (`cairn-{pid}-…` under the temp dir).
fn temp_dirs() -> BTreeSet<PathBuf> {
    let prefix = format!("cairn-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[derive(Default)]
struct Greeter {
    greeted: u32,
}

#[cairn::actor]
impl Greeter {
    pub async fn greet(&mut self, who: String) -> String {
        self.greeted += 1;
        format!("hello {who} #{}", self.greeted)
    }
}

// The only test here with temporary nodes: it counts this process's temporary dirs, which
// another test running at the same time would change.
#[test]
fn temporary_nodes_keep_data_while_they_run_and_remove_it_when_dropped() {
    let before = temp_dirs();
    let a = Node::builder().temporary().start().unwrap();
    let b = Node::builder().temporary().start().unwrap();
    let made: Vec<PathBuf> = temp_dirs().difference(&before).cloned().collect();
    assert_eq!(
        made.len(),
        2,
        "each temporary node has a dir of its own: {made:?}"
    );

    // The store opens as usual in it.
    let ks = a.keyspace("notes").unwrap();
    ks.put("k", &7u32).unwrap();
    assert_eq!(ks.get::<u32>("k").unwrap(), Some(7));

    // `data_dir` after `temporary` wins: no temporary dir for that node.
    let keep = std::env::temp_dir().join(format!("cairn-node-ext-keep-{}", std::process::id()));
    let c = Node::builder().temporary().data_dir(&keep).start().unwrap();
    assert_eq!(temp_dirs().difference(&before).count(), 2);

    drop(a);
    drop(b);
    drop(c);
    let left: Vec<PathBuf> = temp_dirs().difference(&before).cloned().collect();
    assert!(left.is_empty(), "dropped nodes left {left:?}");
    assert!(keep.exists(), "a data_dir is never removed");
    std::fs::remove_dir_all(&keep).unwrap();
}

#[test]
fn supervise_starts_a_tree_whose_named_actor_is_reached_typed() {
    // Not `temporary`: the test above counts this process's temporary dirs.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().data_dir(dir.path()).start().unwrap();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::worker("greeter", Greeter::default).named("greeter"));
    let tree = node.supervise(spec).unwrap();
    let greeter = node.actor_named::<Greeter>("greeter").expect("registered");
    assert_eq!(
        node.block_on(greeter.greet("ada".into())),
        Ok("hello ada #1".into())
    );
    assert_eq!(
        node.block_on(greeter.greet("bob".into())),
        Ok("hello bob #2".into())
    );
    assert!(node.actor_named::<Greeter>("nobody").is_none());
    node.block_on(tree.stop());
    assert!(
        node.actor_named::<Greeter>("greeter").is_none(),
        "stopped with its tree"
    );
}
