//! The expansion of `#[cairn::object]` / `#[cairn::actor]`, on `proc_macro2` tokens so the
//! unit tests below can run it (a proc-macro crate's `proc_macro` API only works inside a
//! compiler invocation).
//!
//! Invariants of the output:
//! - the user's methods stay in an inherent `impl` (callable directly, e.g. in unit tests),
//!   with their spans, so type errors in them point at the user's code;
//! - generated code names nothing but `::cairn::rpc::…` and `::core::…` (the user's crate
//!   needs no serde import for the generated enum; `cairn` re-exports what it uses);
//! - any rule broken produces `compile_error!`s *and* the impl block unchanged, so one
//!   mistake gives one message instead of a cascade.

use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, FnArg, GenericArgument, Ident, ImplItem, ImplItemConst, ImplItemFn, ItemImpl,
    Meta, Pat, PathArguments, ReturnType, Token, Type, Visibility,
};

/// Which behaviour the impl block is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Actor,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Object => "#[cairn::object]",
            Kind::Actor => "#[cairn::actor]",
        }
    }

    /// The context type a method may take first after `&mut self`.
    fn context(self) -> &'static str {
        match self {
            Kind::Object => "ObjectCtx",
            Kind::Actor => "ActorCtx",
        }
    }

    /// Trait methods the user writes in the block; they move into the trait impl.
    fn hooks(self) -> &'static [&'static str] {
        match self {
            Kind::Object => &[
                "activate",
                "alarm",
                "deactivate",
                "idle_timeout",
                "fetch",
                "websocket_message",
                "websocket_close",
                "websocket_error",
            ],
            Kind::Actor => &["init", "handle_signal", "terminate"],
        }
    }
}

/// The object hooks of the HTTP front door (`Object::fetch` and the WebSocket handlers):
/// written in the trait's own form; with `state`, wrapped so their changes are saved.
const HTTP_HOOKS: &[&str] = &[
    "fetch",
    "websocket_message",
    "websocket_close",
    "websocket_error",
];

/// With `state`, an HTTP hook (`fetch`, `websocket_*`) runs inside a wrapper of the same
/// signature that snapshots the fields before and saves them after, as methods do. The
/// user's body moves to the inherent impl under a hidden name.
fn http_hook_wrapper(hook: &ImplItemFn) -> syn::Result<(ImplItemFn, TokenStream)> {
    let sig = &hook.sig;
    let name = &sig.ident;
    let form = || {
        syn::Error::new(
            sig.span(),
            format!(
                "with `state`, the `{name}` hook is written as `Object` declares it: `async fn \
                 {name}(&mut self, .., ctx: &mut ObjectCtx<Self>) -> Result<_, ActorError>`"
            ),
        )
    };
    let receiver_ok = sig
        .receiver()
        .is_some_and(|r| r.reference.is_some() && r.mutability.is_some());
    let takes_ctx = matches!(
        sig.inputs.last(),
        Some(FnArg::Typed(arg)) if is_context(Kind::Object, &arg.ty)
    );
    if !receiver_ok || !takes_ctx || sig.asyncness.is_none() {
        return Err(form());
    }
    if !matches!(
        Returns::parse(&sig.output),
        Ok(Returns::Crash(_) | Returns::CrashCast)
    ) {
        return Err(form());
    }
    let inner_name = format_ident!("__cairn_hook_{}", name, span = name.span());
    let mut inner = hook.clone();
    inner.sig.ident = inner_name.clone();
    inner.attrs.push(syn::parse_quote!(#[doc(hidden)]));
    // The wrapper takes the same arguments under fresh names; the last one is `ctx`.
    let count = sig.inputs.len() - 1;
    let mut params = Vec::new();
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(arg) = input else {
            return Err(form());
        };
        let ty = &arg.ty;
        let ident = if i + 1 == count {
            format_ident!("ctx")
        } else {
            format_ident!("__cairn_arg{}", i)
        };
        params.push(quote!(#ident: #ty));
        args.push(ident);
    }
    let output = &sig.output;
    let wrapper = quote_spanned! {name.span()=>
        async fn #name(&mut self, #(#params),*) #output {
            let before = ::cairn::rpc::__private::snapshot(self)?;
            let out = Self::#inner_name(self, #(#args),*).await?;
            ::cairn::rpc::__private::save_state(self, &before, ctx)?;
            ::core::result::Result::Ok(out)
        }
    };
    Ok((inner, wrapper))
}

/// Options in the attribute's parentheses.
#[derive(Default)]
struct Options {
    msg: Option<Ident>,
    client: Option<Ident>,
    local: bool,
    /// `state`: the object's fields are its durable state (objects only; see `rpc.rs`).
    state: Option<Ident>,
}

fn parse_options(args: TokenStream) -> syn::Result<Options> {
    use syn::parse::Parser;
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    let mut options = Options::default();
    for meta in metas {
        match &meta {
            Meta::Path(p) if p.is_ident("local") => options.local = true,
            Meta::Path(p) if p.is_ident("state") => options.state = p.get_ident().cloned(),
            Meta::NameValue(nv) if nv.path.is_ident("msg") || nv.path.is_ident("client") => {
                let ident = match &nv.value {
                    Expr::Path(p) if p.qself.is_none() => p.path.get_ident().cloned(),
                    _ => None,
                };
                let ident = ident.ok_or_else(|| {
                    syn::Error::new(nv.value.span(), "expected a type name, e.g. `LinkRequest`")
                })?;
                if nv.path.is_ident("msg") {
                    options.msg = Some(ident);
                } else {
                    options.client = Some(ident);
                }
            }
            _ => {
                return Err(syn::Error::new(
                    meta.span(),
                    "unknown option: expected `msg = Name`, `client = Name`, `local` or `state`",
                ))
            }
        }
    }
    Ok(options)
}

/// What a method's return type makes of it (see the crate docs).
// A few per method at compile time: boxing the types would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Returns {
    /// Nothing: a one-way message.
    Cast,
    /// `Result<(), ActorError>`: one-way too; `Err` crashes the process.
    CrashCast,
    /// `T`: a call answered with `T`.
    Value(Type),
    /// `Result<T, ActorError>`: answered with `T`; `Err` crashes the process.
    Crash(Type),
    /// `Result<T, E>`: `Err(e)` is an answer, `CallError::Failed(e)` for the caller.
    Fallible(Type, Type),
    /// `Result<Result<T, E>, ActorError>`: the outer `Err` crashes, the inner one answers.
    CrashFallible(Type, Type),
}

impl Returns {
    fn parse(output: &ReturnType) -> syn::Result<Returns> {
        let ty = match output {
            ReturnType::Default => return Ok(Returns::Cast),
            ReturnType::Type(_, ty) => ty.as_ref(),
        };
        if matches!(ty, Type::Tuple(t) if t.elems.is_empty()) {
            return Ok(Returns::Cast);
        }
        reject_self(ty)?;
        let Type::Path(path) = ty else {
            return Ok(Returns::Value(ty.clone()));
        };
        let Some(last) = path.path.segments.last() else {
            return Ok(Returns::Value(ty.clone()));
        };
        if last.ident != "Result" {
            return Ok(Returns::Value(ty.clone()));
        }
        let args: Vec<&Type> = match &last.arguments {
            PathArguments::AngleBracketed(a) => a
                .args
                .iter()
                .filter_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        match args.as_slice() {
            [ok, err] if last_ident_is(err, "ActorError") => {
                Ok(match Returns::parse(&syn::parse_quote!(-> #ok))? {
                    Returns::Fallible(t, e) => Returns::CrashFallible(t, e),
                    Returns::Cast => Returns::CrashCast,
                    _ => Returns::Crash((*ok).clone()),
                })
            }
            [ok, err] => Ok(Returns::Fallible((*ok).clone(), (*err).clone())),
            _ => Err(syn::Error::new(
                ty.span(),
                "spell the error type out: `Result<T, E>` (an alias such as `Result<T>` hides \
                 whether an `Err` is an answer (`E`) or a crash (`ActorError`))",
            )),
        }
    }

    /// The type carried by the request's reply port, if it is a call.
    fn reply(&self) -> Option<TokenStream> {
        match self {
            Returns::Cast | Returns::CrashCast => None,
            Returns::Value(t) | Returns::Crash(t) => Some(t.to_token_stream()),
            Returns::Fallible(t, e) | Returns::CrashFallible(t, e) => {
                Some(quote!(::core::result::Result<#t, #e>))
            }
        }
    }
}

fn last_ident_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name))
}

/// `Self` means the object in the method but the reference in the client trait: refuse it.
fn reject_self(ty: &Type) -> syn::Result<()> {
    fn has_self(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(i) => i == "Self",
            TokenTree::Group(g) => has_self(g.stream()),
            _ => false,
        })
    }
    if has_self(ty.to_token_stream()) {
        return Err(syn::Error::new(
            ty.span(),
            "spell the type out instead of `Self`: the typed client is implemented on the \
             reference, where `Self` means something else",
        ));
    }
    Ok(())
}

/// One RPC method of the block.
struct Method {
    ident: Ident,
    variant: Ident,
    vis: Visibility,
    docs: Vec<Attribute>,
    is_async: bool,
    takes_ctx: bool,
    args: Vec<(Ident, Type)>,
    returns: Returns,
    /// `#[every(period)]` (actors): a timer started before `init` sends this message every
    /// `period` (an expression, evaluated with `self` in scope).
    every: Option<Expr>,
}

impl Method {
    fn parse(kind: Kind, self_name: &Ident, f: &ImplItemFn) -> syn::Result<Method> {
        let sig = &f.sig;
        let name = &sig.ident;
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(syn::Error::new(
                sig.generics.span(),
                format!(
                    "`{name}` is generic: {} methods become one message type, so their \
                     argument and return types must be concrete",
                    kind.attribute()
                ),
            ));
        }
        let receiver_ok = sig
            .receiver()
            .is_some_and(|r| r.reference.is_some() && r.mutability.is_some());
        if !receiver_ok {
            let span = sig
                .receiver()
                .map_or_else(|| sig.ident.span(), |r| r.span());
            return Err(syn::Error::new(
                span,
                format!(
                    "`{name}` must take `&mut self`: {attr} methods run one at a time in the \
                     process that owns the state. Move helpers without `&mut self` to a \
                     separate `impl {self_name}` block",
                    attr = kind.attribute()
                ),
            ));
        }
        let mut takes_ctx = false;
        let mut args = Vec::new();
        for (position, input) in sig.inputs.iter().skip(1).enumerate() {
            let FnArg::Typed(arg) = input else {
                continue;
            };
            if is_context(kind, &arg.ty) {
                if position != 0 {
                    return Err(syn::Error::new(
                        arg.span(),
                        format!(
                            "the context comes first: `fn {name}(&mut self, ctx: &mut {}<Self>, ..)`",
                            kind.context()
                        ),
                    ));
                }
                takes_ctx = true;
                continue;
            }
            let ident = match arg.pat.as_ref() {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "give this argument a plain name: it becomes a field of the message",
                    ))
                }
            };
            if ident == "reply" {
                return Err(syn::Error::new(
                    ident.span(),
                    "`reply` is the generated reply port's field: rename this argument",
                ));
            }
            if let Type::Reference(r) = arg.ty.as_ref() {
                return Err(syn::Error::new(
                    r.span(),
                    format!(
                        "argument `{ident}` is borrowed, but arguments travel inside a message: \
                         take an owned value (e.g. `String` instead of `&str`)"
                    ),
                ));
            }
            reject_self(&arg.ty)?;
            args.push((ident, (*arg.ty).clone()));
        }
        let returns = Returns::parse(&sig.output)?;
        let every = every_attr(kind, f, &args, &returns)?;
        Ok(Method {
            ident: name.clone(),
            variant: format_ident!("{}", upper_camel(&name.to_string()), span = name.span()),
            vis: f.vis.clone(),
            docs: f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
            is_async: sig.asyncness.is_some(),
            takes_ctx,
            args,
            returns,
            every,
        })
    }

    fn arg_names(&self) -> Vec<&Ident> {
        self.args.iter().map(|(n, _)| n).collect()
    }

    /// The message variant: unit for a one-way method without arguments.
    fn variant_def(&self) -> TokenStream {
        let Method { variant, docs, .. } = self;
        let fields = self.args.iter().map(|(n, t)| quote!(#n: #t));
        let reply = self
            .returns
            .reply()
            .map(|r| quote!(reply: ::cairn::rpc::__private::Reply<#r>));
        let fields: Vec<TokenStream> = fields.chain(reply).collect();
        if fields.is_empty() {
            quote!(#(#docs)* #variant)
        } else {
            quote!(#(#docs)* #variant { #(#fields),* })
        }
    }

    /// The pattern (or constructor) of the variant with `reply` when it is a call.
    fn variant_value(&self, msg: &Ident) -> TokenStream {
        let variant = &self.variant;
        let mut names: Vec<TokenStream> =
            self.arg_names().into_iter().map(|n| quote!(#n)).collect();
        if self.returns.reply().is_some() {
            names.push(quote!(reply));
        }
        if names.is_empty() {
            quote!(#msg::#variant)
        } else {
            quote!(#msg::#variant { #(#names),* })
        }
    }

    /// The `match` arm of the generated `handle`.
    fn dispatch_arm(&self, msg: &Ident) -> TokenStream {
        let ident = &self.ident;
        let names = self.arg_names();
        let ctx = self.takes_ctx.then(|| quote!(ctx,));
        let wait = self.is_async.then(|| quote!(.await));
        let call = quote!(self.#ident(#ctx #(#names),*) #wait);
        let pattern = self.variant_value(msg);
        match &self.returns {
            Returns::Cast => quote!(#pattern => { #call; }),
            Returns::CrashCast => quote!(#pattern => { #call?; }),
            Returns::Value(_) | Returns::Fallible(..) => quote!(#pattern => {
                // The caller may have stopped waiting: its answer is dropped, as for a
                // hand-written handler.
                let _ = reply.send(#call);
            }),
            Returns::Crash(_) | Returns::CrashFallible(..) => quote!(#pattern => {
                let answer = #call?;
                let _ = reply.send(answer);
            }),
        }
    }

    /// The client trait's method signature.
    fn client_sig(&self) -> TokenStream {
        let ident = &self.ident;
        let params = self.args.iter().map(|(n, t)| quote!(#n: #t));
        let output = match &self.returns {
            Returns::Cast | Returns::CrashCast => quote!(::cairn::rpc::Cast),
            Returns::Value(t) | Returns::Crash(t) => quote!(::cairn::rpc::Call<#t>),
            Returns::Fallible(t, e) | Returns::CrashFallible(t, e) => {
                quote!(::cairn::rpc::Call<#t, #e>)
            }
        };
        quote!(fn #ident(&self, #(#params),*) -> #output)
    }

    /// The client method's body, for a reference of `kind` (`self` is the reference).
    fn client_body(&self, kind: Kind, msg: &Ident) -> TokenStream {
        let value = self.variant_value(msg);
        let (call, cast) = match kind {
            Kind::Object => (quote!(call_object), quote!(cast_object)),
            Kind::Actor => (quote!(call_actor), quote!(cast_actor)),
        };
        let finish = match &self.returns {
            Returns::Cast | Returns::CrashCast => {
                return quote!(::cairn::rpc::__private::#cast(self, #value))
            }
            Returns::Value(_) | Returns::Crash(_) => quote!(answer),
            Returns::Fallible(..) | Returns::CrashFallible(..) => quote!(failed),
        };
        quote!(::cairn::rpc::__private::#call(
            self,
            move |reply| #value,
            ::cairn::rpc::__private::#finish,
        ))
    }

    /// Types that cross the mesh: the arguments and the answer.
    fn wire_types(&self) -> Vec<&Type> {
        let mut types: Vec<&Type> = self.args.iter().map(|(_, t)| t).collect();
        match &self.returns {
            Returns::Cast | Returns::CrashCast => {}
            Returns::Value(t) | Returns::Crash(t) => types.push(t),
            Returns::Fallible(t, e) | Returns::CrashFallible(t, e) => types.extend([t, e]),
        }
        types
    }
}

/// A hook of the form `(&mut self[, ctx])` returning nothing or `Result<(), ActorError>`
/// (`alarm`, `deactivate`, `init`): the short forms are adapted to the trait's signature.
struct Hook {
    name: Ident,
    /// The hidden inherent name the user's body moves to when wrapped.
    inner: Ident,
    takes_ctx: bool,
    /// Returns `Result<(), ActorError>` (else nothing: it cannot fail).
    fallible: bool,
    is_async: bool,
}

impl Hook {
    /// `None` for the hooks with other signatures (`activate`, `idle_timeout`,
    /// `handle_signal`, `terminate`), which go into the trait impl as written.
    fn parse(kind: Kind, f: &ImplItemFn) -> syn::Result<Option<Hook>> {
        let sig = &f.sig;
        let name = &sig.ident;
        if !["alarm", "deactivate", "init"].contains(&name.to_string().as_str()) {
            return Ok(None);
        }
        let form = || {
            syn::Error::new(
                sig.span(),
                format!(
                    "the `{name}` hook takes `&mut self` and optionally `ctx: &mut {}<Self>`, \
                     and returns nothing or `Result<(), ActorError>`",
                    kind.context()
                ),
            )
        };
        let receiver_ok = sig
            .receiver()
            .is_some_and(|r| r.reference.is_some() && r.mutability.is_some());
        let mut inputs = sig.inputs.iter().skip(1);
        let takes_ctx = match inputs.next() {
            None => false,
            Some(FnArg::Typed(arg)) if is_context(kind, &arg.ty) => true,
            Some(_) => return Err(form()),
        };
        if !receiver_ok || inputs.next().is_some() {
            return Err(form());
        }
        let fallible = match Returns::parse(&sig.output).map_err(|_| form())? {
            Returns::Cast => false,
            Returns::CrashCast => true,
            _ => return Err(form()),
        };
        Ok(Some(Hook {
            name: name.clone(),
            inner: format_ident!("__cairn_hook_{}", name, span = name.span()),
            takes_ctx,
            fallible,
            is_async: sig.asyncness.is_some(),
        }))
    }

    /// Whether this hook is the `init` that must start `#[every]` timers first.
    fn starts(&self, timers: &Option<TokenStream>) -> bool {
        self.name == "init" && timers.is_some()
    }

    /// Written exactly as the trait declares it, and with nothing to save: kept as is.
    fn needs_wrapper(&self, state: bool) -> bool {
        let saves = state && self.name != "init";
        !(self.takes_ctx && self.fallible && self.is_async) || saves
    }

    /// The trait method calling the user's body (saving the fields after it with `state`).
    fn wrapper(&self, kind: Kind, state: bool, first: Option<TokenStream>) -> TokenStream {
        let Hook { name, inner, .. } = self;
        let ctx_ty = match kind {
            Kind::Object => quote!(::cairn::rpc::__private::ObjectCtx<Self>),
            Kind::Actor => quote!(::cairn::rpc::__private::ActorCtx<Self>),
        };
        let ctx = self.takes_ctx.then(|| quote!(ctx));
        let wait = self.is_async.then(|| quote!(.await));
        let fail = self.fallible.then(|| quote!(?));
        let (before, after) = if state && kind == Kind::Object {
            (
                Some(quote!(let before = ::cairn::rpc::__private::snapshot(self)?;)),
                quote!(::cairn::rpc::__private::save_state(self, &before, ctx)),
            )
        } else {
            (None, quote!(::core::result::Result::Ok(())))
        };
        quote_spanned! {name.span()=>
            async fn #name(
                &mut self,
                ctx: &mut #ctx_ty,
            ) -> ::core::result::Result<(), ::cairn::rpc::__private::ActorError> {
                let _ = &ctx;
                #first
                #before
                Self::#inner(self, #ctx) #wait #fail;
                #after
            }
        }
    }
}

/// The period of a method's `#[every(period)]`, checked: actors only, one-way methods
/// without arguments (the timer builds the message on every tick).
fn every_attr(
    kind: Kind,
    f: &ImplItemFn,
    args: &[(Ident, Type)],
    returns: &Returns,
) -> syn::Result<Option<Expr>> {
    let Some(attr) = f.attrs.iter().find(|a| a.path().is_ident("every")) else {
        return Ok(None);
    };
    let name = &f.sig.ident;
    if kind == Kind::Object {
        return Err(syn::Error::new(
            attr.span(),
            "`#[every]` is for actors: an object's timer would die with its activation; \
             set a durable alarm instead (`ctx.set_alarm(at)`, the `alarm` hook)",
        ));
    }
    if !args.is_empty() || !matches!(returns, Returns::Cast | Returns::CrashCast) {
        return Err(syn::Error::new(
            attr.span(),
            format!(
                "`#[every]` sends `{name}` on a timer: it must be one-way (return nothing or \
                 `Result<(), ActorError>`) and take no arguments besides `ctx`"
            ),
        ));
    }
    attr.parse_args::<Expr>().map(Some).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a period: `#[every(Duration::from_secs(1))]` or `#[every(self.period)]`",
        )
    })
}

/// Starts the `#[every]` timers, in `init` (`self` and `ctx` in scope). Dropping the
/// `TimerRef` does not cancel a timer: it runs as long as the actor.
fn timers(methods: &[Method], msg: &Ident) -> Option<TokenStream> {
    let starts: Vec<TokenStream> = methods
        .iter()
        .filter_map(|m| {
            let period = m.every.as_ref()?;
            let variant = &m.variant;
            Some(quote_spanned! {period.span()=>
                ctx.handle().send_interval_with(#period, &ctx.addr(), || #msg::#variant);
            })
        })
        .collect();
    (!starts.is_empty()).then(|| quote!(#(#starts)*))
}

fn is_context(kind: Kind, ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_some() && last_ident_is(&r.elem, kind.context()))
}

/// `resolve_all` -> `ResolveAll`.
fn upper_camel(snake: &str) -> String {
    snake
        .trim_start_matches("r#")
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

/// The widest visibility among the methods: the client and message types get it.
fn widest(methods: &[Method]) -> Visibility {
    fn rank(v: &Visibility) -> u8 {
        match v {
            Visibility::Public(_) => 3,
            Visibility::Restricted(r) if r.path.is_ident("crate") => 2,
            Visibility::Restricted(_) => 1,
            Visibility::Inherited => 0,
        }
    }
    methods
        .iter()
        .map(|m| &m.vis)
        .max_by_key(|v| rank(v))
        .cloned()
        .unwrap_or(Visibility::Inherited)
}

/// Collects errors so one expansion reports every broken rule.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let original = item.clone();
    match try_expand(kind, args, item) {
        Ok(tokens) => tokens,
        Err(e) => {
            let errors = e.to_compile_error();
            quote!(#errors #original)
        }
    }
}

fn try_expand(kind: Kind, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = parse_options(args)?;
    let block: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "{} goes on an `impl Type {{ .. }}` block of methods",
                kind.attribute()
            ),
        )
    })?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            format!(
                "{} goes on an inherent impl (`impl Type {{ .. }}`); it writes the trait impl itself",
                kind.attribute()
            ),
        ));
    }
    if !block.generics.params.is_empty() || block.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            block.generics.span(),
            format!("{} does not support generic types yet", kind.attribute()),
        ));
    }
    let self_ty = block.self_ty.as_ref();
    let self_name = match self_ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| syn::Error::new(self_ty.span(), "expected a type name"))?;

    let mut errors = Errors::default();
    let mut class: Option<ImplItemConst> = None;
    let mut hooks: Vec<ImplItemFn> = Vec::new();
    let mut methods: Vec<Method> = Vec::new();
    let mut kept: Vec<ImplItem> = Vec::new();
    for item in &block.items {
        match item {
            ImplItem::Const(c) if c.ident == "CLASS" => match kind {
                Kind::Object => {
                    let mut c = c.clone();
                    c.vis = Visibility::Inherited;
                    class = Some(c);
                }
                Kind::Actor => errors.push(syn::Error::new(
                    c.ident.span(),
                    "actors have no CLASS (that is for objects, #[cairn::object])",
                )),
            },
            ImplItem::Fn(f) if kind.hooks().contains(&f.sig.ident.to_string().as_str()) => {
                let mut f = f.clone();
                f.vis = Visibility::Inherited;
                hooks.push(f);
            }
            ImplItem::Fn(f) if f.sig.ident == "handle" => errors.push(syn::Error::new(
                f.sig.ident.span(),
                format!(
                    "`handle` is what {} generates: give this method another name",
                    kind.attribute()
                ),
            )),
            ImplItem::Fn(f) => {
                match Method::parse(kind, &self_name, f) {
                    Ok(m) => methods.push(m),
                    Err(e) => errors.push(e),
                }
                // `#[every]` is the macro's: the method itself stays a plain method.
                let mut f = f.clone();
                f.attrs.retain(|a| !a.path().is_ident("every"));
                kept.push(ImplItem::Fn(f));
            }
            other => kept.push(other.clone()),
        }
    }
    for hook in &hooks {
        if let Err(e) = Hook::parse(kind, hook) {
            errors.push(e);
        }
    }
    if let Some(state) = &options.state {
        if kind == Kind::Actor {
            errors.push(syn::Error::new(
                state.span(),
                "`state` is for objects (#[cairn::object(state)]): an actor's fields live in \
                 memory only",
            ));
        }
        if let Some(activate) = hooks.iter().find(|h| h.sig.ident == "activate") {
            errors.push(syn::Error::new(
                activate.sig.ident.span(),
                "with `state`, the generated `activate` loads the fields from storage: remove \
                 this one, or drop `state` and load them yourself",
            ));
        }
    }
    if kind == Kind::Object && class.is_none() {
        errors.push(syn::Error::new(
            self_ty.span(),
            format!(
                "#[cairn::object] needs the class name: add `const CLASS: &'static str = \"{}\";` \
                 to this impl (objects are addressed by (CLASS, key), and it names their storage)",
                self_name.to_string().to_lowercase()
            ),
        ));
    }
    if let Some(e) = errors.0 {
        return Err(e);
    }

    let msg = options
        .msg
        .clone()
        .unwrap_or_else(|| format_ident!("{}Msg", self_name));
    let client = options
        .client
        .clone()
        .unwrap_or_else(|| format_ident!("{}Client", self_name));
    let vis = widest(&methods);

    let serde = (!options.local).then(|| {
        quote! {
            #[derive(::cairn::rpc::__private::serde::Serialize, ::cairn::rpc::__private::serde::Deserialize)]
            #[serde(crate = "::cairn::rpc::__private::serde")]
        }
    });
    let state_check = options.state.as_ref().map(
        |state| quote_spanned!(state.span()=> ::cairn::rpc::__private::assert_state::<#self_ty>();),
    );
    let checks = (!options.local || state_check.is_some()).then(|| {
        let asserts = methods
            .iter()
            .filter(|_| !options.local)
            .flat_map(Method::wire_types)
            .map(|ty| quote_spanned!(ty.span()=> ::cairn::rpc::__private::assert_wire::<#ty>();))
            .chain(state_check);
        quote! {
            #[doc(hidden)]
            #[allow(dead_code)]
            fn __cairn_rpc_wire_checks() {
                #(#asserts)*
            }
        }
    });
    let variants = methods.iter().map(Method::variant_def);
    let arms = methods.iter().map(|m| m.dispatch_arm(&msg));
    let msg_doc = format!(
        "The messages of [`{self_name}`], one per method, generated by `{}`.",
        kind.attribute()
    );
    let client_doc = format!(
        "Typed calls to [`{self_name}`], generated by `{}`: each method sends its message and, \
         for a call, awaits the answer (default timeout `cairn::rpc::DEFAULT_CALL_TIMEOUT`; \
         `.timeout(d)` overrides it).",
        kind.attribute()
    );
    let sigs: Vec<TokenStream> = methods.iter().map(Method::client_sig).collect();
    let docs = methods.iter().map(|m| &m.docs);
    let bodies = methods.iter().map(|m| m.client_body(kind, &msg));

    // Hooks written in a short form (no `ctx`, or returning nothing), and with `state` the
    // hooks that may change the fields, run inside a generated wrapper of the trait's
    // signature; the user's body moves to the inherent impl under a hidden name.
    let mut wrappers = Vec::new();
    let mut verbatim = Vec::new();
    let timers = timers(&methods, &msg);
    let has_init = hooks.iter().any(|h| h.sig.ident == "init");
    for hook in hooks {
        if options.state.is_some() && HTTP_HOOKS.contains(&hook.sig.ident.to_string().as_str()) {
            let (inner, wrapper) = http_hook_wrapper(&hook)?;
            kept.push(ImplItem::Fn(inner));
            wrappers.push(wrapper);
            continue;
        }
        match Hook::parse(kind, &hook)? {
            Some(h) if h.needs_wrapper(options.state.is_some()) || h.starts(&timers) => {
                let mut inner = hook.clone();
                inner.sig.ident = h.inner.clone();
                inner.attrs.push(syn::parse_quote!(#[doc(hidden)]));
                kept.push(ImplItem::Fn(inner));
                let first = h.starts(&timers).then(|| timers.clone()).flatten();
                wrappers.push(h.wrapper(kind, options.state.is_some(), first));
            }
            _ => verbatim.push(hook),
        }
    }
    let hooks = verbatim;
    if let Some(timers) = timers.filter(|_| !has_init) {
        // No `init` written: one that only starts the timers.
        wrappers.push(quote! {
            async fn init(
                &mut self,
                ctx: &mut ::cairn::rpc::__private::ActorCtx<Self>,
            ) -> ::core::result::Result<(), ::cairn::rpc::__private::ActorError> {
                #timers
                ::core::result::Result::Ok(())
            }
        });
    }
    let (snapshot, save) = match options.state {
        Some(_) => (
            Some(quote!(let before = ::cairn::rpc::__private::snapshot(self)?;)),
            Some(quote!(::cairn::rpc::__private::save_state(self, &before, ctx)?;)),
        ),
        None => (None, None),
    };
    let (behaviour, reference) = match kind {
        Kind::Object => {
            let activate = if let Some(state) = &options.state {
                // `state`: the fields are loaded from storage (`Default` if none are stored).
                Some(quote_spanned! {state.span()=>
                    async fn activate(
                        ctx: &mut ::cairn::rpc::__private::ObjectCtx<Self>,
                    ) -> ::core::result::Result<Self, ::cairn::rpc::__private::ActorError> {
                        ::cairn::rpc::__private::load_state(ctx)
                    }
                })
            } else if hooks.iter().any(|h| h.sig.ident == "activate") {
                None
            } else {
                // Without `activate`, the state starts from `Default` on every activation.
                Some(quote_spanned! {self_ty.span()=>
                    async fn activate(
                        _ctx: &mut ::cairn::rpc::__private::ObjectCtx<Self>,
                    ) -> ::core::result::Result<Self, ::cairn::rpc::__private::ActorError> {
                        ::core::result::Result::Ok(<Self as ::core::default::Default>::default())
                    }
                })
            };
            (
                quote! {
                    impl ::cairn::rpc::__private::Object for #self_ty {
                        #class
                        type Msg = #msg;
                        #activate
                        #(#hooks)*
                        #(#wrappers)*
                        async fn handle(
                            &mut self,
                            msg: #msg,
                            ctx: &mut ::cairn::rpc::__private::ObjectCtx<Self>,
                        ) -> ::core::result::Result<(), ::cairn::rpc::__private::ActorError> {
                            let _ = &ctx;
                            #snapshot
                            match msg {
                                #(#arms)*
                            }
                            #save
                            ::core::result::Result::Ok(())
                        }
                    }
                },
                quote!(::cairn::rpc::__private::ObjectRef<#self_ty>),
            )
        }
        Kind::Actor => (
            quote! {
                impl ::cairn::rpc::__private::Actor for #self_ty {
                    type Msg = #msg;
                    #(#hooks)*
                    #(#wrappers)*
                    async fn handle(
                        &mut self,
                        msg: #msg,
                        ctx: &mut ::cairn::rpc::__private::ActorCtx<Self>,
                    ) -> ::core::result::Result<(), ::cairn::rpc::__private::ActorError> {
                        let _ = &ctx;
                        match msg {
                            #(#arms)*
                        }
                        ::core::result::Result::Ok(())
                    }
                }
            },
            quote!(::cairn::rpc::__private::ActorRef<#msg>),
        ),
    };
    let attrs = &block.attrs;
    Ok(quote! {
        #(#attrs)*
        impl #self_ty {
            #(#kept)*
            #checks
        }

        #[doc = #msg_doc]
        #serde
        #vis enum #msg {
            #(#variants),*
        }

        #behaviour

        #[doc = #client_doc]
        #vis trait #client {
            #(#(#docs)* #sigs;)*
        }

        impl #client for #reference {
            #(#sigs { #bodies })*
        }
    })
}

/// Used by the tests: the span-free text of generated tokens.
#[cfg(test)]
fn text(tokens: &TokenStream) -> String {
    tokens.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(item: TokenStream) -> syn::File {
        let out = expand(Kind::Object, TokenStream::new(), item);
        syn::parse2(out.clone()).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Asserts that generated text holds `needle`, showing the text if not.
    fn has(out: &str, needle: &str) {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    fn errors(kind: Kind, args: TokenStream, item: TokenStream) -> String {
        match try_expand(kind, args, item) {
            Ok(out) => panic!("expected an error, got {}", text(&out)),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn find<'a, T>(file: &'a syn::File, pick: impl Fn(&'a syn::Item) -> Option<&'a T>) -> &'a T {
        file.items
            .iter()
            .find_map(pick)
            .expect("item not generated")
    }

    fn link() -> TokenStream {
        quote! {
            impl Link {
                const CLASS: &'static str = "link";
                async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> { todo!() }
                /// Where the code points.
                pub async fn resolve(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<String, LinkError> { todo!() }
                pub async fn shorten(&mut self, ctx: &mut ObjectCtx<Self>, url: String, ttl_secs: u64) -> Result<(), LinkError> { todo!() }
                pub fn clicks(&mut self) -> u64 { todo!() }
                pub async fn click(&mut self, ctx: &mut ObjectCtx<Self>) { }
                pub async fn load(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<u32, ActorError> { todo!() }
                pub async fn take(&mut self) -> Result<Result<u8, Limited>, ActorError> { todo!() }
                pub async fn tick(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { todo!() }
                fn helper_const() {}
            }
        }
    }

    #[test]
    fn each_method_becomes_a_variant_with_its_arguments_and_a_reply_for_calls() {
        let link = link();
        // `helper_const` has no receiver: refused, see the next test. Drop it here.
        let item: ItemImpl = {
            let mut i: ItemImpl = syn::parse2(link).unwrap();
            i.items.pop();
            i
        };
        let file = object(item.to_token_stream());
        let msg = find(&file, |i| match i {
            syn::Item::Enum(e) if e.ident == "LinkMsg" => Some(e),
            _ => None,
        });
        let variants: Vec<String> = msg
            .variants
            .iter()
            .map(|v| format!("{} {}", v.ident, text(&v.fields.to_token_stream())))
            .collect();
        assert_eq!(
            variants,
            [
                "Resolve { reply : :: cairn :: rpc :: __private :: Reply < :: core :: result :: Result < String , LinkError > > }",
                "Shorten { url : String , ttl_secs : u64 , reply : :: cairn :: rpc :: __private :: Reply < :: core :: result :: Result < () , LinkError > > }",
                "Clicks { reply : :: cairn :: rpc :: __private :: Reply < u64 > }",
                "Click ",
                "Load { reply : :: cairn :: rpc :: __private :: Reply < u32 > }",
                "Take { reply : :: cairn :: rpc :: __private :: Reply < :: core :: result :: Result < u8 , Limited > > }",
                "Tick ",
            ]
        );
        // The widest method visibility; serde through cairn's re-export.
        assert!(matches!(msg.vis, Visibility::Public(_)));
        let attrs = &msg.attrs;
        let attrs = text(&quote!(#(#attrs)*));
        assert!(attrs.contains("serde :: Serialize"), "{attrs}");
        assert!(
            attrs.contains("crate = \"::cairn::rpc::__private::serde\""),
            "{attrs}"
        );
        // Doc comments travel to the variant.
        assert!(text(&msg.variants[0].to_token_stream()).contains("Where the code points."));
    }

    #[test]
    fn the_trait_impl_gets_the_class_the_hooks_and_a_dispatching_handle() {
        let mut item: ItemImpl = syn::parse2(link()).unwrap();
        item.items.pop();
        let file = object(item.to_token_stream());
        let behaviour = find(&file, |i| match i {
            syn::Item::Impl(i) if i.trait_.is_some() => Some(i),
            _ => None,
        });
        let body = text(&behaviour.to_token_stream());
        assert!(
            body.contains("impl :: cairn :: rpc :: __private :: Object for Link"),
            "{body}"
        );
        assert!(
            body.contains("const CLASS : & 'static str = \"link\""),
            "{body}"
        );
        assert!(body.contains("type Msg = LinkMsg"), "{body}");
        assert!(
            body.contains("async fn activate (ctx : & mut ObjectCtx < Self >)"),
            "{body}"
        );
        // Fallible: the whole Result is the answer. Value: sync method, no await.
        assert!(
            body.contains("LinkMsg :: Resolve { reply } => { let _ = reply . send (self . resolve (ctx ,) . await) ; }"),
            "{body}"
        );
        assert!(
            body.contains(
                "LinkMsg :: Clicks { reply } => { let _ = reply . send (self . clicks ()) ; }"
            ),
            "{body}"
        );
        // One-way: no reply. Crash: `?` ends the handler with the ActorError.
        assert!(
            body.contains("LinkMsg :: Click => { self . click (ctx ,) . await ; }"),
            "{body}"
        );
        assert!(
            body.contains("let answer = self . load (ctx ,) . await ? ;"),
            "{body}"
        );
        // Both: the outer Err crashes, the inner Result is the answer.
        assert!(
            body.contains("let answer = self . take () . await ? ;"),
            "{body}"
        );
        // A one-way method may crash too.
        assert!(
            body.contains("LinkMsg :: Tick => { self . tick (ctx ,) . await ? ; }"),
            "{body}"
        );
        // The inherent impl keeps the methods but not the hooks or CLASS.
        let inherent = find(&file, |i| match i {
            syn::Item::Impl(i) if i.trait_.is_none() => Some(i),
            _ => None,
        });
        let names: Vec<String> = inherent
            .items
            .iter()
            .filter_map(|i| match i {
                ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
                ImplItem::Const(c) => Some(c.ident.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "resolve",
                "shorten",
                "clicks",
                "click",
                "load",
                "take",
                "tick",
                "__cairn_rpc_wire_checks"
            ]
        );
    }

    #[test]
    fn the_client_trait_returns_calls_with_the_error_type_and_casts() {
        let mut item: ItemImpl = syn::parse2(link()).unwrap();
        item.items.pop();
        let file = object(item.to_token_stream());
        let client = find(&file, |i| match i {
            syn::Item::Trait(t) if t.ident == "LinkClient" => Some(t),
            _ => None,
        });
        let sigs: Vec<String> = client
            .items
            .iter()
            .filter_map(|i| match i {
                syn::TraitItem::Fn(f) => Some(text(&f.sig.to_token_stream())),
                _ => None,
            })
            .collect();
        assert_eq!(
            sigs,
            [
                "fn resolve (& self ,) -> :: cairn :: rpc :: Call < String , LinkError >",
                "fn shorten (& self , url : String , ttl_secs : u64) -> :: cairn :: rpc :: Call < () , LinkError >",
                "fn clicks (& self ,) -> :: cairn :: rpc :: Call < u64 >",
                "fn click (& self ,) -> :: cairn :: rpc :: Cast",
                "fn load (& self ,) -> :: cairn :: rpc :: Call < u32 >",
                "fn take (& self ,) -> :: cairn :: rpc :: Call < u8 , Limited >",
                "fn tick (& self ,) -> :: cairn :: rpc :: Cast",
            ]
        );
        let imp = find(&file, |i| match i {
            syn::Item::Impl(i)
                if i.trait_
                    .as_ref()
                    .is_some_and(|(_, p, _)| p.is_ident("LinkClient")) =>
            {
                Some(i)
            }
            _ => None,
        });
        let body = text(&imp.to_token_stream());
        assert!(
            body.contains("for :: cairn :: rpc :: __private :: ObjectRef < Link >"),
            "{body}"
        );
        assert!(
            body.contains("call_object (self , move | reply | LinkMsg :: Shorten { url , ttl_secs , reply } , :: cairn :: rpc :: __private :: failed ,)"),
            "{body}"
        );
        assert!(
            body.contains("cast_object (self , LinkMsg :: Click)"),
            "{body}"
        );
    }

    #[test]
    fn every_argument_and_answer_type_is_checked_for_serde_at_its_own_span() {
        let mut item: ItemImpl = syn::parse2(link()).unwrap();
        item.items.pop();
        let out = text(&expand(
            Kind::Object,
            TokenStream::new(),
            item.to_token_stream(),
        ));
        for ty in ["String", "LinkError", "()", "u64", "u32"] {
            assert!(
                out.contains(&format!("assert_wire :: < {ty} > ()")),
                "{ty} unchecked: {out}"
            );
        }
        // `local` skips serde and the checks.
        let mut item: ItemImpl = syn::parse2(link()).unwrap();
        item.items.pop();
        let out = text(&expand(Kind::Object, quote!(local), item.to_token_stream()));
        assert!(
            !out.contains("assert_wire") && !out.contains("serde"),
            "{out}"
        );
    }

    #[test]
    fn an_actor_gets_an_actor_impl_and_a_client_on_its_actor_ref() {
        let out = expand(
            Kind::Actor,
            quote!(msg = ReporterRequest, client = ReporterApi),
            quote! {
                impl Reporter {
                    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                    pub(crate) async fn tick(&mut self, ctx: &mut ActorCtx<Self>) {}
                    pub(crate) async fn last(&mut self) -> Option<u64> { None }
                }
            },
        );
        let body = text(&out);
        assert!(
            body.contains("pub (crate) enum ReporterRequest { Tick , Last { reply"),
            "{body}"
        );
        assert!(
            body.contains("impl :: cairn :: rpc :: __private :: Actor for Reporter"),
            "{body}"
        );
        assert!(
            body.contains("async fn init (& mut self , ctx : & mut ActorCtx < Self >)"),
            "{body}"
        );
        assert!(
            body.contains(
                "impl ReporterApi for :: cairn :: rpc :: __private :: ActorRef < ReporterRequest >"
            ),
            "{body}"
        );
        assert!(
            body.contains("cast_actor (self , ReporterRequest :: Tick)"),
            "{body}"
        );
        assert!(!body.contains("CLASS"), "{body}");
    }

    #[test]
    fn fetch_and_websocket_hooks_go_into_the_trait_impl() {
        let out = text(&expand(
            Kind::Object,
            TokenStream::new(),
            quote! {
                impl Room {
                    const CLASS: &'static str = "room";
                    async fn fetch(&mut self, req: Request<Bytes>, ctx: &mut ObjectCtx<Self>) -> Result<Response<Bytes>, ActorError> { todo!() }
                    async fn websocket_message(&mut self, s: SocketId, m: WsMessage, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                    pub async fn count(&mut self) -> u64 { 0 }
                }
            },
        ));
        let (inherent, rest) = out
            .split_once("impl :: cairn :: rpc :: __private :: Object for Room")
            .unwrap();
        assert!(
            rest.contains("async fn fetch (& mut self , req : Request < Bytes >"),
            "{out}"
        );
        assert!(
            rest.contains("async fn websocket_message (& mut self"),
            "{out}"
        );
        // Not methods: no message variants for them, and not kept in the inherent impl.
        assert!(!out.contains("Fetch"), "{out}");
        assert!(!inherent.contains("fn fetch"), "{out}");
    }

    #[test]
    fn with_state_http_hooks_save_the_fields_they_change() {
        let out = text(&expand(
            Kind::Object,
            quote!(state),
            quote! {
                impl Room {
                    const CLASS: &'static str = "room";
                    async fn websocket_close(&mut self, s: SocketId, code: u16, why: String, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                }
            },
        ));
        has(
            &out,
            "async fn __cairn_hook_websocket_close (& mut self , s : SocketId",
        );
        has(
            &out,
            "async fn websocket_close (& mut self , __cairn_arg0 : SocketId , __cairn_arg1 : u16 , \
             __cairn_arg2 : String , ctx : & mut ObjectCtx < Self >)",
        );
        has(
            &out,
            "Self :: __cairn_hook_websocket_close (self , __cairn_arg0 , __cairn_arg1 , __cairn_arg2 , ctx) . await ?",
        );
        has(&out, "save_state (self , & before , ctx) ?");
    }

    #[test]
    fn with_state_an_http_hook_in_a_short_form_is_refused() {
        let err = text(&expand(
            Kind::Object,
            quote!(state),
            quote! {
                impl Room {
                    const CLASS: &'static str = "room";
                    async fn fetch(&mut self, req: Request<Bytes>) -> Response<Bytes> { todo!() }
                }
            },
        ));
        assert!(
            err.contains("with `state`, the `fetch` hook is written as `Object` declares it"),
            "{err}"
        );
    }

    #[test]
    fn without_activate_an_object_starts_from_default() {
        let out = text(&expand(
            Kind::Object,
            TokenStream::new(),
            quote!(impl Tally { const CLASS: &'static str = "tally"; fn add(&mut self, n: u64) {} }),
        ));
        has(
            &out,
            "< Self as :: core :: default :: Default > :: default ()",
        );
    }

    #[test]
    fn state_loads_the_fields_and_saves_them_around_each_method_and_hook() {
        let out = text(&expand(
            Kind::Object,
            quote!(state),
            quote! {
                impl Tally {
                    const CLASS: &'static str = "tally";
                    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                    fn idle_timeout() -> Option<Duration> { None }
                    pub async fn add(&mut self, n: u64) -> u64 { n }
                }
            },
        ));
        // Activation loads the struct; the type is checked for Default + serde.
        has(&out, "load_state (ctx)");
        has(&out, "assert_state :: < Tally > ()");
        // `handle`: a snapshot before the dispatch, a save after it.
        let handle = &out[out.find("async fn handle").expect("handle")..];
        let snap = handle.find("let before = :: cairn :: rpc :: __private :: snapshot (self) ?");
        let arm = handle.find("TallyMsg :: Add");
        let save = handle.find("save_state (self , & before , ctx) ?");
        assert!(
            snap < arm && arm < save && snap.is_some(),
            "snapshot, dispatch, save out of order: {handle}"
        );
        // The alarm runs inside a saving wrapper; its body moved to a hidden inherent fn.
        assert!(
            out.contains(
                "async fn __cairn_hook_alarm (& mut self , ctx : & mut ObjectCtx < Self >)"
            ),
            "{out}"
        );
        has(&out, "Self :: __cairn_hook_alarm (self , ctx) . await ?");
        // Hooks that cannot change the fields stay as written.
        has(&out, "fn idle_timeout () -> Option < Duration >");
        // Without `state`, nothing is snapshotted.
        let plain = text(&expand(
            Kind::Object,
            TokenStream::new(),
            quote!(impl Tally { const CLASS: &'static str = "tally"; fn add(&mut self, n: u64) {} }),
        ));
        assert!(
            !plain.contains("snapshot") && !plain.contains("save_state"),
            "{plain}"
        );
    }

    #[test]
    fn hooks_may_skip_the_context_and_the_result_like_methods() {
        let out = text(&expand(
            Kind::Actor,
            TokenStream::new(),
            quote! {
                impl Ticker {
                    async fn init(&mut self) { self.n = 1; }
                    pub async fn tick(&mut self) {}
                }
            },
        ));
        // The body moves to a hidden inherent fn; the trait gets the full signature.
        has(&out, "async fn __cairn_hook_init (& mut self)");
        has(&out, "async fn init (& mut self , ctx : & mut :: cairn :: rpc :: __private :: ActorCtx < Self > ,)");
        // It cannot fail: no `?`, and the wrapper answers `Ok`.
        has(
            &out,
            "Self :: __cairn_hook_init (self ,) . await ; :: core :: result :: Result :: Ok (())",
        );
        // A hook in the trait's own form is kept as written.
        let out = text(&expand(
            Kind::Object,
            TokenStream::new(),
            quote! {
                impl Tally {
                    const CLASS: &'static str = "tally";
                    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                }
            },
        ));
        assert!(!out.contains("__cairn_hook"), "{out}");
        // Any other form is refused with the forms that work.
        let e = errors(
            Kind::Object,
            TokenStream::new(),
            quote! {
                impl Tally {
                    const CLASS: &'static str = "tally";
                    async fn alarm(&mut self, n: u8) {}
                    async fn deactivate(&mut self) -> u8 { 0 }
                }
            },
        );
        assert!(
            e.contains(
                "the `alarm` hook takes `&mut self` and optionally `ctx: &mut ObjectCtx<Self>`"
            ) && e.contains("the `deactivate` hook takes"),
            "{e}"
        );
    }

    #[test]
    fn every_starts_a_timer_in_init_before_the_users_init() {
        let out = text(&expand(
            Kind::Actor,
            TokenStream::new(),
            quote! {
                impl Reporter {
                    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> { Ok(()) }
                    #[every(self.period)]
                    pub async fn tick(&mut self, ctx: &mut ActorCtx<Self>) {}
                }
            },
        ));
        let init = &out[out
            .find("async fn init (& mut self , ctx : & mut :: cairn")
            .expect("init")..];
        let timer = init
            .find("ctx . handle () . send_interval_with (self . period , & ctx . addr () , || ReporterMsg :: Tick) ;")
            .expect("no timer in init");
        let user = init
            .find("Self :: __cairn_hook_init (self , ctx) . await ?")
            .expect("user init");
        assert!(timer < user, "{init}");
        // The attribute is the macro's: the method is emitted without it.
        assert!(!out.contains("# [every"), "{out}");
        // Without a hand-written init, one is generated for the timers.
        let out = text(&expand(
            Kind::Actor,
            TokenStream::new(),
            quote!(impl R { #[every(Duration::from_secs(1))] pub async fn tick(&mut self) {} }),
        ));
        assert!(
            out.contains("async fn init (& mut self , ctx : & mut :: cairn :: rpc :: __private :: ActorCtx < Self > ,)")
                && out.contains("send_interval_with (Duration :: from_secs (1) , & ctx . addr () , || RMsg :: Tick)"),
            "{out}"
        );
        // Refused: on an object, on a call, on a method with arguments, without a period.
        let e = errors(
            Kind::Object,
            TokenStream::new(),
            quote!(impl O { const CLASS: &'static str = "o"; #[every(D)] fn t(&mut self) {} }),
        );
        assert!(e.contains("`#[every]` is for actors"), "{e}");
        let e = errors(
            Kind::Actor,
            TokenStream::new(),
            quote!(impl R {
                #[every(D)] fn a(&mut self) -> u8 { 0 }
                #[every(D)] fn b(&mut self, n: u8) {}
                #[every] fn c(&mut self) {}
            }),
        );
        assert!(
            e.contains("`#[every]` sends `a` on a timer: it must be one-way"),
            "{e}"
        );
        assert!(e.contains("`#[every]` sends `b` on a timer"), "{e}");
        assert!(e.contains("expected a period"), "{e}");
    }

    #[test]
    fn state_refuses_a_hand_written_activate_and_actors() {
        let e = errors(
            Kind::Object,
            quote!(state),
            quote! {
                impl Tally {
                    const CLASS: &'static str = "tally";
                    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> { todo!() }
                }
            },
        );
        assert!(
            e.contains("the generated `activate` loads the fields"),
            "{e}"
        );
        let e = errors(Kind::Actor, quote!(state), quote!(impl A {}));
        assert!(e.contains("`state` is for objects"), "{e}");
    }

    #[test]
    fn snake_case_methods_become_upper_camel_variants() {
        assert_eq!(upper_camel("resolve"), "Resolve");
        assert_eq!(upper_camel("add_and_get"), "AddAndGet");
        assert_eq!(upper_camel("r#type"), "Type");
        assert_eq!(upper_camel("_private_ish"), "PrivateIsh");
    }

    #[test]
    fn broken_rules_are_reported_together_with_their_reasons() {
        let all = errors(
            Kind::Object,
            TokenStream::new(),
            quote! {
                impl Link {
                    fn no_receiver(x: u8) -> u8 { x }
                    fn shared(&self) -> u8 { 0 }
                    fn borrowed(&mut self, s: &str) {}
                    fn late_ctx(&mut self, n: u8, ctx: &mut ObjectCtx<Self>) {}
                    fn generic<T>(&mut self, t: T) {}
                    fn aliased(&mut self) -> Result<u8> { todo!() }
                    fn selfish(&mut self, other: Self) {}
                    fn reply(&mut self, reply: u8) {}
                    fn handle(&mut self) {}
                }
            },
        );
        for expected in [
            "`no_receiver` must take `&mut self`",
            "`shared` must take `&mut self`",
            "Move helpers without `&mut self` to a separate `impl Link` block",
            "argument `s` is borrowed",
            "the context comes first",
            "`generic` is generic",
            "spell the error type out",
            "spell the type out instead of `Self`",
            "`reply` is the generated reply port's field",
            "`handle` is what #[cairn::object] generates",
            "#[cairn::object] needs the class name: add `const CLASS: &'static str = \"link\";`",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn a_broken_block_is_emitted_unchanged_after_the_errors() {
        let out = text(&expand(
            Kind::Object,
            TokenStream::new(),
            quote!(impl Link { fn f(&self) {} }),
        ));
        assert!(out.starts_with(":: core :: compile_error !"), "{out}");
        assert!(out.ends_with("impl Link { fn f (& self) { } }"), "{out}");
    }

    #[test]
    fn options_and_misplaced_attributes_are_refused_clearly() {
        let e = errors(Kind::Actor, quote!(mystery), quote!(impl A {}));
        assert!(e.contains("unknown option"), "{e}");
        let e = errors(Kind::Actor, quote!(msg = "x"), quote!(impl A {}));
        assert!(e.contains("expected a type name"), "{e}");
        let e = errors(
            Kind::Object,
            TokenStream::new(),
            quote!(impl Object for A {}),
        );
        assert!(e.contains("goes on an inherent impl"), "{e}");
        let e = errors(
            Kind::Object,
            TokenStream::new(),
            quote!(
                struct A;
            ),
        );
        assert!(e.contains("goes on an `impl Type { .. }` block"), "{e}");
        let e = errors(
            Kind::Actor,
            TokenStream::new(),
            quote!(impl A { const CLASS: &'static str = "a"; }),
        );
        assert!(e.contains("actors have no CLASS"), "{e}");
        let e = errors(
            Kind::Object,
            TokenStream::new(),
            quote!(
                impl<T> A<T> {
                    const CLASS: &'static str = "a";
                }
            ),
        );
        assert!(e.contains("does not support generic types"), "{e}");
    }
}
