#[derive(Default)]
struct Counter {
    total: u64,
}

#[cairn::object]
impl Counter {
    const CLASS: &'static str = "counter";

    pub async fn add(&mut self, n: u64) {
        self.total += n;
    }

    pub async fn total(&self) -> u64 {
        self.total
    }
}

fn main() {}
