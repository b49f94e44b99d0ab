//! Tables in `docs/` that are generated from the code (flags, metrics): a test renders the
//! table and compares it with the block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
//! With `CORRAL_UPDATE_DOCS=1` the test rewrites the block instead.

/// Checks (or, with `CORRAL_UPDATE_DOCS=1`, rewrites) block `name` of `doc` (relative to the
/// repository root) against `table`.
pub(crate) fn check(doc: &str, name: &str, table: &str) {
    let path = format!("{}/../{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{doc} lacks {begin}"))
        + begin.len();
    let stop = text
        .find(&end)
        .unwrap_or_else(|| panic!("{doc} lacks {end}"));
    if std::env::var_os("CORRAL_UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &text[..start], &text[stop..]);
        std::fs::write(&path, updated).unwrap_or_else(|e| panic!("{doc}: {e}"));
        return;
    }
    assert_eq!(
        &text[start..stop],
        table,
        "{doc} is out of date: run CORRAL_UPDATE_DOCS=1 cargo test -p corral-node"
    );
}
