//! Impaired links: what `--network` does to the loopback of the run's own network namespace, so
//! the suite also meets a link that loses or queues packets, as real ones do, and a proxy's
//! timings are tried where retransmissions and queues move them. Each profile is set up with
//! the host's own tools (`nft`, `tc`), run inside the namespace before anything else starts;
//! never on the host's network (`crate::sandbox` refuses that before calling here).

use std::io::Write as _;
use std::process::{Command, Stdio};

/// `--network`: what the loopback of the run's namespace does to the traffic on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// Loopback as the kernel gives it: no loss, no queue.
    #[default]
    Ideal,
    /// A share of TCP segments dropped at random (nftables), so TCP retransmits.
    Lossy,
    /// The rate capped by a token bucket (tc tbf), so segments queue and wait.
    Slow,
    /// Every segment held back a fixed time (tc netem), where the kernel has netem.
    Delay,
}

/// The flag, flattened into `crate::sandbox::Flag` (itself in the suite's, `fuzz`'s and
/// `grade`'s arguments): one help text.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
// No argument group: it would be named `Flag`, as `crate::sandbox::Flag`'s, and clap wants them
// unique.
#[group(skip)]
pub struct Flag {
    /// Impair the loopback of the run's network namespace (only there; never the host's):
    /// `lossy` drops 3% of TCP segments at random (needs nft, from nftables), `slow` caps it at
    /// 50 Mbit/s (tc tbf, from iproute2), `delay` holds each segment 25 ms (tc netem, where the
    /// kernel has it). Deadlines stretch for the profile by themselves; the proxy's stall
    /// timeout does not.
    #[arg(long = "network", value_enum, value_name = "PROFILE", default_value_t = Profile::Ideal)]
    pub profile: Profile,
}

impl Flag {
    /// The words that ask for this profile again (none for `ideal`), for replay commands.
    pub fn words(&self) -> Vec<String> {
        match self.profile {
            Profile::Ideal => vec![],
            p => vec!["--network".into(), p.name().into()],
        }
    }
}

/// `lossy`'s share of TCP segments dropped, in percent. 5% (the measure: a 20 MB
/// loopback transfer from 0.03 s to 0.6 s) made the reference fail the suite now and then, as
/// a SYN dropped twice costs 3 s before the connection exists; 3% still makes every transfer
/// retransmit (docs/grading.md, "Sandbox", has the runs).
pub const LOSS_PERCENT: u32 = 3;

/// `slow`'s token bucket. The rate is shared by every phase running at once and by both
/// directions (all loopback traffic leaves through `lo` once), so it sits well above what one
/// phase needs yet is hundreds of times below loopback's own (tens of Gbit/s): the blocked-
/// writer phases fill their buffers in seconds, not in milliseconds. The burst holds two of
/// loopback's largest segments (64 KiB: its MTU, and GSO's), since tbf drops for good a packet
/// larger than its bucket. A segment may wait 100 ms in the queue before it is dropped, which
/// bounds the queue at about 600 KiB at this rate.
pub const SLOW_RATE_MBIT: u32 = 50;
pub const SLOW_BURST_KIB: u32 = 128;
pub const SLOW_LATENCY_MS: u32 = 100;

/// `delay`'s hold on each segment leaving `lo`: a round trip crosses `lo` twice, so 50 ms.
pub const DELAY_MS: u32 = 25;

/// What tc answers when the kernel lacks a queueing discipline (here: no sch_netem).
const UNKNOWN_QDISC: &str = "Specified qdisc kind is unknown";

impl Profile {
    /// As `--network` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Ideal => "ideal",
            Profile::Lossy => "lossy",
            Profile::Slow => "slow",
            Profile::Delay => "delay",
        }
    }

    /// Whether this profile changes the link at all.
    pub fn is_impaired(self) -> bool {
        self != Profile::Ideal
    }

    /// The factor every harness deadline is stretched by under this profile, on top of
    /// `--timeout-scale`. Measured: under `lossy`, a SYN or a FIN lost costs the 1 s initial
    /// retransmission timeout (3 s if lost twice), which the shorter deadlines (a start, an
    /// expected close) do not absorb at 1; under `slow`, the blocked-writer phases take seconds
    /// to fill the buffers they need full. The proxy's own stall timeout is not stretched: it is
    /// the proxy's, and the lazy phases judge against the value the proxy was given.
    pub fn stretch(self) -> f64 {
        match self {
            Profile::Ideal => 1.0,
            Profile::Lossy => 2.0,
            Profile::Slow => 2.0,
            Profile::Delay => 2.0,
        }
    }

    /// What it does, in a few words for the report's header.
    pub fn describe(self) -> String {
        match self {
            Profile::Ideal => "loopback as the kernel gives it".into(),
            Profile::Lossy => {
                format!("{LOSS_PERCENT}% of TCP segments on lo dropped at random (nftables)")
            }
            Profile::Slow => format!(
                "lo capped at {SLOW_RATE_MBIT} Mbit/s, bursts of {SLOW_BURST_KIB} KiB, at most {SLOW_LATENCY_MS} ms queued (tc tbf)"
            ),
            Profile::Delay => format!("each segment on lo held {DELAY_MS} ms (tc netem)"),
        }
    }
}

/// Why a profile cannot be set up, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// The nftables table `lossy` installs; named so a look at `nft list ruleset` says whose it is.
pub const NFT_TABLE: &str = "tcpproxy_test";

/// Sets `profile` up on `lo` of the network namespace this process is in. Call it only inside
/// the run's own namespace, with the privilege to change it (root there, with CAP_NET_ADMIN).
pub fn impair(profile: Profile) -> Result<(), Unavailable> {
    match profile {
        Profile::Ideal => Ok(()),
        Profile::Lossy => {
            let rules = format!(
                "table inet {NFT_TABLE} {{\n\
                 \tchain lossy {{\n\
                 \t\ttype filter hook output priority filter; policy accept;\n\
                 \t\toifname \"lo\" meta l4proto tcp numgen random mod 100 < {LOSS_PERCENT} counter drop\n\
                 \t}}\n\
                 }}\n"
            );
            run("nft", "nftables", &["-f", "-"], Some(&rules))
        }
        Profile::Slow => run(
            "tc",
            "iproute2",
            &[
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "tbf",
                "rate",
                &format!("{SLOW_RATE_MBIT}mbit"),
                "burst",
                &format!("{SLOW_BURST_KIB}kb"),
                "latency",
                &format!("{SLOW_LATENCY_MS}ms"),
            ],
            None,
        ),
        Profile::Delay => run(
            "tc",
            "iproute2",
            &[
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                &format!("{DELAY_MS}ms"),
            ],
            None,
        )
        .map_err(|Unavailable(why)| {
            Unavailable(if why.contains(UNKNOWN_QDISC) {
                format!(
                    "this kernel has no netem (sch_netem), which delay needs: {why}; lossy and slow need none"
                )
            } else {
                why
            })
        }),
    }
}

/// Runs `program args` (fed `input`), Ok when it exits 0; else one line with its own words, or
/// the Debian package that holds it when it is not installed.
fn run(
    program: &str,
    package: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), Unavailable> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Unavailable(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{program} is not installed: install {package} (Debian and Ubuntu: apt-get install {package})"
                )
            } else {
                format!("cannot run {program}: {e}")
            })
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error shows again as the program's own failure, which says more.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Unavailable(format!("cannot wait for {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Unavailable(format!(
        "`{shown}` failed ({}): {said}",
        out.status
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        flag: Flag,
    }

    #[test]
    fn the_flag_takes_each_profile_by_name_and_defaults_to_ideal() {
        let parse = |args: &[&str]| {
            Probe::try_parse_from(std::iter::once("probe").chain(args.iter().copied()))
                .map(|p| p.flag.profile)
        };
        assert_eq!(parse(&[]).unwrap(), Profile::Ideal);
        for p in [
            Profile::Ideal,
            Profile::Lossy,
            Profile::Slow,
            Profile::Delay,
        ] {
            assert_eq!(parse(&["--network", p.name()]).unwrap(), p);
        }
        assert!(parse(&["--network", "fast"]).is_err());
    }

    #[test]
    fn only_an_impaired_profile_stretches_deadlines_or_is_replayed() {
        assert_eq!(Profile::Ideal.stretch(), 1.0);
        assert!(Flag::default().words().is_empty());
        for p in [Profile::Lossy, Profile::Slow, Profile::Delay] {
            assert!(p.is_impaired());
            assert!(p.stretch() > 1.0, "{p:?}");
            assert_eq!(Flag { profile: p }.words(), ["--network", p.name()]);
        }
    }

    #[test]
    fn a_missing_tool_names_the_package_to_install() {
        let Err(Unavailable(line)) = run("no-such-tool-anywhere", "nftables", &[], None) else {
            panic!("a missing program ran")
        };
        assert_eq!(
            line,
            "no-such-tool-anywhere is not installed: install nftables (Debian and Ubuntu: apt-get install nftables)"
        );
    }

    #[test]
    fn a_failing_tool_is_quoted_on_one_line() {
        let Err(Unavailable(line)) = run(
            "sh",
            "dash",
            &["-c", "echo 'Error: one' >&2; echo 'two' >&2; exit 2"],
            None,
        ) else {
            panic!("a failing program succeeded")
        };
        assert_eq!(
            line,
            "`sh -c echo 'Error: one' >&2; echo 'two' >&2; exit 2` failed (exit status: 2): Error: one; two"
        );
    }
}
