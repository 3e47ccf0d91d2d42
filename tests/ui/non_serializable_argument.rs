/// Lives only in memory: no serde.
struct Secret(String);

#[derive(Default)]
struct Vault {
    secrets: Vec<String>,
}

#[cairn::object]
impl Vault {
    const CLASS: &'static str = "vault";

    pub async fn keep(&mut self, secret: Secret) {
        self.secrets.push(secret.0);
    }
}

fn main() {}
