//! The examples a new user reads first are built and run here: the README's first hour
//! (which must quote `examples/first_hour.rs` verbatim) and the URL shortener written with
//! message enums and with typed methods.

#[path = "../examples/first_hour.rs"]
mod first_hour;
#[path = "../examples/shortener_enum.rs"]
mod shortener_enum;
#[path = "../examples/shortener_rpc.rs"]
mod shortener_rpc;

/// The Rust block between the README's first-hour markers.
fn quoted_first_hour(readme: &str) -> &str {
    let start = readme
        .find("<!-- first-hour: examples/first_hour.rs -->\n```rust\n")
        .expect("the README's first-hour section lost its opening marker");
    let body = &readme[start..];
    let body = &body[body.find("```rust\n").unwrap() + "```rust\n".len()..];
    let end = body
        .find("```\n<!-- /first-hour -->")
        .expect("the README's first-hour section lost its closing marker");
    &body[..end]
}

#[test]
fn the_readme_quotes_the_first_hour_example_verbatim() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/first_hour.rs")).unwrap();
    assert!(
        quoted_first_hour(&readme) == example,
        "README.md's first hour differs from examples/first_hour.rs: copy the file into the README"
    );
}

#[test]
fn the_first_hour_example_runs() {
    first_hour::main();
}

#[test]
fn the_shortener_runs_with_message_enums() {
    shortener_enum::main();
}

#[test]
fn the_shortener_runs_with_typed_methods() {
    shortener_rpc::main();
}
