//! A class graded on many machines: `grade --shard K/N` takes the submissions whose name hashes
//! to shard K, so every shard agrees on the split without talking to the others (`grade merge`
//! then joins their tables: `crate::class_table::merge`).

use std::fmt;

use serde::{Deserialize, Serialize};

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
