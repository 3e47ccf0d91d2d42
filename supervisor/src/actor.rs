//! The `Actor` behaviour: OTP's gen_server in Rust.
//!
//! An actor is a value with typed messages. [`start`] spawns a process that runs
//! [`Actor::init`] (the start fails if it fails), then handles one message or signal at a
//! time, and runs [`Actor::terminate`] on every stop except `Kill`: a returned error, a panic
//! in a handler, `ctx.stop(..)`, or a `Shutdown` from its supervisor (actors trap exits, so a
//! supervisor's `Shutdown` arrives as a signal and the actor stops in order).
//!
//! Calls and casts go through the typed [`Addr`] (the scheduler's `ActorRef`): `try_send` /
//! `send(..).await` to cast, `call(|reply| Msg::Get(reply), timeout)` to call.

use std::future::Future;
use std::pin::pin;

use cairn_scheduler::{
    catch_unwind_future, ActorRef, Ctx, ExitReason, Handle, IntoExitReason, Message, Pid, Reply,
    ReplyReceiver, Signal, SpawnError, SpawnOptions,
};

/// The error type of actor callbacks: any error converts with `?`.
pub type ActorError = Box<dyn std::error::Error + Send + Sync>;

/// A typed address of a running actor.
pub type Addr<A> = ActorRef<<A as Actor>::Msg>;

/// A behaviour: state plus the callbacks that run in its process, one at a time.
pub trait Actor: Send + Sized + 'static {
    /// The messages it handles.
    type Msg: Send + 'static;

    /// Runs first, before any message. An error fails the start with that error.
    fn init(
        &mut self,
        ctx: &mut ActorCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message. An error stops the actor with `ExitReason::Error`.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut ActorCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// Handles a system signal. The default stops on an abnormal exit signal from a link
    /// (the parent's `Shutdown` included) with that reason, as a non-trapping process would,
    /// but with `terminate` run; it ignores `Normal` exits and `Down`s.
    fn handle_signal(
        &mut self,
        signal: Signal,
        ctx: &mut ActorCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        if let Signal::Exit { reason, .. } = signal {
            if reason != ExitReason::Normal {
                ctx.stop(reason);
            }
        }
        async { Ok(()) }
    }

    /// Runs on every orderly stop, and after errors and panics; not after `Kill`.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ActorCtx<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// What callbacks get besides the message: the process context and a stop switch.
pub struct ActorCtx<A: Actor> {
    ctx: Ctx<A::Msg>,
    stop: Option<ExitReason>,
}

impl<A: Actor> ActorCtx<A> {
    /// The actor's pid.
    pub fn pid(&self) -> Pid {
        self.ctx.pid()
    }
    /// Its own address.
    pub fn addr(&self) -> Addr<A> {
        self.ctx.me()
    }
    /// The runtime.
    pub fn handle(&self) -> &Handle {
        self.ctx.handle()
    }
    /// The underlying process context (links, monitors, trap_exit).
    pub fn process(&self) -> &Ctx<A::Msg> {
        &self.ctx
    }
    /// Stops the actor with `reason` after the current callback returns.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop = Some(reason);
    }
}

/// Why an actor did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `init` returned an error or panicked; carries its text.
    #[error("init failed: {0}")]
    InitFailed(String),
    /// The name was taken.
    #[error("name {0:?} is already registered")]
    NameTaken(String),
    /// The process ended before acknowledging its start.
    #[error("the process exited during start")]
    Exited,
    /// A child of a supervisor failed to start while the supervisor started.
    #[error("child {id:?} failed to start: {cause}")]
    Child {
        /// The path to the child that failed: its id, or `sub/leaf` (ids joined with `/`)
        /// for a child of a sub-supervisor.
        id: String,
        /// That child's own error; never `Child` itself (start errors are one level deep).
        cause: Box<StartError>,
    },
}

/// Where and how to spawn an actor.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Registered name.
    pub name: Option<String>,
    /// Link to this process (a supervisor) before the actor first runs.
    pub link: Option<Pid>,
    /// Mailbox capacity (default: the runtime's).
    pub mailbox_capacity: Option<usize>,
}

/// Spawns `actor`, waits for its `init`, and returns its address.
pub async fn start<A: Actor>(
    handle: &Handle,
    actor: A,
    opts: StartOptions,
) -> Result<Addr<A>, StartError> {
    let (addr, ack) = spawn(handle, actor, opts)?;
    acknowledged(ack).await.map(|()| addr)
}

/// The acknowledgement a starting process sends once its `init` has finished.
pub(crate) type StartAck = ReplyReceiver<Result<(), StartError>>;

/// Spawns `actor` without waiting for its `init`: its address, and the acknowledgement to
/// await with [`acknowledged`] (a supervisor awaits it in place, with no boxed future).
pub(crate) fn spawn<A: Actor>(
    handle: &Handle,
    actor: A,
    opts: StartOptions,
) -> Result<(Addr<A>, StartAck), StartError> {
    spawn_acked(handle, opts, move |ctx, ack| run(actor, ctx, ack))
}

/// Spawns a process that traps exits and acknowledges its start through the `Reply` its
/// body gets (an actor after `init`, a supervisor after its children): its address and
/// the acknowledgement.
pub(crate) fn spawn_acked<M, F, Fut>(
    handle: &Handle,
    opts: StartOptions,
    body: F,
) -> Result<(ActorRef<M>, StartAck), StartError>
where
    M: Send + 'static,
    F: FnOnce(Ctx<M>, Reply<Result<(), StartError>>) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    let (ack, started) = Reply::pair();
    let spawned = handle.spawn_opts(
        SpawnOptions {
            name: opts.name,
            mailbox_capacity: opts.mailbox_capacity,
            link: opts.link,
            trap_exit: true,
            ..SpawnOptions::default()
        },
        move |ctx| body(ctx, ack),
    );
    match spawned {
        Ok(addr) => Ok((addr, started)),
        Err(SpawnError::NameTaken { name, .. }) => Err(StartError::NameTaken(name)),
        Err(other) => Err(StartError::InitFailed(other.to_string())),
    }
}

/// Waits for a start acknowledgement: `init`'s outcome, or `Exited` if the process ended
/// without sending one.
pub(crate) async fn acknowledged(ack: StartAck) -> Result<(), StartError> {
    ack.await.unwrap_or(Err(StartError::Exited))
}

/// Runs a callback, turning an error into `ExitReason::Error` and a panic into
/// `ExitReason::Panic` (shared with the object layer, which runs handlers the same way).
pub async fn guarded<T, F: Future<Output = Result<T, ActorError>>>(
    fut: F,
) -> Result<T, ExitReason> {
    match catch_unwind_future(pin!(fut)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ExitReason::Error(e.to_string())),
        Err(panic) => Err(ExitReason::Panic(panic)),
    }
}

async fn run<A: Actor>(
    mut actor: A,
    ctx: Ctx<A::Msg>,
    ack: Reply<Result<(), StartError>>,
) -> ExitReason {
    let mut actx = ActorCtx { ctx, stop: None };
    if let Err(reason) = guarded(actor.init(&mut actx)).await {
        let text = match &reason {
            ExitReason::Error(m) | ExitReason::Panic(m) => m.clone(),
            other => other.to_string(),
        };
        let _ = ack.send(Err(StartError::InitFailed(text)));
        return reason;
    }
    let _ = ack.send(Ok(()));
    let reason = loop {
        if let Some(reason) = actx.stop.take() {
            break reason;
        }
        let Some(msg) = actx.ctx.recv().await else {
            break ExitReason::Normal;
        };
        let handled = match msg {
            Message::User(m) => guarded(actor.handle(m, &mut actx)).await,
            Message::Signal(s) => guarded(actor.handle_signal(s, &mut actx)).await,
        };
        if let Err(reason) = handled {
            break reason;
        }
    };
    let terminated = catch_unwind_future(pin!(actor.terminate(&reason, &mut actx))).await;
    if let Err(panic) = terminated {
        tracing::error!(pid = %actx.pid(), %panic, "terminate panicked");
    }
    reason
}
