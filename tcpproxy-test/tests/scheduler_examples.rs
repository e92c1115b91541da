//! docs/grading.md's scheduler examples (issue 15) shard as they claim: the Kubernetes Indexed Job
//! and the GitHub Actions matrix are parsed as YAML, their counts checked against each other, and
//! their own commands run here once per index with the environment the scheduler would give
//! (`JOB_COMPLETION_INDEX` and the Job's env for Kubernetes, `${{ matrix.shard }}` for Actions),
//! over a small class of submissions that cannot run (error rows, so it takes seconds); then the
//! example's merge command joins the shards and every submission must be in exactly one shard and
//! exactly once in the merged table.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::harness_bin;

/// Submissions of the small class: folders whose `tcpproxy` is not executable (or missing), which
/// `grade` turns into error rows at once.
const CLASS: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];

/// The YAML blocks under the heading `### title` of docs/grading.md, in order.
fn yaml_blocks(title: &str) -> Vec<String> {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grading.md"))
        .expect("docs/grading.md");
    let heading = format!("### {title}");
    let start = md
        .lines()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("docs/grading.md has no heading {heading:?}"));
    let mut blocks = Vec::new();
    // Inside a fence: whether it is a YAML block, and its text so far.
    let mut open: Option<(bool, String)> = None;
    for line in md.lines().skip(start + 1) {
        match (&mut open, line.strip_prefix("```")) {
            (None, _) if line.starts_with('#') => break,
            (None, Some(info)) => open = Some((info.trim() == "yaml", String::new())),
            (Some((yaml, text)), Some(_)) => {
                if *yaml {
                    blocks.push(std::mem::take(text));
                }
                open = None;
            }
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

fn parse(yaml: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("{e}:\n{yaml}"));
    assert_eq!(docs.len(), 1, "one YAML document per block:\n{yaml}");
    docs.remove(0)
}

#[track_caller]
fn str_at<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {y:?}"))
}

/// A fresh class of [`CLASS`] in `dir`, and a `tcpproxy-test` wrapper in `bin` that runs the
/// harness under test, as a scheduler's image or runner would have it.
fn class_and_harness(dir: &Path, bin: &Path) {
    for (i, name) in CLASS.iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        if i % 2 == 0 {
            // Not executable: an error row. The others have no tcpproxy at all.
            std::fs::write(d.join("tcpproxy"), "#!/bin/sh\nexit 1\n").unwrap();
        }
    }
    std::fs::create_dir_all(bin).unwrap();
    let exe = bin.join("tcpproxy-test");
    std::fs::write(
        &exe,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", harness_bin().display()),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `shell -c script` in `cwd` with `env` and `bin` first on PATH, and none of the schedulers'
/// variables but those given; it must exit 0 within a minute.
fn run_script(shell: &str, script: &str, cwd: &Path, bin: &Path, env: &[(String, String)]) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = assert_cmd::Command::new(shell);
    cmd.arg("-c").arg(script).current_dir(cwd).env("PATH", path);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
        "TCPPROXY_TEST_SHARD_COUNT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd
        .timeout(Duration::from_secs(60))
        .output()
        .expect("the shell runs");
    assert!(
        out.status.success(),
        "`{shell} -c {script:?}` with {env:?}: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn class_json(dir: &Path) -> serde_json::Value {
    let path = dir.join("class.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn names(table: &serde_json::Value) -> Vec<String> {
    table["submissions"]
        .as_array()
        .expect("submissions")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every submission of [`CLASS`] is in exactly one of `shards` (each graded as shard k of n) and
/// exactly once, in order, in the `merged` table, each row an error row.
#[track_caller]
fn assert_each_once(shards: &[PathBuf], merged: &Path) {
    let mut seen: Vec<String> = Vec::new();
    for (k, dir) in shards.iter().enumerate() {
        let table = class_json(dir);
        assert_eq!(table["complete"], true, "{}", dir.display());
        assert_eq!(table["shard"]["count"], shards.len(), "{}", dir.display());
        assert_eq!(table["shard"]["index"], k + 1, "{}", dir.display());
        seen.extend(names(&table));
    }
    let class: Vec<String> = CLASS.iter().map(|s| s.to_string()).collect();
    let mut sorted = class.clone();
    sorted.sort();
    seen.sort();
    assert_eq!(seen, sorted, "the shards' rows, together");
    let table = class_json(merged);
    assert_eq!(table["complete"], true);
    assert_eq!(
        names(&table),
        class,
        "the merged table's rows, in the class's order"
    );
    for row in table["submissions"].as_array().unwrap() {
        let status = row["status"].as_str().unwrap();
        assert!(status.starts_with("error: "), "{row}");
    }
}

#[test]
fn the_kubernetes_indexed_job_grades_each_submission_in_exactly_one_shard() {
    let blocks = yaml_blocks("On Kubernetes, an Indexed Job");
    assert_eq!(
        blocks.len(),
        2,
        "the Indexed Job, then the Job that merges its shards"
    );
    let (job, merge) = (parse(&blocks[0]), parse(&blocks[1]));
    for j in [&job, &merge] {
        assert_eq!(str_at(&j["apiVersion"], "apiVersion"), "batch/v1");
        assert_eq!(str_at(&j["kind"], "kind"), "Job");
        // An Indexed Job's pods may not be restarted by policy Always.
        let policy = str_at(
            &j["spec"]["template"]["spec"]["restartPolicy"],
            "restartPolicy",
        );
        assert!(matches!(policy, "Never" | "OnFailure"), "{policy}");
    }
    let spec = &job["spec"];
    assert_eq!(str_at(&spec["completionMode"], "completionMode"), "Indexed");
    let completions = spec["completions"].as_i64().expect("completions");
    let parallelism = spec["parallelism"].as_i64().expect("parallelism");
    assert!(completions >= 2 && (1..=completions).contains(&parallelism));

    // Its container: the env Kubernetes gives (plus the index), and the shell line it runs.
    let container = |j: &Yaml| -> (Vec<(String, String)>, String) {
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        let command: Vec<&str> = c["command"]
            .as_vec()
            .expect("command")
            .iter()
            .map(|w| str_at(w, "a command word"))
            .collect();
        assert!(
            matches!(command.as_slice(), [sh, "-c"] if sh.ends_with("sh")),
            "{command:?}"
        );
        let args = c["args"].as_vec().expect("args");
        assert_eq!(args.len(), 1, "one shell line");
        let env = c["env"]
            .as_vec()
            .map(|e| {
                e.iter()
                    .map(|v| {
                        let name = str_at(&v["name"], "env name").to_string();
                        (name, str_at(&v["value"], "env value (quoted)").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        (env, str_at(&args[0], "args[0]").to_string())
    };
    let (env, script) = container(&job);
    let count = env
        .iter()
        .find(|(k, _)| k == "TCPPROXY_TEST_SHARD_COUNT")
        .map(|(_, v)| v.parse::<i64>().expect("a count"))
        .expect("TCPPROXY_TEST_SHARD_COUNT in the Job's env");
    assert_eq!(
        count, completions,
        "TCPPROXY_TEST_SHARD_COUNT must be the Job's completions"
    );
    assert!(
        script.contains("tcpproxy-test grade ") && script.contains("--shard-from-env"),
        "{script}"
    );
    assert!(script.contains("--seed "), "shards need one seed: {script}");
    let (merge_env, merge_script) = container(&merge);
    assert!(
        merge_script.contains("tcpproxy-test grade merge "),
        "{merge_script}"
    );
    // Both Jobs mount the same claim at /out.
    let out_claim = |j: &Yaml| -> String {
        let pod = &j["spec"]["template"]["spec"];
        let mount = pod["containers"][0]["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"].as_str() == Some("/out"))
            .expect("a volume at /out");
        let volume = pod["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the volume mounted at /out");
        str_at(&volume["persistentVolumeClaim"]["claimName"], "claimName").to_string()
    };
    assert_eq!(out_claim(&job), out_claim(&merge));

    // Run it: /class and /out are folders here; each index gets the env its pod would have.
    let root = tempfile::tempdir().unwrap();
    let (class, out, bin) = (
        root.path().join("class"),
        root.path().join("out"),
        root.path().join("bin"),
    );
    class_and_harness(&class, &bin);
    std::fs::create_dir_all(&out).unwrap();
    let here = |s: &str| {
        s.replace("/class/", "\0class\0")
            .replace("/out/", "\0out\0")
            .replace("\0class\0", &format!("{}/", class.display()))
            .replace("\0out\0", &format!("{}/", out.display()))
    };
    for index in 0..completions {
        let mut env = env.clone();
        env.push(("JOB_COMPLETION_INDEX".into(), index.to_string()));
        run_script("sh", &here(&script), root.path(), &bin, &env);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    shards.sort_by_key(|d| class_json(d)["shard"]["index"].as_u64());
    assert_eq!(shards.len() as i64, completions, "{shards:?}");
    run_script("sh", &here(&merge_script), root.path(), &bin, &merge_env);
    let merged = out.join(
        merge_script
            .split_whitespace()
            .skip_while(|w| *w != "--out-dir")
            .nth(1)
            .and_then(|d| d.strip_prefix("/out/"))
            .expect("the merge's --out-dir is under /out"),
    );
    assert_each_once(&shards, &merged);
}

#[test]
fn the_github_actions_matrix_grades_each_submission_in_exactly_one_shard() {
    let blocks = yaml_blocks("On GitHub Actions, a matrix of shards");
    assert_eq!(blocks.len(), 1, "one workflow");
    let workflow = parse(&blocks[0]);
    let jobs = workflow["jobs"].as_hash().expect("jobs");
    for (name, job) in jobs {
        assert!(
            job["runs-on"].as_str().is_some(),
            "job {name:?} needs runs-on"
        );
    }
    let (grade_name, grade) = jobs
        .iter()
        .find(|(_, j)| !j["strategy"]["matrix"]["shard"].is_badvalue())
        .expect("a job with a matrix of shards");
    let grade_name = str_at(grade_name, "a job's name");
    let shards: Vec<i64> = grade["strategy"]["matrix"]["shard"]
        .as_vec()
        .expect("shard: [1, 2, ...]")
        .iter()
        .map(|k| k.as_i64().expect("a shard number"))
        .collect();
    let n = shards.len() as i64;
    assert!(n >= 2);
    assert_eq!(shards, (1..=n).collect::<Vec<_>>(), "shards 1..N");
    assert_eq!(
        grade["strategy"]["fail-fast"].as_bool(),
        Some(false),
        "one shard failing must not cancel the others"
    );
    let (_, merge) = jobs
        .iter()
        .find(|(_, j)| {
            j["needs"] == Yaml::String(grade_name.into())
                || j["needs"]
                    .as_vec()
                    .is_some_and(|v| v.contains(&Yaml::String(grade_name.into())))
        })
        .expect("a job that needs the graded shards");
    // The run: steps that call the harness.
    let runs = |job: &Yaml| -> Vec<String> {
        job["steps"]
            .as_vec()
            .expect("steps")
            .iter()
            .filter_map(|s| s["run"].as_str())
            .filter(|r| r.contains("tcpproxy-test"))
            .map(str::to_string)
            .collect()
    };
    let (grade_runs, merge_runs) = (runs(grade), runs(merge));
    let shard_arg = grade_runs
        .iter()
        .find_map(|r| r.split("--shard ").nth(1))
        .expect("grade --shard ...");
    let of: i64 = shard_arg
        .trim_start_matches('"')
        .strip_prefix("${{ matrix.shard }}/")
        .expect("--shard ${{ matrix.shard }}/N")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("N");
    assert_eq!(
        of, n,
        "--shard K/N must name as many shards as the matrix has"
    );
    assert!(grade_runs.iter().any(|r| r.contains("--seed ")));
    assert!(merge_runs.iter().any(|r| r.contains(" grade merge ")));

    // Run it: the checkout is a folder with the class in submissions/ and the harness in bin/,
    // where the download step puts it; every shard's job runs there in turn, then the merge.
    let ws = tempfile::tempdir().unwrap();
    let bin = ws.path().join("bin");
    class_and_harness(&ws.path().join("submissions"), &bin);
    // The word after --out-dir in one of `runs`, unquoted.
    let out_dir = |runs: &[String]| -> String {
        runs.iter()
            .find_map(|r| r.split("--out-dir ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("--out-dir DIR")
            .trim_matches('"')
            .to_string()
    };
    let mut dirs = Vec::new();
    for k in &shards {
        let scripts: Vec<String> = grade_runs
            .iter()
            .map(|r| r.replace("${{ matrix.shard }}", &k.to_string()))
            .collect();
        for script in &scripts {
            assert!(!script.contains("${{"), "an expression left: {script}");
            run_script("bash", &format!("set -e\n{script}"), ws.path(), &bin, &[]);
        }
        dirs.push(ws.path().join(out_dir(&scripts)));
    }
    for run in &merge_runs {
        run_script("bash", &format!("set -e\n{run}"), ws.path(), &bin, &[]);
    }
    assert_each_once(&dirs, &ws.path().join(out_dir(&merge_runs)));
}
