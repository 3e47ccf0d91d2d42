//! Routing: `/{class}/{key}/{rest...}` names an object and the path within it.
//!
//! Pure and allocation-light, so the fuzz target drives it directly. `class` and `key` are
//! percent-decoded and must be non-empty UTF-8 no longer than the configured limit; `rest`
//! keeps its raw form (with its leading `/`; `/` when absent) for the handler to interpret.

use std::borrow::Cow;
use std::fmt;

/// An object's address: its class and its key within the class.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The object class (e.g. `room`).
    pub class: String,
    /// The object's key within its class (e.g. `lobby`).
    pub key: String,
}

impl ObjectKey {
    /// An object key from its parts.
    pub fn new(class: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectKey {
            class: class.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.class, self.key)
    }
}

/// Where a request goes: an object and the rest of the path.
///
/// Made without copying the path when routed from a request's URI ([`route_uri`]): the
/// class, key and rest are views of the URI (shared, not copied), and only a class or key
/// with percent-escapes is decoded into a string of its own.
#[derive(Clone, Debug)]
pub struct Route {
    /// What the parts are views of.
    path: Path,
    class: Part,
    key: Part,
    /// Where the rest starts in the path; the path's end for a path ending at the key
    /// (rest `/`).
    rest: u32,
}

/// The path a [`Route`] was made from. (Small and with `u32` offsets: a dispatcher's
/// future usually holds its route, and that future is boxed for every request.)
#[derive(Clone, Debug)]
enum Path {
    /// A request's path and query (a view of the request's bytes).
    Uri(http::uri::PathAndQuery),
    /// A path given as text.
    Text(Box<str>),
}

/// A class or key: its range in the path, or its decoding when it had escapes.
#[derive(Clone, Debug)]
enum Part {
    /// Start and end in the path (whose length fits a `u32`: checked when routing).
    Raw(u32, u32),
    Decoded(Box<str>),
}

impl Route {
    fn path(&self) -> &str {
        match &self.path {
            Path::Uri(path) => path.path(),
            Path::Text(text) => text,
        }
    }

    fn part<'a>(&'a self, part: &'a Part) -> &'a str {
        match part {
            Part::Raw(start, end) => &self.path()[*start as usize..*end as usize],
            Part::Decoded(decoded) => decoded,
        }
    }

    /// The object class (percent-decoded, non-empty).
    pub fn class(&self) -> &str {
        self.part(&self.class)
    }

    /// The object's key within its class (percent-decoded, non-empty).
    pub fn key(&self) -> &str {
        self.part(&self.key)
    }

    /// The path after the key, raw (still percent-encoded), starting with `/` (`/` when the
    /// path ends at the key).
    pub fn rest(&self) -> &str {
        match &self.path()[self.rest as usize..] {
            "" => "/",
            rest => rest,
        }
    }

    /// The object the request is for (copies the class and key).
    pub fn object(&self) -> ObjectKey {
        ObjectKey::new(self.class(), self.key())
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        (self.class(), self.key(), self.rest()) == (other.class(), other.key(), other.rest())
    }
}

impl Eq for Route {}

/// Why a path names no object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The path is not `/{class}/{key}[/...]` (answered 404).
    #[error("no route: paths are /{{class}}/{{key}}/...")]
    NoRoute,
    /// A class or key is not valid percent-encoded UTF-8 (answered 400).
    #[error("the {0} is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    /// A class or key is longer than the limit (answered 400).
    #[error("the {what} is longer than {limit} bytes")]
    TooLong {
        /// `"class"` or `"key"`.
        what: &'static str,
        /// The limit in bytes (decoded).
        limit: usize,
    },
}

/// Routes `path` (a URI's path, without the query). `max_segment_bytes` bounds the decoded
/// class and key. (A request is routed with [`route_uri`], which does not copy its path.)
pub fn route(path: &str, max_segment_bytes: usize) -> Result<Route, RouteError> {
    route_in(Path::Text(path.into()), max_segment_bytes)
}

/// Routes `uri`'s path as [`route`] does; the route shares the URI's bytes.
pub fn route_uri(uri: &http::Uri, max_segment_bytes: usize) -> Result<Route, RouteError> {
    let path = uri.path_and_query().ok_or(RouteError::NoRoute)?;
    route_in(Path::Uri(path.clone()), max_segment_bytes)
}

fn route_in(path: Path, max_segment_bytes: usize) -> Result<Route, RouteError> {
    let text = match &path {
        Path::Uri(path) => path.path(),
        Path::Text(text) => text,
    };
    // Offsets are `u32`; no request head comes near 4 GiB.
    let Ok(len) = u32::try_from(text.len()) else {
        return Err(RouteError::NoRoute);
    };
    let after_slash = text.strip_prefix('/').ok_or(RouteError::NoRoute)?;
    let (class, after_class) = after_slash.split_once('/').ok_or(RouteError::NoRoute)?;
    let class_start = 1;
    let key_start = class_start + class.len() + 1;
    let key_end = key_start + after_class.find('/').unwrap_or(after_class.len());
    let key = &text[key_start..key_end];
    if class.is_empty() || key.is_empty() {
        return Err(RouteError::NoRoute);
    }
    let class = decode(class, class_start, "class", max_segment_bytes)?;
    let key = decode(key, key_start, "key", max_segment_bytes)?;
    let rest = u32::try_from(key_end).unwrap_or(len);
    Ok(Route {
        path,
        class,
        key,
        rest,
    })
}

/// `segment`, found at `start` in the path, as a [`Part`]: its range if it has no escapes.
fn decode(
    segment: &str,
    start: usize,
    what: &'static str,
    limit: usize,
) -> Result<Part, RouteError> {
    // Decoding never lengthens, so the raw length bounds the work before the check.
    if segment.len() > limit.saturating_mul(3) {
        return Err(RouteError::TooLong { what, limit });
    }
    let raw = || Part::Raw(start as u32, (start + segment.len()) as u32);
    if !segment.contains('%') {
        // Nothing to decode, and a `&str` is UTF-8 already: no pass to decode or validate.
        if segment.len() > limit {
            return Err(RouteError::TooLong { what, limit });
        }
        return Ok(raw());
    }
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| RouteError::BadEncoding(what))?;
    if decoded.len() > limit {
        return Err(RouteError::TooLong { what, limit });
    }
    Ok(match decoded {
        Cow::Borrowed(_) => raw(),
        Cow::Owned(decoded) => Part::Decoded(decoded.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> (String, String, String) {
        let r = route(path, 64).unwrap();
        let uri = http::Uri::try_from(path).unwrap();
        assert_eq!(
            route_uri(&uri, 64).unwrap(),
            r,
            "{path:?} routed from a URI"
        );
        (
            r.class().to_owned(),
            r.key().to_owned(),
            r.rest().to_owned(),
        )
    }

    #[test]
    fn class_key_and_rest_are_split() {
        assert_eq!(
            ok("/room/lobby/ws"),
            ("room".into(), "lobby".into(), "/ws".into())
        );
        assert_eq!(
            ok("/room/lobby/a/b/"),
            ("room".into(), "lobby".into(), "/a/b/".into())
        );
        assert_eq!(
            ok("/room/lobby"),
            ("room".into(), "lobby".into(), "/".into())
        );
        assert_eq!(
            ok("/room/lobby/"),
            ("room".into(), "lobby".into(), "/".into())
        );
    }

    #[test]
    fn a_route_from_a_uri_is_views_of_it_unless_escaped() {
        let uri = http::Uri::from_static("/room/lobby/ws?x=1");
        let r = route_uri(&uri, 64).unwrap();
        assert!(matches!(r.class, Part::Raw(..)) && matches!(r.key, Part::Raw(..)));
        assert_eq!((r.class(), r.key(), r.rest()), ("room", "lobby", "/ws"));
        assert_eq!(r.object(), ObjectKey::new("room", "lobby"));
        let escaped = route_uri(&http::Uri::from_static("/room/caf%C3%A9"), 64).unwrap();
        assert!(matches!(escaped.key, Part::Decoded(_)));
        assert_eq!((escaped.key(), escaped.rest()), ("café", "/"));
        let authority_form = http::Uri::from_static("example.com:443");
        assert_eq!(route_uri(&authority_form, 64), Err(RouteError::NoRoute));
    }

    #[test]
    fn class_and_key_are_percent_decoded_but_rest_is_raw() {
        assert_eq!(
            ok("/room/caf%C3%A9%20au%2Flait/x%20y"),
            ("room".into(), "café au/lait".into(), "/x%20y".into())
        );
    }

    #[test]
    fn paths_without_class_and_key_have_no_route() {
        for path in ["", "/", "/room", "/room/", "//key", "room/key", "//"] {
            assert_eq!(route(path, 64), Err(RouteError::NoRoute), "{path:?}");
        }
    }

    #[test]
    fn bad_encoding_and_oversized_segments_are_refused() {
        assert_eq!(route("/room/%FF", 64), Err(RouteError::BadEncoding("key")));
        assert_eq!(route("/%C3/k", 64), Err(RouteError::BadEncoding("class")));
        let long = "k".repeat(65);
        assert_eq!(
            route(&format!("/room/{long}"), 64),
            Err(RouteError::TooLong {
                what: "key",
                limit: 64
            })
        );
        // 22 encoded bytes of 3 characters each decode to 22 bytes: within 64.
        let encoded = "%41".repeat(22);
        assert_eq!(ok(&format!("/room/{encoded}")).1, "A".repeat(22));
    }
}
