//! Every workspace crate has a README.md with its purpose, what it must not depend on and how
//! to test it, and docs/crates.md is the index generated from them. `cargo xtask regen`
//! (LLORCH_BLESS=1) rewrites the index.

#[test]
fn every_crate_has_a_readme_and_the_index_is_fresh() {
    let root = llorch_readme_index::repo_root();
    let entries = llorch_readme_index::check(&root).unwrap_or_else(|problems| {
        panic!(
            "crate READMEs are incomplete ({} problem(s)):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
    });
    let generated = llorch_readme_index::render(&entries);
    let path = root.join(llorch_readme_index::INDEX);
    if std::env::var_os("LLORCH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `cargo xtask regen` and commit it",
        llorch_readme_index::INDEX
    );
}
