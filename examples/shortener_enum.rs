//! A URL shortener written with message enums (the API under `#[cairn::object]`): a `Link`
//! object per short code with its click count in storage, a token-bucket `RateLimiter`
//! object per client whose alarm drops idle buckets, and a supervised reporter on a timer.
//! `examples/shortener_rpc.rs` is the same application with typed methods.
//!
//! `cargo run --example shortener_enum`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(5);
/// Bucket size and refill rate (tokens per second).
const BURST: f64 = 3.0;
const REFILL_PER_SEC: f64 = 1.0;
/// A bucket untouched this long is dropped by its alarm.
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

#[derive(Serialize, Deserialize)]
pub enum LinkMsg {
    Shorten(String, Reply<Result<(), LinkError>>),
    Resolve(Reply<Result<String, LinkError>>),
    Stats(Reply<Option<(String, u64)>>),
}

pub struct Link {
    url: Option<String>,
    clicks: u64,
}

impl Object for Link {
    const CLASS: &'static str = "link";
    type Msg = LinkMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Link {
            url: ctx.storage().get("url")?,
            clicks: ctx.storage().get("clicks")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: LinkMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            LinkMsg::Shorten(url, reply) => {
                let answer = if self.url.is_some() {
                    Err(LinkError::Taken)
                } else {
                    ctx.storage().put("url", &url)?;
                    self.url = Some(url);
                    Ok(())
                };
                let _ = reply.send(answer);
            }
            LinkMsg::Resolve(reply) => {
                let answer = match &self.url {
                    None => Err(LinkError::NotFound),
                    Some(url) => {
                        self.clicks += 1;
                        ctx.storage().put("clicks", &self.clicks)?;
                        Ok(url.clone())
                    }
                };
                let _ = reply.send(answer);
            }
            LinkMsg::Stats(reply) => {
                let _ = reply.send(self.url.clone().map(|url| (url, self.clicks)));
            }
        }
        Ok(())
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[derive(Serialize, Deserialize)]
pub enum LimiterMsg {
    Take(Reply<Result<u32, Limited>>),
}

/// A token bucket per client, kept in storage as `(tokens, at)`.
pub struct RateLimiter {
    tokens: f64,
    at: f64,
}

impl Object for RateLimiter {
    const CLASS: &'static str = "limiter";
    type Msg = LimiterMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        let (tokens, at) = ctx.storage().get("bucket")?.unwrap_or((BURST, now_secs()));
        Ok(RateLimiter { tokens, at })
    }

    async fn handle(
        &mut self,
        msg: LimiterMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            LimiterMsg::Take(reply) => {
                let now = now_secs();
                self.tokens = (self.tokens + (now - self.at) * REFILL_PER_SEC).min(BURST);
                self.at = now;
                let answer = if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    Ok(self.tokens as u32)
                } else {
                    let ms = ((1.0 - self.tokens) / REFILL_PER_SEC * 1000.0).ceil() as u64;
                    Err(Limited::Wait { ms })
                };
                ctx.storage().put("bucket", &(self.tokens, self.at))?;
                ctx.storage().set_alarm(SystemTime::now() + IDLE)?;
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Idle: the bucket is dropped (a new one starts full).
    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        ctx.storage().delete_all()?;
        *self = RateLimiter {
            tokens: BURST,
            at: now_secs(),
        };
        Ok(())
    }
}

/// The reporter's messages: `Tick` comes from a timer, so the enum must be `Clone`
/// for `send_interval`, or the timer must build it (`send_interval_with`).
pub enum ReporterMsg {
    Tick,
    Last(Reply<Vec<(String, u64)>>),
}

/// Every `every`, reads the click counts of `codes` and keeps the last report.
pub struct Reporter {
    codes: Vec<String>,
    every: Duration,
    last: Vec<(String, u64)>,
}

impl Actor for Reporter {
    type Msg = ReporterMsg;

    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        ctx.handle()
            .send_interval_with(self.every, &ctx.addr(), || ReporterMsg::Tick);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: ReporterMsg,
        ctx: &mut ActorCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            ReporterMsg::Tick => {
                let mut report = Vec::new();
                for code in &self.codes {
                    report.extend(ctx.object::<Link>(code).call(LinkMsg::Stats, T).await?);
                }
                self.last = report;
            }
            ReporterMsg::Last(reply) => {
                let _ = reply.send(self.last.clone());
            }
        }
        Ok(())
    }
}

/// A client's request to shorten `url` as `code`, if its bucket allows.
fn shorten(node: &Node, client: &str, code: &str, url: &str) {
    let limiter = node.object::<RateLimiter>(client);
    match node.block_on(limiter.call(LimiterMsg::Take, T)) {
        Ok(Ok(_)) => {}
        Ok(Err(Limited::Wait { ms })) => return println!("{client}: slow down, retry in {ms} ms"),
        Err(e) => return println!("{client}: limiter unavailable: {e}"),
    }
    let link = node.object::<Link>(code);
    let url = url.to_owned();
    match node.block_on(link.call(|r| LinkMsg::Shorten(url, r), T)) {
        Ok(Ok(())) => println!("{client}: /{code} created"),
        Ok(Err(e)) => println!("{client}: /{code} refused: {e:?}"),
        Err(e) => println!("{client}: /{code} unavailable: {e}"),
    }
}

pub fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let dir = std::env::temp_dir().join(format!("cairn-shortener-enum-{}", std::process::id()));
    let node = Node::builder()
        .data_dir(&dir)
        .start()
        .expect("start the node");
    node.host::<Link>();
    node.host::<RateLimiter>();
    let reporter = ChildSpec::worker("reporter", || Reporter {
        codes: vec!["rust".into(), "erl".into()],
        every: Duration::from_millis(50),
        last: Vec::new(),
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(reporter.named("reporter"));
    let tree = node
        .block_on(Supervisor::start(node.handle(), spec))
        .expect("start the tree");

    shorten(&node, "ada", "rust", "https://www.rust-lang.org");
    shorten(&node, "ada", "erl", "https://www.erlang.org");
    shorten(&node, "ada", "rust", "https://example.com");
    shorten(&node, "ada", "lmdb", "https://www.symas.com/lmdb");
    for code in ["rust", "rust", "erl", "nope"] {
        let link = node.object::<Link>(code);
        match node.block_on(link.call(LinkMsg::Resolve, T)) {
            Ok(Ok(url)) => println!("/{code} -> {url}"),
            Ok(Err(e)) => println!("/{code}: {e:?}"),
            Err(e) => println!("/{code} unavailable: {e}"),
        }
    }
    let reporter: ActorRef<ReporterMsg> = node
        .handle()
        .actor_ref(node.whereis("reporter").unwrap())
        .unwrap();
    let expected = vec![
        ("https://www.rust-lang.org".to_owned(), 2),
        ("https://www.erlang.org".to_owned(), 1),
    ];
    while node.block_on(reporter.call(ReporterMsg::Last, T)) != Ok(expected.clone()) {
        node.block_on(node.handle().sleep(Duration::from_millis(10)));
    }
    println!("report: {expected:?}");
    // The idle bucket's alarm drops it: ada's next request finds a full bucket.
    node.block_on(node.handle().sleep(IDLE + Duration::from_millis(1_500)));
    let limiter = node.object::<RateLimiter>("ada");
    let left = node.block_on(limiter.call(LimiterMsg::Take, T)).unwrap();
    println!("ada after idling: {left:?} tokens left");
    node.block_on(tree.stop());
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
