#[derive(Default)]
struct Counter {
    total: u64,
}

#[cairn::object]
impl Counter {
    pub async fn add(&mut self, n: u64) {
        self.total += n;
    }
}

fn main() {}
