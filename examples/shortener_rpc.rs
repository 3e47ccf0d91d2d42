//! The URL shortener of `examples/shortener_enum.rs` with typed methods (`#[cairn::object]`,
//! `#[cairn::actor]`): a `Link` per short code counting clicks in storage, a token-bucket
//! `RateLimiter` per client whose alarm drops idle buckets, a supervised reporter on a timer.
//! Both objects keep their fields in storage with `#[cairn::object(state)]`: loaded on
//! activation, written back after each method that changed them.
//!
//! `cargo run --example shortener_rpc`

use cairn::prelude::*;

const BURST: f64 = 3.0;
const REFILL_PER_SEC: f64 = 1.0;
const IDLE: Duration = Duration::from_millis(200);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum LinkError {
    Taken,
    NotFound,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Limited {
    Wait { ms: u64 },
}

#[derive(Default, Serialize, Deserialize)]
pub struct Link {
    url: Option<String>,
    clicks: u64,
}

#[cairn::object(state)]
impl Link {
    const CLASS: &'static str = "link";

    pub async fn shorten(&mut self, url: String) -> Result<(), LinkError> {
        if self.url.is_some() {
            return Err(LinkError::Taken);
        }
        self.url = Some(url);
        Ok(())
    }

    pub async fn resolve(&mut self) -> Result<String, LinkError> {
        let url = self.url.clone().ok_or(LinkError::NotFound)?;
        self.clicks += 1;
        Ok(url)
    }

    pub async fn stats(&mut self) -> Option<(String, u64)> {
        self.url.clone().map(|url| (url, self.clicks))
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A token bucket per client. The default (empty, last filled at the epoch) has long
/// refilled: a new bucket is full.
#[derive(Default, Serialize, Deserialize)]
pub struct RateLimiter {
    tokens: f64,
    at: f64,
}

#[cairn::object(state)]
impl RateLimiter {
    const CLASS: &'static str = "limiter";

    /// Idle: the bucket is dropped (back to its default, which takes no storage).
    async fn alarm(&mut self) {
        *self = Self::default();
    }

    /// An empty bucket answers `Failed(Limited)`.
    pub async fn take(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<u32, Limited> {
        let now = now_secs();
        self.tokens = (self.tokens + (now - self.at) * REFILL_PER_SEC).min(BURST);
        self.at = now;
        ctx.set_alarm(SystemTime::now() + IDLE);
        if self.tokens < 1.0 {
            let ms = ((1.0 - self.tokens) / REFILL_PER_SEC * 1000.0).ceil() as u64;
            return Err(Limited::Wait { ms });
        }
        self.tokens -= 1.0;
        Ok(self.tokens as u32)
    }
}

/// Every `every`, reads the click counts of `codes` and keeps the last report.
pub struct Reporter {
    codes: Vec<String>,
    every: Duration,
    last: Vec<(String, u64)>,
}

#[cairn::actor]
impl Reporter {
    /// Sent by a timer every `self.every`, from the actor's start to its exit.
    #[every(self.every)]
    pub async fn tick(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        let mut report = Vec::new();
        for code in &self.codes {
            report.extend(ctx.object::<Link>(code).stats().await?);
        }
        self.last = report;
        Ok(())
    }

    pub async fn last(&mut self) -> Vec<(String, u64)> {
        self.last.clone()
    }
}

/// A client's request to shorten `url` as `code`, if its bucket allows. A `CallError`
/// displays an application error (`Failed`) and a transport one alike.
fn shorten(node: &Node, client: &str, code: &str, url: &str) {
    if let Err(e) = node.block_on(node.object::<RateLimiter>(client).take()) {
        return println!("{client}: slow down: {e}");
    }
    match node.block_on(node.object::<Link>(code).shorten(url.into())) {
        Ok(()) => println!("{client}: /{code} created"),
        Err(e) => println!("{client}: /{code} refused: {e}"),
    }
}

pub fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    // Data in a fresh temporary directory, removed when `node` is dropped.
    let node = Node::builder().temporary().start().expect("start the node");
    node.host::<Link>();
    node.host::<RateLimiter>();
    let reporter = ChildSpec::worker("reporter", || Reporter {
        codes: vec!["rust".into(), "erl".into()],
        every: Duration::from_millis(50),
        last: Vec::new(),
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(reporter.named("reporter"));
    let tree = node.supervise(spec).expect("start the tree");
    shorten(&node, "ada", "rust", "https://www.rust-lang.org");
    shorten(&node, "ada", "erl", "https://www.erlang.org");
    shorten(&node, "ada", "rust", "https://example.com");
    shorten(&node, "ada", "lmdb", "https://www.symas.com/lmdb");
    for code in ["rust", "rust", "erl", "nope"] {
        match node.block_on(node.object::<Link>(code).resolve()) {
            Ok(url) => println!("/{code} -> {url}"),
            Err(e) => println!("/{code}: {e}"),
        }
    }
    let reporter = node.actor_named::<Reporter>("reporter").unwrap();
    let expected = vec![
        ("https://www.rust-lang.org".to_owned(), 2),
        ("https://www.erlang.org".to_owned(), 1),
    ];
    while node.block_on(reporter.last()) != Ok(expected.clone()) {
        node.block_on(node.handle().sleep(Duration::from_millis(10)));
    }
    println!("report: {expected:?}");
    // The idle bucket's alarm drops it: ada's next request finds a full bucket.
    node.block_on(node.handle().sleep(IDLE + Duration::from_millis(1_500)));
    let left = node.block_on(node.object::<RateLimiter>("ada").take());
    println!("ada after idling: {left:?} tokens left");
    // Dropping `node` shuts it down (every process stopped) and removes its data.
    node.block_on(tree.stop());
}
