//! The docs keep up with the suite: every phase has its section in docs/phases.md (headed by its
//! id) and its row in README's table of phases (by its printed name), so a new phase cannot land
//! undocumented. The lists are read from the suite itself, never typed here.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_phase_has_its_section_in_docs_and_its_row_in_readme() {
    let phases_md = read("docs/phases.md");
    // `## echo/chain2, echo/chain20 — Two / 20 echo connections`: the ids before the dash.
    let documented: Vec<&str> = phases_md
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|l| l.split_once(" — ").map(|(ids, _)| ids))
        .flat_map(|ids| ids.split(',').map(str::trim))
        .collect();
    let readme = read("README.md");
    let mut missing = Vec::new();
    for p in tcpproxy_test::phase::all() {
        if !documented.contains(&p.id) {
            missing.push(format!("docs/phases.md has no `## {} — ...` section", p.id));
        }
        if !readme
            .lines()
            .any(|l| l.starts_with(&format!("| {} |", p.name)))
        {
            missing.push(format!("README.md has no `| {} | ...` row", p.name));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
