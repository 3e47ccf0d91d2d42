//! A chat room per key: members join and leave, post, and read recent history. Members
//! and every post are durable; posts are stored under increasing sequence numbers, so the
//! recent history is one reverse range read.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::prelude::*;

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
