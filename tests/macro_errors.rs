//! The typed-RPC macros' common mistakes fail to compile with a message that says what to
//! do (`tests/ui/*.stderr` hold the expected compiler output; regenerate them with
//! `TRYBUILD=overwrite cargo test --test macro_errors` after an intended change).

#[test]
fn common_mistakes_fail_with_clear_messages() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/non_serializable_argument.rs");
    t.compile_fail("tests/ui/method_without_mut_self.rs");
    t.compile_fail("tests/ui/missing_class.rs");
    t.compile_fail("tests/ui/state_without_serde.rs");
    t.compile_fail("tests/ui/state_fetch_short_form.rs");
}
