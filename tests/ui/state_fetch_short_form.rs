use cairn::bytes::Bytes;
use cairn::http;
use cairn::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Page {
    views: u64,
}

#[cairn::object(state)]
impl Page {
    const CLASS: &'static str = "page";

    // With `state`, `fetch` is written as `Object` declares it (with `ctx`, returning
    // `Result<_, ActorError>`) so the wrapper can save the fields after it.
    async fn fetch(&mut self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        let _ = request;
        self.views += 1;
        http::Response::new(Bytes::new())
    }
}

fn main() {}
