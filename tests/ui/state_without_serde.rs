/// `state` keeps the fields in storage: they must serialize and have a default.
#[derive(Default)]
struct Counter {
    total: u64,
}

#[cairn::object(state)]
impl Counter {
    const CLASS: &'static str = "counter";

    pub async fn add(&mut self, n: u64) {
        self.total += n;
    }
}

fn main() {}
