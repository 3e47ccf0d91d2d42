//! The node's observability pages, served by a [`cairn_gateway::Dispatcher`] of their own
//! ([`Observer`]): Prometheus metrics, a JSON status for scripts, and a live dashboard.
//!
//! The gateway routes `/{class}/{key}/...`, so the pages live under the reserved class
//! `cairn` (no object class may be called that):
//!
//! | path | what |
//! |---|---|
//! | `GET /cairn/metrics` | every metric of the node's [`crate::metrics::Metrics`], OpenMetrics text |
//! | `GET /cairn/status.json` | the node, its counters, its objects per class, its hottest objects, its mesh, shards and supervision trees (see [`status`]) |
//! | `GET /cairn/dashboard` | a page that polls `status.json` and draws it (no CDN: its assets are here) |
//! | `GET /cairn/assets/{file}` | the dashboard's script, stylesheet and the vendored uPlot (MIT) |
//! | `GET /metrics` | the same as `/cairn/metrics`, where Prometheus looks by default (one segment: no object's path) |
//!
//! [`serve`] binds a separate gateway for these pages (`cairn-node run --metrics ADDR`);
//! the node's object gateway can mount the same [`Observer`] for its `cairn` class.
//! Requests other than `GET`/`HEAD` are answered 405; unknown pages 404.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use cairn_gateway::{
    Body, DispatchError, DispatchFuture, Dispatcher, Gateway, GatewayError, Request, Response,
    Route,
};
use cairn_scheduler::Handle;
use http::{header, Method, StatusCode};

use crate::metrics::Metrics;
use crate::object::Objects;
use crate::{Node, NodeInfo};

pub mod status;

/// Why [`serve`] could not start.
pub use cairn_gateway::GatewayError as ServeError;

/// The class the pages are routed under.
pub const CLASS: &str = "cairn";

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("assets/uPlot.LICENSE");

/// Serves the pages of one node.
pub struct Observer {
    handle: Handle,
    objects: Weak<Objects>,
    info: Arc<NodeInfo>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("node", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// The pages of `node`.
    pub fn new(node: &Node) -> Arc<Observer> {
        Observer::of_parts(node.handle(), &node.objects, &node.info, &node.metrics)
    }

    /// The pages of a node still being started (`--http` mounts them beside its objects).
    pub(crate) fn of_parts(
        handle: &Handle,
        objects: &Arc<Objects>,
        info: &Arc<NodeInfo>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Observer> {
        Arc::new(Observer {
            handle: handle.clone(),
            objects: Arc::downgrade(objects),
            info: Arc::clone(info),
            metrics: Arc::clone(metrics),
        })
    }

    /// The answer to `GET /cairn/{page}{rest}`; `None` for an unknown page.
    fn page(&self, page: &str, rest: &str) -> Option<Response> {
        let (content_type, body): (&str, Body) = match (page, rest) {
            ("metrics", "/") => (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode().into(),
            ),
            ("dashboard", "/") => ("text/html; charset=utf-8", DASHBOARD_HTML.into()),
            ("assets", "/dashboard.js") => ("text/javascript; charset=utf-8", DASHBOARD_JS.into()),
            ("assets", "/uPlot.iife.min.js") => ("text/javascript; charset=utf-8", UPLOT_JS.into()),
            ("assets", "/uPlot.min.css") => ("text/css; charset=utf-8", UPLOT_CSS.into()),
            ("assets", "/uPlot.LICENSE") => ("text/plain; charset=utf-8", UPLOT_LICENSE.into()),
            _ => return None,
        };
        respond(content_type, body)
    }

    /// `status.json`: the node's figures, then its supervision trees (asking each
    /// supervisor, see [`status::add_supervision`]) and its members' links (asking each
    /// member, see [`status::add_links`]); `None` once the node is stopping.
    fn status(&self) -> Option<DispatchFuture> {
        let objects = self.objects.upgrade()?;
        let mut json = status::status_json(&self.handle, &objects, &self.info);
        drop(objects);
        let handle = self.handle.clone();
        Some(Box::pin(async move {
            status::add_supervision(&handle, &mut json).await;
            status::add_links(&handle, &mut json).await;
            Ok(respond("application/json", json.to_string().into())
                .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR, "no response\n")))
        }))
    }
}

fn respond(content_type: &str, body: Body) -> Option<Response> {
    http::Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .ok()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

impl Dispatcher for Observer {
    fn dispatch(&self, route: Route, request: Request) -> DispatchFuture {
        let answer = if route.class() != CLASS {
            Err(DispatchError::UnknownClass(route.class().to_owned()))
        } else if *request.method() != Method::GET && *request.method() != Method::HEAD {
            Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"))
        } else if (route.key(), route.rest()) == ("status.json", "/") {
            match self.status() {
                Some(answer) => return answer,
                None => Ok(plain(StatusCode::NOT_FOUND, "no such page\n")),
            }
        } else {
            Ok(self
                .page(route.key(), route.rest())
                .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "no such page\n")))
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Binds a gateway serving only `node`'s pages on `addr` (port 0 picks one). It runs on the
/// node's scheduler; [`Gateway::shutdown`] (or the node's shutdown) stops it.
pub fn serve(node: &Node, addr: SocketAddr) -> Result<Gateway, GatewayError> {
    let config = cairn_gateway::GatewayConfig {
        aliases: aliases(),
        ..cairn_gateway::GatewayConfig::default()
    };
    Gateway::builder(node.handle().clone(), Observer::new(node))
        .config(config)
        .bind(addr)
}

/// The pages also served outside the `cairn` class: `/metrics` (Prometheus' default
/// path), as `/cairn/metrics`. Both the node's object gateway and [`serve`] take them.
pub(crate) fn aliases() -> Vec<(String, String)> {
    vec![("/metrics".to_owned(), format!("/{CLASS}/metrics"))]
}
