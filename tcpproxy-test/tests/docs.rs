//! The docs keep up with the suite: every phase has its section in docs/phases.md (headed by its
//! id) and its row in README's table of phases (by its printed name), so a new phase cannot land
//! undocumented; every flag the docs pass to tcpproxy-test is one its --help lists, and every
//! flag is in README's table; README's example output is what the harness prints; the grading
//! recipes (the Gradescope build failure, the Autolab scores, the CI workflow) run or are
//! complete as written; and docs/grading.md names the glibc the built harness needs. The lists
//! are read from the suite, the docs and the binary, never typed here.

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

/// The text under the heading `## title` (or deeper), up to the next heading of that level.
fn section<'a>(md: &'a str, title: &str) -> &'a str {
    let heading = md
        .lines()
        .find(|l| l.trim_start_matches('#').trim() == title && l.starts_with('#'))
        .unwrap_or_else(|| panic!("no heading {title:?}"));
    let level = heading.len() - heading.trim_start_matches('#').len();
    let start = md.find(heading).unwrap() + heading.len();
    let rest = &md[start..];
    let end = rest
        .lines()
        .filter(|l| {
            let hashes = l.len() - l.trim_start_matches('#').len();
            hashes > 0 && hashes <= level && l[hashes..].starts_with(' ')
        })
        .find_map(|l| rest.find(&format!("\n{l}\n")))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The fenced code blocks of `md`: the info string and the lines inside.
fn code_blocks(md: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in md.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), Vec::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, lines)), None) => lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    blocks
}

/// Shell lines with their `\` continuations joined.
fn joined(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut carry = String::new();
    for l in lines {
        match l.trim_end().strip_suffix('\\') {
            Some(head) => carry.push_str(head),
            None => {
                carry.push_str(l);
                out.push(std::mem::take(&mut carry));
            }
        }
    }
    out
}

fn help(words: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcpproxy-test"))
        .args(words)
        .arg("--help")
        .output()
        .expect("the harness runs");
    assert!(out.status.success(), "{words:?} --help: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// `--flag` as help prints it: followed by a space, `=` or the line's end, never by more name.
fn help_names(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        !help[i + flag.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_tcpproxy_test_flag_in_the_docs_is_one_its_help_lists() {
    let mut unknown = Vec::new();
    for file in ["README.md", "docs/grading.md", "docs/phases.md"] {
        let md = read(file);
        for (info, lines) in code_blocks(&md) {
            if !matches!(info.as_str(), "" | "sh" | "yaml") {
                continue;
            }
            for line in joined(&lines) {
                let words: Vec<&str> = line.split_whitespace().collect();
                // The harness run as a program, not named as a package (`-p tcpproxy-test`).
                let Some(at) = words.iter().enumerate().position(|(i, w)| {
                    w.rsplit('/').next() == Some("tcpproxy-test")
                        && (i == 0 || !matches!(words[i - 1], "-p" | "--package" | "install"))
                }) else {
                    continue;
                };
                let mut rest = &words[at + 1..];
                let sub: Vec<&str> = match rest.first() {
                    Some(&s @ ("grade" | "fuzz")) => {
                        rest = &rest[1..];
                        vec![s]
                    }
                    _ => vec![],
                };
                let text = help(&sub);
                for w in rest
                    .iter()
                    .take_while(|w| !matches!(**w, "--" | "#" | "|" | "||" | "&&" | ";"))
                    .filter(|w| w.starts_with("--"))
                {
                    let flag = w.split('=').next().unwrap_or(w);
                    if !help_names(&text, flag) {
                        unknown.push(format!("{file}: {flag} in `{}`", line.trim()));
                    }
                }
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn readme_options_table_has_a_row_for_every_flag_of_help() {
    let text = help(&[]);
    let readme = read("README.md");
    let table = section(&readme, "Grading a proxy");
    let flags: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            // `-h, --help`, `--only <GLOB>`: the long name.
            let long = l.split_whitespace().find(|w| w.starts_with("--"))?;
            Some(long.trim_end_matches(','))
        })
        .filter(|long| !matches!(*long, "--help" | "--version"))
        .collect();
    assert!(
        flags.contains(&"--stall-timeout"),
        "flags read from --help: {flags:?}"
    );
    let missing: Vec<&str> = flags
        .into_iter()
        .filter(|flag| {
            !table.lines().any(|row| {
                row.starts_with("| `") && help_names(row.split('|').nth(1).unwrap_or(""), flag)
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README's option table lacks {missing:?}"
    );
}

#[test]
fn gradescope_recipe_for_a_failed_build_reports_zero_and_the_build_log() {
    let md = read("docs/grading.md");
    let recipe: Vec<String> = code_blocks(section(&md, "Gradescope"))
        .into_iter()
        .find(|(info, _)| info == "sh")
        .map(|(_, lines)| joined(&lines))
        .expect("a run_autograder block");
    // The recipe's own make line names the log that --build-failed reads.
    let make = recipe
        .iter()
        .find(|l| l.contains("make ") && l.contains('>'))
        .expect("the recipe builds with make");
    let log_path = make
        .split('>')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("make's output goes to a file");
    let command = recipe
        .iter()
        .find(|l| l.contains("--build-failed"))
        .expect("the recipe reports a failed build with --build-failed");
    assert!(
        !command.contains(['\'', '"', '$']),
        "the words below are split on spaces: {command}"
    );
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(
        words
            .iter()
            .position(|w| *w == "--build-failed")
            .map(|i| words[i + 1]),
        Some(log_path),
        "--build-failed reads another file than make writes: {command}"
    );

    // The same words, with the image's folders moved into a temp folder.
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let local = |w: &str| -> String {
        if w.ends_with("/tcpproxy-test") {
            env!("CARGO_BIN_EXE_tcpproxy-test").to_string()
        } else {
            w.replace("/autograder/results", results.to_str().unwrap())
        }
    };
    let log = local(log_path);
    let build_output = "tcpproxy.c:12:5: error: expected ';' before 'return'\nmake: *** [Makefile:2: tcpproxy] Error 1\n";
    std::fs::write(&log, build_output).unwrap();
    let words: Vec<String> = words.iter().map(|w| local(w)).collect();
    let out = std::process::Command::new(&words[0])
        .args(&words[1..])
        .output()
        .expect("the harness runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json_path = words
        .iter()
        .position(|w| w == "--output")
        .map(|i| &words[i + 1])
        .expect("the recipe writes results.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    assert_eq!(v["score"], 0.0, "{v:#}");
    let phases = tcpproxy_test::phase::all().len();
    assert_eq!(v["max_score"], phases as f64, "{v:#}");
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), phases);
    assert!(
        tests
            .iter()
            .all(|t| t["score"] == 0.0 && t["max_score"] == 1.0 && t["status"] == "failed"),
        "{v:#}"
    );
    let output = v["output"].as_str().unwrap();
    assert!(output.contains("did not build"), "{output}");
    assert!(output.contains(build_output.trim_end()), "{output}");
}

/// docs/grading.md's Autolab driver, run as written in a folder standing for Autolab's: `make`
/// (first on PATH) builds a fixture proxy or fails, and `./tcpproxy-test` is the harness held to
/// the phases each case needs. The scores on its last line follow Scoring: a passed or warned
/// phase earns its point, a failed one does not, and a build that failed scores 0 in each.
#[test]
fn autolab_recipe_scores_passed_and_warning_only() {
    use std::os::unix::fs::PermissionsExt;
    let md = read("docs/grading.md");
    let driver: String = code_blocks(section(&md, "Autolab"))
        .into_iter()
        .find(|(info, _)| info == "sh")
        .map(|(_, lines)| lines.join("\n") + "\n")
        .expect("an Autolab driver");
    let executable = |path: &Path, text: &str| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let fixtures = crate::support::fixtures_bin();
    let build_error = "tcpproxy.c:12:5: error: expected ';' before 'return'";
    // (fixture the build yields, or none: it fails; the phases run; what the human lines show;
    // the scores line)
    let cases = [
        (
            Some("busy-poll"),
            ["echo/single", "resources/idle-cpu"],
            "CPU while idle: warning",
            serde_json::json!({"scores": {"echo/single": 1, "resources/idle-cpu": 1}}),
        ),
        (
            Some("close-on-first-eof"),
            ["echo/single", "shutdown/one-way"],
            "One-way shutdown: failed",
            serde_json::json!({"scores": {"echo/single": 1, "shutdown/one-way": 0}}),
        ),
        (
            None,
            ["echo/single", "shutdown/one-way"],
            build_error,
            serde_json::json!({"scores": {"echo/single": 0, "shutdown/one-way": 0}}),
        ),
    ];
    for (fixture, phases, shown, scores) in cases {
        let _slot = crate::support::HeavySlot::acquire();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let handin = dir.path().join("handin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::create_dir(&handin).unwrap();
        let make = match fixture {
            Some(f) => {
                executable(
                    &bin.join("tcpproxy.built"),
                    &format!("#!/bin/sh\nexec '{}' {f} \"$@\"\n", fixtures.display()),
                );
                format!(
                    "#!/bin/sh\ncp '{}' tcpproxy\n",
                    bin.join("tcpproxy.built").display()
                )
            }
            None => format!("#!/bin/sh\necho \"{build_error}\"\nexit 2\n"),
        };
        executable(&bin.join("make"), &make);
        let only: String = phases.iter().map(|p| format!(" --only {p}")).collect();
        executable(
            &handin.join("tcpproxy-test"),
            &format!(
                "#!/bin/sh\nexec '{}'{only} \"$@\"\n",
                env!("CARGO_BIN_EXE_tcpproxy-test")
            ),
        );
        executable(&handin.join("driver.sh"), &driver);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = assert_cmd::Command::new("bash")
            .arg("./driver.sh")
            .current_dir(&handin)
            .env("PATH", path)
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .expect("bash runs the driver");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let what = format!("{fixture:?}: {out:?}");
        assert!(out.status.success(), "{what}");
        assert!(stdout.contains(shown), "{what}");
        let last = stdout.lines().last().expect("the driver prints");
        let got: serde_json::Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {what}"));
        assert_eq!(got, scores, "{what}");
    }
}

#[test]
fn ci_matrix_is_a_complete_github_actions_workflow() {
    let md = read("docs/grading.md");
    let (_, lines) = code_blocks(section(&md, "A CI matrix"))
        .into_iter()
        .find(|(info, _)| info == "yaml")
        .expect("a yaml block");
    let yaml = lines.join("\n");
    // No YAML parser among the dependencies: the structure is checked by indentation here, and
    // by Python's yaml module below when there is one.
    let job_lines: Vec<&str> = yaml
        .lines()
        .skip_while(|l| *l != "jobs:")
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
        .collect();
    assert!(!job_lines.is_empty(), "no jobs:\n{yaml}");
    assert_eq!(
        yaml.matches("\n    runs-on: ").count(),
        job_lines.len(),
        "every job needs runs-on:\n{yaml}"
    );
    assert!(
        !yaml.contains('\t'),
        "YAML does not allow tabs for indentation"
    );
    for needed in [
        "uses: actions/checkout@v",
        "fail-fast: false",
        "matrix:",
        "uses: actions/upload-artifact@v",
        "--build-failed",
        "--format junit",
    ] {
        assert!(
            yaml.contains(needed),
            "the workflow lacks {needed:?}:\n{yaml}"
        );
    }

    // Parsed for real where Python's yaml module is at hand.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(yaml.as_bytes())?;
            child.wait_with_output()
        });
    let out = match parsed {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
            eprintln!("note: no yaml module for python3 here, so the workflow was not parsed");
            return;
        }
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: no python3 here, so the workflow was not parsed");
            return;
        }
        Err(e) => panic!("python3: {e}"),
    };
    assert!(out.status.success(), "the workflow is not YAML: {out:?}");
    let workflow: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = workflow["jobs"].as_object().expect("jobs is a map");
    assert_eq!(jobs.len(), job_lines.len(), "{workflow:#}");
    for (name, job) in jobs {
        assert!(job["runs-on"].is_string(), "job {name}: {job:#}");
        let steps = job["steps"].as_array().expect("steps is a list");
        assert!(
            steps[0]["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout@")),
            "job {name} checks nothing out first: {job:#}"
        );
    }
    let grade = jobs
        .values()
        .find(|j| j["strategy"]["matrix"].is_object())
        .expect("a matrix job");
    assert_eq!(grade["strategy"]["fail-fast"], false, "{grade:#}");
}

/// The newest `GLIBC_x.y` symbol version `bin` needs, read with objdump.
fn newest_glibc(bin: &str) -> Option<String> {
    let out = match std::process::Command::new("objdump")
        .args(["-T", bin])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("objdump: {e}"),
    };
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|n| n.parse().ok()).collect();
            parts.map(|p| (p, v.to_string()))
        })
        .max()
        .map(|(_, v)| v)
}

#[test]
fn grading_md_names_the_glibc_the_harness_needs() {
    let Some(version) = newest_glibc(env!("CARGO_BIN_EXE_tcpproxy-test")) else {
        eprintln!("note: no objdump here, so the glibc the harness needs was not checked");
        return;
    };
    let md = read("docs/grading.md");
    for needed in [
        format!("glibc {version} or later"),
        format!("GLIBC_{version}"),
    ] {
        assert!(
            md.contains(&needed),
            "the harness built here needs GLIBC_{version}: docs/grading.md should say {needed:?}"
        );
    }
}

#[test]
fn readme_example_output_is_what_the_harness_prints() {
    use tcpproxy_test::phase::{Failure, Outcome, Verdict};
    use tcpproxy_test::{summary, write_outcome};
    let phases = tcpproxy_test::phase::all();
    let outcome = |name: &str, verdict: Verdict, secs: f64| -> Outcome {
        let p = phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("README shows a phase {name:?} the suite does not have"));
        Outcome {
            id: p.id,
            name: p.name,
            verdict,
            failure: (verdict != Verdict::Passed).then(|| Failure::new("...")),
            elapsed: std::time::Duration::from_secs_f64(secs),
            proxy_exit: None,
            stderr_tail: None,
            closest: None,
            timeline: Default::default(),
            notes: vec![],
        }
    };
    let printed = |o: &Outcome| {
        let mut out = Vec::new();
        write_outcome(&mut out, o).unwrap();
        String::from_utf8(out).unwrap()
    };
    let readme = read("README.md");
    let blocks = code_blocks(&readme);

    // A passing run: phase lines (`...` for those left out), then the count of all of them.
    let (_, passing) = blocks
        .iter()
        .find(|(info, lines)| info.is_empty() && lines[0].ends_with(": passed"))
        .expect("README shows a passing run");
    let (count, shown) = passing.split_last().unwrap();
    for line in shown.iter().filter(|l| *l != "...") {
        let name = line.strip_suffix(": passed").unwrap_or(line);
        assert_eq!(
            printed(&outcome(name, Verdict::Passed, 0.0)),
            format!("{line}\n")
        );
    }
    let all_passed: Vec<Outcome> = phases
        .iter()
        .map(|p| outcome(p.name, Verdict::Passed, 0.0))
        .collect();
    assert_eq!(count, &summary(&all_passed), "README's passing run's count");

    // A failing run: the verdict line, indented details, the phase's `took` line, the count.
    let (_, failing) = blocks
        .iter()
        .find(|(_, lines)| lines[0].starts_with("$ tcpproxy-test --only"))
        .expect("README shows a failing run");
    let (name, _) = failing[1]
        .split_once(": failed: ")
        .expect("a failed phase's line");
    let (count, rest) = failing.split_last().unwrap();
    let took = rest.last().unwrap();
    let secs: f64 = took
        .rsplit(' ')
        .next()
        .and_then(|w| w.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no `took N.Ns` at the end of {took:?}"));
    let failed = outcome(name, Verdict::Failed, secs);
    assert_eq!(
        printed(&failed).lines().last(),
        Some(took.as_str()),
        "README's failure ends with another took line than the harness prints"
    );
    assert!(rest[2..].iter().all(|l| l.starts_with("    ")));
    assert_eq!(count, &summary(&[failed]));
}

/// The fixtures named in `text` (in backticks) against what the expectations say of `ids`: every
/// fixture that must fail (or warn on) one of them is named, and every name is one that must or
/// may. Fixtures that fail every phase are the hostile programs, said in prose.
fn check_named_fixtures(place: &str, ids: &[&str], text: &str, problems: &mut Vec<String>) {
    use fixtures::bugs::{ALL, Fails};
    let named: std::collections::BTreeSet<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| ALL.iter().any(|f| f.name == *w))
        .collect();
    let hits = |list: &[&str]| ids.iter().any(|id| list.contains(id));
    for f in ALL {
        let e = &f.expect;
        let must = match e.fails {
            Fails::Phases(p) => hits(p),
            Fails::Every => continue,
        } || hits(e.warns);
        let may = e.may_fail.iter().any(|m| hits(m.phases));
        if must && !named.contains(f.name) {
            problems.push(format!(
                "{place}: does not name `{}`, which fails it",
                f.name
            ));
        }
        if named.contains(f.name) && !must && !may {
            problems.push(format!("{place}: names `{}`, which passes it", f.name));
        }
    }
}

/// README's table of phases and docs/phases.md's "Fails:" lines name the fixtures the verdict
/// matrix holds each phase to (the fixtures' own declarations), so neither can drift from it.
#[test]
fn the_docs_name_the_fixtures_each_phase_catches() {
    let mut problems = Vec::new();
    let readme = read("README.md");
    for p in tcpproxy_test::phase::all() {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", p.name)))
            .unwrap_or_default();
        let bugs = row.rsplit('|').nth(1).unwrap_or_default();
        check_named_fixtures(
            &format!("README row `{}`", p.name),
            &[p.id],
            bugs,
            &mut problems,
        );
    }
    let phases_md = read("docs/phases.md");
    for section in phases_md.split("\n## ").skip(1) {
        let Some((ids, _)) = section.lines().next().unwrap_or_default().split_once(" — ") else {
            continue;
        };
        let ids: Vec<&str> = ids.split(',').map(str::trim).collect();
        // The "Fails:" and "Warns:" lines, each up to the paragraph's end.
        let fails: String = section
            .split("\nFails:")
            .skip(1)
            .chain(section.split("\nWarns:").skip(1))
            .map(|rest| rest.split("\n\n").next().unwrap_or_default())
            .collect();
        check_named_fixtures(
            &format!("docs/phases.md `{}` Fails:", ids.join(", ")),
            &ids,
            &fails,
            &mut problems,
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
