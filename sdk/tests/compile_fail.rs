//! Misuse of the SDK must fail to compile with an error that points at the mistake, on the
//! native target too. Each file in `compile-fail/` is one mistake; the `.stderr` beside it is the
//! reviewed compiler output. After a change, regenerate with `TRYBUILD=overwrite` and read the
//! diff: the first line must still say what the user did wrong.

#[test]
fn misuse_fails_to_compile() {
    trybuild::TestCases::new().compile_fail("tests/compile-fail/*.rs");
}
