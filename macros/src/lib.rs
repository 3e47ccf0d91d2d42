//! # cairn-macros — typed RPC for Cairn objects and actors
//!
//! `#[cairn::object]` and `#[cairn::actor]` go on one `impl` block holding a type's
//! methods. Each method becomes a message; the macro writes the message enum (with its
//! serde, so it crosses nodes), the `Object`/`Actor` impl that dispatches it, and a typed
//! client trait implemented for `ObjectRef<T>` / `ActorRef<TMsg>`. Use them through the
//! `cairn` facade, which documents them with runnable examples (`cairn::rpc`).
//!
//! ```text
//! #[cairn::object]
//! impl Link {
//!     const CLASS: &'static str = "link";               // required for objects
//!     async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> { .. }
//!     async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { .. }
//!
//!     pub async fn resolve(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<String, LinkError> { .. }
//!     pub async fn clicks(&mut self) -> u64 { .. }
//!     pub async fn click(&mut self, ctx: &mut ObjectCtx<Self>) { .. }
//! }
//! // generates: enum LinkMsg { Resolve { reply }, Clicks { reply }, Click },
//! //            impl Object for Link, and trait LinkClient for ObjectRef<Link>:
//! //            link.resolve().await: Result<String, CallError<LinkError>>
//! //            link.clicks().timeout(d).await: Result<u64, CallError>
//! //            link.click().await: Result<(), CallError>     (one-way)
//! ```
//!
//! ## Rules the macro checks (each a clear compile error)
//! - Methods take `&mut self` (a process owns its state while it handles a message);
//!   helpers belong in another `impl` block.
//! - An optional context parameter comes first after `self`: `ctx: &mut ObjectCtx<Self>`
//!   (objects) or `ctx: &mut ActorCtx<Self>` (actors). Other arguments are owned values
//!   with plain names (they travel in the message), and must serialize (serde), unless
//!   the attribute says `local`.
//! - An object impl has `const CLASS: &'static str`.
//! - Lifecycle hooks keep their trait names and move into the trait impl: `activate`,
//!   `alarm`, `deactivate`, `idle_timeout` (objects; without `activate` the state starts
//!   as `Default::default()`), `init`, `handle_signal`, `terminate` (actors). `handle` is
//!   generated. `alarm`, `deactivate` and `init` may take the short forms methods do:
//!   without `ctx`, and returning nothing when they cannot fail.
//! - An object's HTTP front door moves into the trait impl too: `fetch`,
//!   `websocket_message`, `websocket_close`, `websocket_error`, written as `Object`
//!   declares them (with `state`, the fields they change are saved, as for methods).
//! - `#[every(period)]` on an actor's one-way method without arguments: a timer started
//!   before `init` sends it every `period` (an expression with `self` in scope) for as
//!   long as the actor lives.
//!
//! ## What a method's return type means
//! - nothing (or `()`): a one-way message (a cast); the client awaits only its delivery.
//! - `Result<(), ActorError>`: one-way as well; an `Err` crashes the process (for casts
//!   that use `?`, such as a timer's tick).
//! - `Result<T, ActorError>`: a call answered with `T`; `Err` is a crash, as for a
//!   hand-written handler (the caller sees `CallError::NoReply`).
//! - `Result<T, E>` for any other `E`: a call whose `Err(e)` is an *answer*: the caller
//!   sees `CallError::Failed(e)`, the process carries on (an object's writes commit).
//! - `Result<Result<T, E>, ActorError>`: both: the outer `Err` crashes, the inner
//!   `Err(e)` answers `Failed(e)` (for methods that use `?` on storage and also refuse).
//! - any other `T`: a call answered with `T`.
//!
//! ## Attribute options
//! `#[cairn::object(msg = LinkRequest, client = LinkApi, local, state)]`: rename the
//! generated enum (default `<Type>Msg`) or trait (default `<Type>Client`); `local` skips
//! serde for types that never leave the node (host the class with `host_local`); `state`
//! (objects only) makes the struct the object's durable state: the macro writes `activate`
//! (load the struct from storage, or `Default`) and writes the fields back after each
//! method and the `alarm`/`deactivate` hooks when they changed (`cairn::rpc`, "Durable
//! fields").

mod expand;

use proc_macro::TokenStream;

/// Typed RPC for a durable object: see the crate docs and `cairn::rpc`.
#[proc_macro_attribute]
pub fn object(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(expand::Kind::Object, args.into(), item.into()).into()
}

/// Typed RPC for an actor (OTP's gen_server): see the crate docs and `cairn::rpc`.
#[proc_macro_attribute]
pub fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(expand::Kind::Actor, args.into(), item.into()).into()
}
