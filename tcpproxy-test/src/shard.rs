//! A class graded on many machines: `grade --shard K/N` takes the submissions whose name hashes
//! to shard K, so every shard agrees on the split without talking to the others, and `grade
//! merge` joins the shards' class tables into the one a single `grade` would have written,
//! refusing pieces that were graded differently or do not add up to the class.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::class_table::{self, Class, Row, Unreadable};

/// The most shards a class is split into: beyond any scheduler's array (GitHub Actions allows
/// 256 jobs a run, Slurm's default MaxArraySize is 1001).
const MAX_SHARDS: u32 = 10_000;

/// Shard `index` (from 1) of `count`, as nextest's and Playwright's `K/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `K/N`, 1 <= K <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("'{s}' is not K/N with 1 <= K <= N <= {MAX_SHARDS} (e.g. 2/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let number = |w: &str| {
            w.parse::<u32>()
                .ok()
                .filter(|_| w.chars().all(|c| c.is_ascii_digit()))
        };
        let (index, count) = (number(k).ok_or_else(bad)?, number(n).ok_or_else(bad)?);
        if index == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard grades the submission named `name` (its folder name under
    /// `--out-dir`, the same on every shard given the same SUBMISSION list).
    pub fn takes(&self, name: &str) -> bool {
        fnv1a(name.as_bytes()) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

/// 64-bit FNV-1a: fixed by its definition, so every machine and every build of the harness
/// splits a class alike (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shard a scheduler gave this task, from its environment (`get` reads a variable): a Slurm
/// job array (`SLURM_ARRAY_TASK_ID` from `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`),
/// or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, 0-based; Kubernetes gives no count, so
/// the Job sets `TCPPROXY_TEST_SHARD_COUNT` to its `completions`).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let number = |name: &str| -> Result<Option<u32>, String> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{name}={v:?} is not a count"))
            })
            .transpose()
    };
    let shard = |index: u32, count: u32, from: &str| {
        Shard::parse(&format!("{index}/{count}")).map_err(|e| format!("from {from}: {e}"))
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = number("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let index = id
            .checked_sub(min)
            .ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
        return shard(index + 1, count, "Slurm");
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("TCPPROXY_TEST_SHARD_COUNT")?.ok_or(
            "JOB_COMPLETION_INDEX is set but TCPPROXY_TEST_SHARD_COUNT is not (set it in the Job to its completions)",
        )?;
        return shard(index.saturating_add(1), count, "Kubernetes");
    }
    Err("no shard in the environment: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set".into())
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shards' tables joined: every submission of the class once, in the class's order, each
/// row naming the folder that holds its reports. Err: one line saying what does not add up.
pub fn merge(dirs: &[PathBuf]) -> Result<Class, String> {
    let mut shards: Vec<(&Path, Class)> = Vec::new();
    for dir in dirs {
        let class = class_table::read(dir).map_err(|e| match e {
            Unreadable::Missing(line) | Unreadable::Bad(line) => line,
        })?;
        shards.push((dir, class));
    }
    let (first_dir, first) = &shards[0];
    let class = first
        .class_submissions
        .clone()
        .ok_or_else(|| format!("{} was not graded with --shard", first_dir.display()))?;
    let count = first.shard.map_or(0, |s| s.count);
    let mut seen: HashMap<u32, &Path> = HashMap::new();
    let mut rows: HashMap<String, Row> = HashMap::new();
    for (dir, c) in &shards {
        let shard = c
            .shard
            .ok_or_else(|| format!("{} was not graded with --shard", dir.display()))?;
        agree(first_dir, first, dir, c)?;
        if let Some(other) = seen.insert(shard.index, dir) {
            return Err(format!(
                "{} and {} are both shard {shard}",
                other.display(),
                dir.display()
            ));
        }
        if !c.complete {
            return Err(format!(
                "shard {shard} in {} is incomplete (interrupted?): finish it with the same command and --resume",
                dir.display()
            ));
        }
        for row in &c.submissions {
            let mut row = row.clone();
            row.reports = Some(dir.join(&row.name).display().to_string());
            if let Some(twice) = rows.insert(row.name.clone(), row) {
                return Err(format!(
                    "{} has a row in two shards ({} is one)",
                    twice.name,
                    dir.display()
                ));
            }
        }
    }
    if let Some(missing) = (1..=count).find(|k| !seen.contains_key(k)) {
        return Err(format!("shard {missing}/{count} is missing"));
    }
    let expected: BTreeSet<&String> = class.iter().collect();
    if let Some(stray) = rows.keys().find(|n| !expected.contains(n)) {
        return Err(format!("{stray} has a row but is not in the class"));
    }
    let mut merged = Vec::with_capacity(class.len());
    for name in &class {
        let row = rows
            .remove(name)
            .ok_or_else(|| format!("{name} has no row in any shard"))?;
        merged.push(row);
    }
    let mut hosts: Vec<String> = shards.iter().map(|(_, c)| c.host.clone()).collect();
    hosts.dedup();
    Ok(Class {
        shard: None,
        class_submissions: None,
        complete: true,
        host: hosts.join(","),
        load_average: None,
        submissions: merged,
        ..shards[0].1.clone()
    })
}

/// Shards graded alike can be joined: the same harness, seed, settings, phases and class.
fn agree(a_dir: &Path, a: &Class, b_dir: &Path, b: &Class) -> Result<(), String> {
    let differs = |what: &str, x: String, y: String| {
        Err(format!(
            "{} and {} differ in {what} ({x} and {y}): their verdicts cannot share a table",
            a_dir.display(),
            b_dir.display()
        ))
    };
    if a.harness_version != b.harness_version {
        return differs(
            "the harness version",
            a.harness_version.clone(),
            b.harness_version.clone(),
        );
    }
    if a.seed_text != b.seed_text {
        return differs("seed", a.seed_text.clone(), b.seed_text.clone());
    }
    if a.stall_timeout_secs != b.stall_timeout_secs {
        let s = |c: &Class| c.stall_timeout_secs.to_string();
        return differs("stall timeout", s(a), s(b));
    }
    if a.timeout_scale != b.timeout_scale {
        let s = |c: &Class| format!("{:?}", c.timeout_scale);
        return differs("timeout scale", s(a), s(b));
    }
    if a.strict != b.strict {
        let s = |c: &Class| format!("{:?}", c.strict);
        return differs("--strict", s(a), s(b));
    }
    if a.phases != b.phases {
        return differs("phases", a.phases.join(" "), b.phases.join(" "));
    }
    if a.self_check != b.self_check {
        let s = |c: &Class| c.self_check.clone().unwrap_or_else(|| "off".into());
        return differs("self-check", s(a), s(b));
    }
    let count = |c: &Class| c.shard.map_or(0, |s| s.count);
    if count(a) != count(b) {
        return differs("shard count", count(a).to_string(), count(b).to_string());
    }
    if a.class_submissions != b.class_submissions {
        return differs("the submissions given", "one list".into(), "another".into());
    }
    Ok(())
}

/// This host's name, for the table: which machine graded a shard.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The one-minute load average: how busy the grading host was when a shard finished.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_of_n_is_parsed_strictly() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard::parse("1/1"), Ok(Shard { index: 1, count: 1 }));
        for bad in [
            "0/4", "5/4", "a/b", "1/0", "1/", "/2", "", "2", "+1/2", "1/2/3", "1/99999",
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_fnv1a_as_published() {
        // The reference values of the FNV-1a 64-bit test suite.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn schedulers_name_the_shard_in_their_own_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // `sbatch --array=0-3` and `--array=1-4` are the same four shards.
        let slurm0 = env(&[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(from_env(slurm0), Ok(Shard { index: 1, count: 4 }));
        let slurm1 = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(from_env(slurm1), Ok(Shard { index: 4, count: 4 }));
        let k8s = env(&[
            ("JOB_COMPLETION_INDEX", "2"),
            ("TCPPROXY_TEST_SHARD_COUNT", "3"),
        ]);
        assert_eq!(from_env(k8s), Ok(Shard { index: 3, count: 3 }));
        for bad in [
            env(&[]),
            env(&[("JOB_COMPLETION_INDEX", "2")]),
            env(&[
                ("JOB_COMPLETION_INDEX", "3"),
                ("TCPPROXY_TEST_SHARD_COUNT", "3"),
            ]),
            env(&[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ]),
            env(&[("SLURM_ARRAY_TASK_ID", "1")]),
        ] {
            assert!(from_env(bad).is_err());
        }
    }

    #[test]
    fn every_name_falls_in_exactly_one_shard() {
        let names: Vec<String> = (0..200).map(|i| format!("student{i}")).collect();
        for count in 1..=7 {
            let mut sizes = vec![0; count as usize];
            for name in &names {
                let takers: Vec<u32> = (1..=count)
                    .filter(|&index| Shard { index, count }.takes(name))
                    .collect();
                assert_eq!(takers.len(), 1, "{name} in shards {takers:?} of {count}");
                sizes[takers[0] as usize - 1] += 1;
            }
            // A hash spreads them: no shard is empty at 200 names.
            assert!(sizes.iter().all(|&n| n > 0), "{count}: {sizes:?}");
        }
    }
}
