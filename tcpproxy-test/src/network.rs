//! Impaired links: what `--network` does to the loopback of the run's own network namespace, so
//! the suite also meets a link that loses or queues packets, as real ones do, and a proxy's
//! timings are tried where retransmissions and queues move them. Each profile is set up with
//! the host's own tools (`nft`, `tc`), run inside the namespace before anything else starts;
//! never on the host's network (`crate::sandbox` refuses that before calling here).

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// `--network`: what the loopback of the run's namespace does to the traffic on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// Loopback as the kernel gives it: no loss, no queue.
    #[default]
    Ideal,
    /// A share of the TCP packets that carry data dropped at random (nftables), so TCP resends
    /// them; bare headers (SYN, ACK, FIN, RST) always arrive (see [`LOSS_PERCENT`]).
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
    /// `lossy` drops 3% of the TCP packets carrying data at random (needs nft, from nftables), `slow` caps it at 200 Mbit/s with an 8 MiB queue (tc tbf, from iproute2),
    /// `delay` holds each segment 25 ms (tc netem, where the kernel has it). Deadlines stretch
    /// for the profile by themselves; the proxy's stall timeout does not.
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

/// `lossy`'s share of the TCP packets carrying data that are dropped, in percent, drawn afresh
/// for each. A packet that is a bare header (SYN, SYN-ACK, ACK, FIN, RST: at most 80 bytes over
/// IPv4, 100 over IPv6, with every TCP option) always arrives: a lost SYN or handshake ACK is
/// resent only after a second and a lost RST never, so the phases that judge connects and resets
/// would judge the link instead. Measured with those dropped too: the many-connections phase took
/// 242 s, the burst phase took resent SYNs for a full accept queue, and in 1 run of 5 a client
/// through the proxy to a refused destination saw its connect reset (a handshake ACK lost: the
/// proxy accepted a second late). Lost data is resent within a few hundred milliseconds, and that
/// is what the profile exercises. 5% (the figure: a 20 MB loopback transfer from 0.03 s
/// to 0.6 s) passes as well, but the suite took 37 s instead of 22 (docs/grading.md, "Sandbox").
/// Loopback hands nftables whole GSO packets (up to 64 KiB), so a drop can take several
/// segments' worth of data at once.
pub const LOSS_PERCENT: u32 = 3;

/// `slow`'s token bucket. The rate is shared by every phase running at once and by both
/// directions (all loopback traffic leaves through `lo` once): the suite pushes about 610 MB
/// through it, so at 200 Mbit/s the link is the bottleneck for most of the run (segments were
/// held back some 700,000 times), while at 50 Mbit/s the two 20-connection chains could not
/// finish within their deadlines. The burst holds several of loopback's largest segments (64 KiB,
/// its MTU), since tbf drops for good a packet larger than its bucket. The queue is long enough
/// (0.34 s at this rate) that nothing is dropped: a RST tail-dropped from a short queue (100 ms at
/// 50 Mbit/s) is never resent, and the client-reset phase then failed for the link.
pub const SLOW_RATE_MBIT: u32 = 200;
pub const SLOW_BURST_KIB: u32 = 256;
pub const SLOW_QUEUE_MIB: u32 = 8;

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
    /// `--timeout-scale`. Under `slow` the two 20-connection chains took 17.6 s of the 30 s
    /// they have on an ideal link (59%, on a quiet host), too little room for a loaded one; under
    /// `lossy` a data segment lost twice in a row costs 0.6 s of resends, against deadlines as
    /// short as 1 s. At 2 the closest wait of either used under a third of its deadline (the
    /// stall-timeout phases aside). The proxy's own stall timeout is not stretched: it is the
    /// proxy's, and the lazy phases judge against the value the proxy was given. `delay` is
    /// unmeasured (this kernel has no netem): 50 ms round trips, as `lossy`'s resends.
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
            Profile::Lossy => format!(
                "{LOSS_PERCENT}% of TCP packets carrying data on lo dropped at random (nftables)"
            ),
            Profile::Slow => format!(
                "lo capped at {SLOW_RATE_MBIT} Mbit/s, bursts of {SLOW_BURST_KIB} KiB, a {SLOW_QUEUE_MIB} MiB queue (tc tbf)"
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
            // `meta length` is the IP packet's: IPv4's header is 20 bytes, IPv6's 40, and TCP's
            // at most 60.
            let rules = format!(
                "table inet {NFT_TABLE} {{\n\
                 \tchain lossy {{\n\
                 \t\ttype filter hook output priority filter; policy accept;\n\
                 \t\toifname \"lo\" meta nfproto ipv4 meta l4proto tcp meta length > 80 numgen random mod 100 < {LOSS_PERCENT} counter drop\n\
                 \t\toifname \"lo\" meta nfproto ipv6 meta l4proto tcp meta length > 100 numgen random mod 100 < {LOSS_PERCENT} counter drop\n\
                 \t}}\n\
                 }}\n"
            );
            run("nft", "nftables", &["-f", "-"], Some(&rules))
        }
        Profile::Slow => root_qdisc(&[
            "tbf",
            "rate",
            &format!("{SLOW_RATE_MBIT}mbit"),
            "burst",
            &format!("{SLOW_BURST_KIB}kb"),
            "limit",
            &format!("{SLOW_QUEUE_MIB}mb"),
        ]),
        Profile::Delay => root_qdisc(&["netem", "delay", &format!("{DELAY_MS}ms")])
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

/// What `profile` did to the run's traffic, read back from the kernel once the work is done, as
/// one line (`1234 TCP packets dropped on lo`): the proof that the link was impaired, not only
/// configured. None for `ideal`.
pub fn observed(profile: Profile) -> Option<String> {
    let (program, args): (&str, &[&str]) = match profile {
        Profile::Ideal => return None,
        Profile::Lossy => ("nft", &["list", "table", "inet", NFT_TABLE]),
        Profile::Slow | Profile::Delay => ("tc", &["-s", "qdisc", "show", "dev", "lo"]),
    };
    let out = crate::harness::run_helper(|| {
        testkit::fork_fence::forking(|| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .and_then(|child| output_within(child, TOOL_WITHIN))
    });
    let out = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            return Some(format!(
                "cannot read what it did: `{program} {}` failed ({})",
                args.join(" "),
                out.status
            ));
        }
        Err(e) => return Some(format!("cannot read what it did: {program}: {e}")),
    };
    Some(match profile {
        Profile::Lossy => match dropped(&out) {
            Some(n) => format!("{n} TCP packets dropped on lo"),
            None => format!("no drop counter in `{program} {}`", args.join(" ")),
        },
        _ => match (
            number_after(&out, "Sent "),
            number_after(&out, "overlimits "),
            number_after(&out, "dropped "),
        ) {
            (Some(bytes), Some(held), Some(dropped)) => format!(
                "{bytes} bytes through lo's queue, held back {held} times, {dropped} segments dropped"
            ),
            _ => format!("no statistics in `{program} {}`", args.join(" ")),
        },
    })
}

/// The packets `lossy`'s rules dropped, summed over their counters (IPv4's, IPv6's) as `nft list`
/// prints them; None without one.
fn dropped(nft: &str) -> Option<u64> {
    let counters: Vec<&str> = nft.split("counter packets ").skip(1).collect();
    if counters.is_empty() {
        return None;
    }
    counters.iter().map(|rest| number_after(rest, "")).sum()
}

/// The number right after the first `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)? + label.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `tc qdisc add dev lo root` with `qdisc` (its kind and parameters): the namespace's loopback
/// is every segment's only link.
fn root_qdisc(qdisc: &[&str]) -> Result<(), Unavailable> {
    let mut args = vec!["qdisc", "add", "dev", "lo", "root"];
    args.extend_from_slice(qdisc);
    run("tc", "iproute2", &args, None)
}

/// How long `nft` or `tc` may take: each applies or lists a handful of rules, and the harness
/// spawns no proxy while one runs ([`crate::harness::run_helper`]).
const TOOL_WITHIN: Duration = Duration::from_secs(10);

/// `child`'s exit status and output, or an error once it has run `limit` (it is then killed and
/// reaped).
fn output_within(child: Child, limit: Duration) -> std::io::Result<Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // Not reaped until the thread's wait returns, so the pid is still this child's.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = finished.recv();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("it ran {:.1} s and was killed", limit.as_secs_f64()),
            ))
        }
    }
}

/// Why `program` could not be started: the package to install when it is missing.
fn cannot_run(program: &str, package: &str, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::NotFound {
        return format!("cannot run {program}: {e}");
    }
    format!(
        "{program} is not installed: install {package} (Debian and Ubuntu: apt-get install {package})"
    )
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
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let out = crate::harness::run_helper(|| {
        let spawned = testkit::fork_fence::forking(|| {
            Command::new(program)
                .args(args)
                .stdin(stdin)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        });
        let mut child = spawned.map_err(|e| Unavailable(cannot_run(program, package, &e)))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // A write error shows again as the program's own failure, which says more.
            let _ = stdin.write_all(text.as_bytes());
        }
        output_within(child, TOOL_WITHIN)
            .map_err(|e| Unavailable(format!("cannot wait for {program}: {e}")))
    })?;
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

    #[test]
    fn a_tool_that_hangs_is_killed_and_reaped_at_its_limit() {
        let child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let e = output_within(child, Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} was left behind"
        );
        let quick = Command::new("echo")
            .arg("ok")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(quick, Duration::from_secs(30)).unwrap();
        assert_eq!(out.stdout, b"ok\n");
    }

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
    fn the_help_gives_each_profile_s_settings_as_the_constants_do() {
        use clap::CommandFactory as _;
        let help = Probe::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            format!("drops {LOSS_PERCENT}% of the TCP packets carrying data"),
            format!("at {SLOW_RATE_MBIT} Mbit/s with an {SLOW_QUEUE_MIB} MiB queue"),
            format!("each segment {DELAY_MS} ms"),
        ] {
            assert!(help.contains(&want), "{want:?} not in {help}");
        }
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
    fn the_counters_are_read_from_nft_s_and_tc_s_own_words() {
        let nft = "table inet tcpproxy_test {\n\tchain lossy {\n\t\toifname \"lo\" meta nfproto ipv4 meta l4proto tcp meta length > 80 numgen random mod 100 < 3 counter packets 5675 bytes 19425063 drop\n\t\toifname \"lo\" meta nfproto ipv6 meta l4proto tcp meta length > 100 numgen random mod 100 < 3 counter packets 1 bytes 136 drop\n\t}\n}\n";
        assert_eq!(dropped(nft), Some(5676));
        assert_eq!(dropped("table inet tcpproxy_test {\n}\n"), None);
        let tc = "qdisc tbf 8001: root refcnt 2 rate 50Mbit burst 128Kb lat 100ms \n Sent 123456 bytes 300 pkt (dropped 0, overlimits 42 requeues 0) \n";
        assert_eq!(number_after(tc, "Sent "), Some(123456));
        assert_eq!(number_after(tc, "overlimits "), Some(42));
        assert_eq!(number_after(tc, "missing "), None);
        assert_eq!(observed(Profile::Ideal), None);
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
