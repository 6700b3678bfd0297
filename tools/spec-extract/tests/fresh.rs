//! docs/requirements.md is what `cargo xtask spec-map` generates from docs/requirements.toml and
//! the citations in today's test sources, and the map is sound: every requirement has a citing
//! test or an honest not-implemented record, and no test cites an unknown id. `cargo xtask
//! regen` (LLORCH_BLESS=1) rewrites the file.

#[test]
fn requirements_map_is_fresh_and_sound() {
    let root = llorch_spec_extract::repo_root();
    let report = llorch_spec_extract::report(&root).unwrap_or_else(|e| panic!("{e}"));
    let generated = llorch_spec_extract::render(&report);
    let path = root.join(llorch_spec_extract::MAP);
    if std::env::var_os("LLORCH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: run `cargo xtask regen` (or `cargo xtask spec-map`) and commit it",
            llorch_spec_extract::MAP
        );
    }
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "the requirements map is broken ({} problem(s)):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    let (n, ids, tested, ni) = report.counts();
    println!("{n} requirements ({ids} ids), {tested} with tests, {ni} not implemented");
}
