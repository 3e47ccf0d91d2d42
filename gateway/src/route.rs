//! Routing: `/{class}/{key}/{rest...}` names an object and the path within it.
//!
//! Pure and allocation-light, so the fuzz target drives it directly. `class` and `key` are
//! percent-decoded and must be non-empty UTF-8 no longer than the configured limit; `rest`
//! keeps its raw form (with its leading `/`; `/` when absent) for the handler to interpret.

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The object the request is for.
    pub object: ObjectKey,
    /// The path after the key, raw (still percent-encoded), starting with `/`.
    pub rest: String,
}

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
/// class and key.
pub fn route(path: &str, max_segment_bytes: usize) -> Result<Route, RouteError> {
    let after_slash = path.strip_prefix('/').ok_or(RouteError::NoRoute)?;
    let (class, after_class) = after_slash.split_once('/').ok_or(RouteError::NoRoute)?;
    let (key, rest) = match after_class.find('/') {
        Some(i) => after_class.split_at(i),
        None => (after_class, "/"),
    };
    if class.is_empty() || key.is_empty() {
        return Err(RouteError::NoRoute);
    }
    Ok(Route {
        object: ObjectKey {
            class: decode(class, "class", max_segment_bytes)?,
            key: decode(key, "key", max_segment_bytes)?,
        },
        rest: rest.to_owned(),
    })
}

fn decode(segment: &str, what: &'static str, limit: usize) -> Result<String, RouteError> {
    // Decoding never lengthens, so the raw length bounds the work before the check.
    if segment.len() > limit.saturating_mul(3) {
        return Err(RouteError::TooLong { what, limit });
    }
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| RouteError::BadEncoding(what))?;
    if decoded.len() > limit {
        return Err(RouteError::TooLong { what, limit });
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> (String, String, String) {
        let r = route(path, 64).unwrap();
        (r.object.class, r.object.key, r.rest)
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
