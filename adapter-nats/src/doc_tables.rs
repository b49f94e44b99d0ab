//! Tables in `docs/` generated from the code (flags, metrics), shared by the crates' tests: a
//! test renders a table and [`check`]s it against the block between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->` of a doc; with `CORRAL_UPDATE_DOCS=1` it rewrites the block instead.
//! Not part of the adapter's API.

/// Checks (or, with `CORRAL_UPDATE_DOCS=1`, rewrites) block `name` of `doc` (a path relative
/// to the repository root, `crate_dir` being a crate directory directly below it) against
/// `table`.
pub fn check(crate_dir: &str, doc: &str, name: &str, table: &str) {
    let path = format!("{crate_dir}/../{doc}");
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
        "{doc} is out of date: run CORRAL_UPDATE_DOCS=1 cargo test --workspace"
    );
}

/// The Markdown table of the long flags of `command`: flag, environment variable, default,
/// help (with the possible values).
pub fn flags_markdown(command: &clap::Command) -> String {
    let mut table = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",");
        let default = if default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{default}`")
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        let values: Vec<_> = arg
            .get_possible_values()
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let help = if values.is_empty() {
            help
        } else {
            format!(
                "{}. One of {}.",
                help.trim_end_matches('.'),
                values.join(", ")
            )
        };
        table.push_str(&format!("| `--{long}` | {env} | {default} | {help} |\n"));
    }
    table
}
