//! Node events: who hears of members coming and going. A subscriber has its own queue;
//! the mesh pushes each event to every live subscriber, in the order membership applied
//! them (events are emitted under the membership lock), and forgets dropped subscribers.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use cairn_scheduler::NodeId;
use parking_lot::Mutex;

/// A member coming or going, as seen by [`Mesh::node_events`](super::Mesh::node_events) (SWIM membership, not
/// connections: a member is up without any data connection to it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// `node` joined the cluster (or came back as a new incarnation).
    #[non_exhaustive]
    Up {
        /// The node.
        node: NodeId,
        /// Its listen address.
        addr: SocketAddr,
        /// Its incarnation.
        incarnation: u64,
    },
    /// `node` was declared down (dead, hung, cut off, left, or replaced by a new
    /// incarnation); its data connection is closed and calls waiting on it have failed
    /// with `NoConnection`.
    #[non_exhaustive]
    Down {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
        /// The incarnation that went down.
        incarnation: u64,
    },
}

/// A subscription to [`NodeEvent`]s.
pub struct NodeEvents {
    queue: Arc<EventQueue>,
}

impl fmt::Debug for NodeEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeEvents")
    }
}

#[derive(Default)]
struct EventQueue {
    state: Mutex<(VecDeque<NodeEvent>, Option<Waker>)>,
}

impl EventQueue {
    fn push(&self, event: NodeEvent) {
        let waker = {
            let mut st = self.state.lock();
            st.0.push_back(event);
            st.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl NodeEvents {
    /// The next event (waits).
    pub async fn next(&mut self) -> NodeEvent {
        poll_fn(|cx| {
            let mut st = self.queue.state.lock();
            match st.0.pop_front() {
                Some(e) => Poll::Ready(e),
                None => {
                    st.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<NodeEvent> {
        self.queue.state.lock().0.pop_front()
    }
}

/// The subscribers of a mesh.
#[derive(Default)]
pub(super) struct Subscribers {
    queues: Mutex<Vec<Weak<EventQueue>>>,
}

impl Subscribers {
    /// A new subscription, hearing events from now on.
    pub(super) fn subscribe(&self) -> NodeEvents {
        let queue = Arc::new(EventQueue::default());
        let mut queues = self.queues.lock();
        queues.retain(|s| s.strong_count() > 0);
        queues.push(Arc::downgrade(&queue));
        NodeEvents { queue }
    }

    /// Queues `event` for every live subscriber.
    pub(super) fn emit(&self, event: NodeEvent) {
        self.queues.lock().retain(|s| match s.upgrade() {
            Some(q) => {
                q.push(event.clone());
                true
            }
            None => false,
        });
    }
}
