//! A chat room per key: members join and leave, post, and read recent history. Members
//! and every post are durable; posts are stored under increasing sequence numbers, so the
//! recent history is one reverse range read.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use cairn::prelude::*;

/// Longest post kept, in bytes: a larger one is refused (never truncated).
pub const MAX_POST: usize = 4096;

/// One post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// Its sequence number in the room, from 1.
    pub seq: u64,
    /// Who posted it.
    pub from: String,
    /// What they wrote.
    pub text: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What a [`ChatRoom`] takes.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChatMsg {
    /// Adds a member; answers with the members after it.
    Join(String, Reply<Vec<String>>),
    /// Removes a member; answers with the members after it.
    Leave(String, Reply<Vec<String>>),
    /// A member posts: answers with the post's sequence number, or why it was refused
    /// (not a member, too long).
    Post {
        /// The poster.
        from: String,
        /// The text.
        text: String,
        /// The answer.
        reply: Reply<Result<u64, String>>,
    },
    /// The last `n` posts, oldest first.
    Recent(usize, Reply<Vec<Post>>),
}

/// A chat room object (class `chat`).
pub struct ChatRoom {
    members: BTreeSet<String>,
    last_seq: u64,
}

/// Storage key of post `seq`: zero-padded so byte order is sequence order.
fn post_key(seq: u64) -> String {
    format!("post/{seq:020}")
}

impl ChatRoom {
    fn members(&self) -> Vec<String> {
        self.members.iter().cloned().collect()
    }
}

impl Object for ChatRoom {
    const CLASS: &'static str = "chat";
    type Msg = ChatMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(ChatRoom {
            members: ctx.storage().get("members")?.unwrap_or_default(),
            last_seq: ctx.storage().get("last_seq")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: ChatMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            ChatMsg::Join(who, reply) => {
                if self.members.insert(who) {
                    ctx.storage().put("members", &self.members)?;
                }
                let _ = reply.send(self.members());
            }
            ChatMsg::Leave(who, reply) => {
                if self.members.remove(&who) {
                    ctx.storage().put("members", &self.members)?;
                }
                let _ = reply.send(self.members());
            }
            ChatMsg::Post { from, text, reply } => {
                let answer = if !self.members.contains(&from) {
                    Err(format!("{from} has not joined this room"))
                } else if text.len() > MAX_POST {
                    Err(format!("post of {} bytes; at most {MAX_POST}", text.len()))
                } else {
                    self.last_seq += 1;
                    let post = Post {
                        seq: self.last_seq,
                        from,
                        text,
                        at_ms: SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                    };
                    // One implicit transaction: the post and the sequence number together.
                    ctx.storage().put(post_key(post.seq), &post)?;
                    ctx.storage().put("last_seq", &self.last_seq)?;
                    Ok(post.seq)
                };
                let _ = reply.send(answer);
            }
            ChatMsg::Recent(n, reply) => {
                let opts = ListOptions::new().prefix("post/").reverse(true).limit(n);
                let mut posts: Vec<Post> = ctx
                    .storage()
                    .list(&opts)?
                    .into_iter()
                    .map(|(_, post)| post)
                    .collect();
                posts.reverse();
                let _ = reply.send(posts);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn node(dir: &std::path::Path) -> Node {
        let node = Node::builder().workers(2).data_dir(dir).start().unwrap();
        node.host::<ChatRoom>();
        node
    }

    #[test]
    fn members_post_and_the_history_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let node = node(dir.path());
            let room = node.object::<ChatRoom>("lobby");
            let post = |from: &str, text: &str| {
                let (from, text) = (from.to_owned(), text.to_owned());
                node.block_on(room.call(|reply| ChatMsg::Post { from, text, reply }, T))
                    .unwrap()
            };
            assert!(post("ada", "too early").unwrap_err().contains("not joined"));
            let members = node
                .block_on(room.call(|r| ChatMsg::Join("ada".into(), r), T))
                .unwrap();
            assert_eq!(members, ["ada"]);
            node.block_on(room.call(|r| ChatMsg::Join("linus".into(), r), T))
                .unwrap();
            for i in 1..=5 {
                assert_eq!(post("ada", &format!("hello {i}")), Ok(i));
            }
            assert_eq!(post("linus", "hi"), Ok(6));
            let long = "x".repeat(MAX_POST + 1);
            assert!(post("linus", &long).unwrap_err().contains("at most"));
            let left = node
                .block_on(room.call(|r| ChatMsg::Leave("linus".into(), r), T))
                .unwrap();
            assert_eq!(left, ["ada"]);
            node.shutdown();
        }
        // A new node on the same data: members and posts are durable.
        let node = node(dir.path());
        let room = node.object::<ChatRoom>("lobby");
        let recent = node
            .block_on(room.call(|r| ChatMsg::Recent(3, r), T))
            .unwrap();
        let seen: Vec<(u64, &str, &str)> = recent
            .iter()
            .map(|p| (p.seq, p.from.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (4, "ada", "hello 4"),
                (5, "ada", "hello 5"),
                (6, "linus", "hi")
            ]
        );
        let members = node
            .block_on(room.call(|r| ChatMsg::Join("grace".into(), r), T))
            .unwrap();
        assert_eq!(members, ["ada", "grace"]);
        let post = node
            .block_on(room.call(
                |reply| ChatMsg::Post {
                    from: "grace".into(),
                    text: "after the restart".into(),
                    reply,
                },
                T,
            ))
            .unwrap();
        assert_eq!(post, Ok(7));
    }
}
