//! The first hour with Cairn: a durable object with storage, an alarm and an error for its
//! caller, and a supervised actor that calls it on a timer. `cargo run --example first_hour`
//! (the README quotes this file; a test runs it and checks the two stay the same).

use cairn::prelude::*;

/// What a caller hears instead of an answer: `CallError::Failed(CartError::..)`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum CartError {
    Full { limit: usize },
    Storage(String),
}

impl From<StorageError> for CartError {
    fn from(e: StorageError) -> Self {
        CartError::Storage(e.to_string())
    }
}

const LIMIT: usize = 3;
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// One cart per user, addressed by key: `node.object::<Cart>("ada")`.
#[derive(Default)]
pub struct Cart {
    items: Vec<String>,
}

#[cairn::object]
impl Cart {
    const CLASS: &'static str = "cart";

    /// Runs whenever the cart wakes up (first message, after eviction or a restart).
    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Cart {
            items: ctx.storage().get("items")?.unwrap_or_default(),
        })
    }

    /// The durable alarm: an hour after the last change the cart is emptied, even if the
    /// node restarted meanwhile.
    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        self.items.clear();
        ctx.storage().delete("items")?;
        Ok(())
    }

    /// A call whose `Err` is an answer: the caller sees `CallError::Failed(e)`.
    pub async fn add(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
        item: String,
    ) -> Result<usize, CartError> {
        if self.items.len() >= LIMIT {
            return Err(CartError::Full { limit: LIMIT });
        }
        self.items.push(item);
        // Both writes commit together when this returns; the answer leaves once they are
        // durable.
        ctx.storage().put("items", &self.items)?;
        ctx.storage()
            .set_alarm(SystemTime::now() + ABANDONED_AFTER)?;
        Ok(self.items.len())
    }

    pub async fn items(&mut self) -> Vec<String> {
        self.items.clone()
    }
}

/// A supervised actor: every `every` it counts the items of one cart.
pub struct Auditor {
    cart: String,
    every: Duration,
    seen: Option<usize>,
}

#[cairn::actor]
impl Auditor {
    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        // Dropping the TimerRef does not cancel the timer; the actor's exit does.
        ctx.handle()
            .send_interval_with(self.every, &ctx.addr(), || AuditorMsg::Tick);
        Ok(())
    }

    /// One-way (returns nothing): sent by the timer.
    pub async fn tick(&mut self, ctx: &mut ActorCtx<Self>) {
        self.seen = ctx
            .object::<Cart>(&self.cart)
            .items()
            .await
            .ok()
            .map(|i| i.len());
    }

    pub async fn seen(&mut self) -> Option<usize> {
        self.seen
    }
}

pub fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let dir = std::env::temp_dir().join(format!("cairn-first-hour-{}", std::process::id()));
    let node = Node::builder()
        .data_dir(&dir)
        .start()
        .expect("start the node");
    node.host::<Cart>();

    let auditor = ChildSpec::worker("auditor", || Auditor {
        cart: "ada".into(),
        every: Duration::from_millis(50),
        seen: None,
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(auditor.named("auditor"));
    let tree = node
        .block_on(Supervisor::start(node.handle(), spec))
        .expect("start the tree");

    let cart = node.object::<Cart>("ada");
    node.block_on(async {
        for item in ["tea", "milk", "bread", "jam"] {
            match cart.add(item.into()).await {
                Ok(count) => println!("added {item}: {count} items"),
                Err(CallError::Failed(CartError::Full { limit })) => {
                    println!("{item} refused: the cart holds {limit} items")
                }
                Err(other) => panic!("cart unavailable: {other}"),
            }
        }
        println!("cart: {:?}", cart.items().await.expect("a cart answers"));
    });

    let auditor: Addr<Auditor> = node
        .handle()
        .actor_ref(node.whereis("auditor").unwrap())
        .unwrap();
    while node.block_on(auditor.seen()) != Ok(Some(3)) {
        node.block_on(node.handle().sleep(Duration::from_millis(10)));
    }
    println!("the auditor saw 3 items");
    node.block_on(tree.stop());
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
