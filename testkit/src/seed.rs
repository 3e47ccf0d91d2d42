//! Seeded randomness: every randomized test prints its seed and replays from `CAIRN_SEED`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed of a randomized test: `CAIRN_SEED` if set (to replay a failure), else a fresh
/// one. Printed either way, so a failing run's output names the seed that replays it.
pub fn seeded_rng() -> (u64, StdRng) {
    let seed = match std::env::var("CAIRN_SEED") {
        Ok(s) => s.parse().expect("CAIRN_SEED must be a u64"),
        Err(_) => rand::thread_rng().gen(),
    };
    eprintln!("seed {seed}: replay with CAIRN_SEED={seed}");
    (seed, StdRng::seed_from_u64(seed))
}
