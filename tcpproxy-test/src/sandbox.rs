//! A network of the run's own: before its runtime starts, the harness moves itself into a new
//! network namespace in which only loopback exists, is up, and leads nowhere else. Every proxy
//! it starts, and the bundled reference (this same executable), inherits it: a submission can
//! reach nothing but the harness's own peers on 127.0.0.1, and no port it or the harness takes
//! can collide with one on the host or in another run of the harness.
//!
//! Inside it, and only there, `--network` may impair that loopback (`crate::network`).
//!
//! It does not contain anything else: the proxy still runs as the harness's user, sees its files
//! and can fork without bound (docs/grading.md, "Sandbox").

use std::fmt;
use std::os::fd::AsFd as _;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{getgid, getuid};

use crate::network::{self, Profile};

/// `--sandbox`: whether the run gets a network of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// A network namespace where the host allows one, else the host's network and a warning.
    #[default]
    Auto,
    /// A network namespace, or exit 3 naming what the host refused.
    On,
    /// The host's network.
    Off,
}

/// The flags, flattened into the suite's, `fuzz`'s and `grade`'s arguments: one help text.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Flag {
    /// Run the harness and every proxy in a network namespace of their own (only loopback, no
    /// route out; ports cannot collide with the host's): `auto` falls back to the host's
    /// network with a warning where the host refuses one, `on` exits 3 instead.
    #[arg(long = "sandbox", value_enum, value_name = "WHEN", default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// `--network`: how that namespace's loopback is impaired.
    #[command(flatten)]
    pub network: network::Flag,
}

impl Flag {
    /// The factor the run's deadlines are stretched by for its network profile.
    pub fn stretch(&self) -> f64 {
        self.network.profile.stretch()
    }
}

/// The network the harness and its proxies run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of the run's own, made with the harness's own privilege (root).
    Namespace,
    /// The same, made inside an unprivileged user namespace that maps the harness's user and
    /// group to themselves, so files and signals work as outside, and proxies hold no capability.
    UserNamespace,
    /// The host's network, and why: `--sandbox off`, or what `auto` was refused.
    Host(String),
}

/// As the reports print it: `network namespace`, or `host network: <why>`.
impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Namespace => f.write_str("network namespace"),
            Network::UserNamespace => f.write_str("network namespace (in a user namespace)"),
            Network::Host(why) => write!(f, "host network: {why}"),
        }
    }
}

/// What [`enter`] settled on: the network the run takes, and what its loopback does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub network: Network,
    /// `ideal` on the host's network, always: impairing is refused there.
    pub profile: Profile,
}

/// As the reports' header prints it: the network, then the profile when it is not `ideal`
/// (`network namespace; network lossy: 3% of TCP segments ...`).
impl fmt::Display for Entered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.network)?;
        if self.profile.is_impaired() {
            write!(
                f,
                "; network {}: {}; deadlines stretched x{}",
                self.profile.name(),
                self.profile.describe(),
                self.profile.stretch()
            )?;
        }
        Ok(())
    }
}

/// What [`enter`] settled on; set once per process.
static ENTERED: OnceLock<Entered> = OnceLock::new();

/// The network this process runs in and its profile, once [`enter`] has set them up (None
/// before, as in a `--build-failed` report, which runs nothing).
pub fn entered() -> Option<&'static Entered> {
    ENTERED.get()
}

/// Why the run cannot have the network it asked for, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `--sandbox on`: what the host refused.
    Sandbox(String),
    /// `--network`: why the profile cannot be set up (no namespace, or its tool failed).
    Network(String),
}

/// Moves this process into a network namespace of its own as `flag.mode` asks, impairs its
/// loopback as `flag.network` asks, and returns what it then runs in. Call it while the process
/// has one thread: a network namespace entered later would hold only the calling thread (the
/// runtime's workers would stay outside), and a user namespace cannot be entered at all by a
/// process with several.
///
/// Err when a namespace was required (`on`), or when one was entered and could not be made
/// usable nor left again (then `auto` cannot fall back either), or when an impaired profile
/// cannot be set up: on the host's network it never is, as that would impair the host's own
/// loopback, shared with everything else on it.
pub fn enter(flag: Flag) -> Result<&'static Entered, Refused> {
    if let Some(done) = ENTERED.get() {
        return Ok(done);
    }
    let network = match flag.mode {
        Mode::Off => Network::Host("--sandbox off".into()),
        Mode::On | Mode::Auto => match private() {
            Ok(n) => n,
            Err(Failure::Refused(why)) if flag.mode == Mode::Auto => Network::Host(why),
            Err(Failure::Refused(why) | Failure::Stuck(why)) => {
                return Err(Refused::Sandbox(why));
            }
        },
    };
    let profile = flag.network.profile;
    if profile.is_impaired() {
        match &network {
            Network::Host(why) => {
                return Err(Refused::Network(format!(
                    "impairs loopback only inside the run's own network namespace, and this run would be on the host's network ({why}); the host's own loopback is never impaired"
                )));
            }
            // The tools run as the harness's user, which a user namespace maps to itself, not
            // to root: execve(2) then leaves them no capability over the namespace.
            Network::UserNamespace => {
                return Err(Refused::Network(format!(
                    "needs {} run with CAP_NET_ADMIN over the run's network namespace, which a user namespace mapping user {} to itself does not give to a program it starts; run as root",
                    if profile == Profile::Lossy {
                        "nft"
                    } else {
                        "tc"
                    },
                    getuid()
                )));
            }
            Network::Namespace => {
                network::impair(profile)
                    .map_err(|network::Unavailable(why)| Refused::Network(why))?;
            }
        }
    }
    Ok(ENTERED.get_or_init(|| Entered { network, profile }))
}

enum Failure {
    /// No namespace was entered; the process is on the host's network as before.
    Refused(String),
    /// A namespace was entered and can be neither used nor left.
    Stuck(String),
}

/// Enters a new network namespace (directly, else through a user namespace) and brings its
/// loopback up.
fn private() -> Result<Network, Failure> {
    // To return to, should the new namespace prove unusable.
    let host = std::fs::File::open("/proc/self/ns/net").ok();
    let network = match unshare(CloneFlags::CLONE_NEWNET) {
        Ok(()) => Network::Namespace,
        Err(direct) => {
            // Read before the unshare: inside, until the maps are written, both are the
            // overflow id (65534).
            let (uid, gid) = (getuid(), getgid());
            match unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET) {
                Ok(()) => {
                    map_to_self(uid.as_raw(), gid.as_raw()).map_err(|e| {
                        Failure::Stuck(format!(
                            "entered a user namespace but could not map user {uid} and group {gid} into it: {e}"
                        ))
                    })?;
                    Network::UserNamespace
                }
                Err(user) => return Err(Failure::Refused(refusal(direct, user))),
            }
        }
    };
    tables::own();
    if let Err(e) = loopback::bring_up() {
        let why = format!("cannot bring up lo in the new network namespace: {e}");
        // Only the direct way can go back: leaving a user namespace is not possible.
        let back = network == Network::Namespace
            && host
                .as_ref()
                .is_some_and(|h| setns(h.as_fd(), CloneFlags::CLONE_NEWNET).is_ok());
        return Err(if back {
            Failure::Refused(why)
        } else {
            Failure::Stuck(why)
        });
    }
    Ok(network)
}

/// The namespace's own table of TCP connections.
///
/// A new network namespace shares the host's connection hash table (262,144 buckets on a
/// machine with 24 GiB), and reading /proc/net/tcp walks every bucket of it, however few of the
/// namespace's own sockets it holds: 13 ms for both tables, against 0.3 ms with a table of its
/// own. The harness reads them while it waits for a proxy to listen, every few milliseconds, and
/// in its leak and queue checks; a suite spent about a second of CPU there, and a proxy that
/// never listens twelve (docs/benchmarks.md, "Test time"). Linux gives a table of its own only to
/// a namespace made from one whose `tcp_child_ehash_entries` is set, which only a namespace's
/// administrator may set: so the run sets it in the namespace just made, which only the run uses,
/// and moves into a child of it. Where the kernel lacks the setting (before 6.1), or refuses any
/// step, the run stays where it is, with the shared table.
mod tables {
    use nix::sched::{CloneFlags, unshare};

    const CHILD: &str = "/proc/sys/net/ipv4/tcp_child_ehash_entries";
    const TIME_WAIT: &str = "/proc/sys/net/ipv4/tcp_max_tw_buckets";
    /// Buckets: a suite holds a few thousand sockets at most, TIME-WAIT included, so chains stay
    /// short, and a walk of the table costs a thirtieth of the host's.
    const BUCKETS: u32 = 8192;

    /// Moves this process into a child namespace with its own table, where the kernel allows.
    pub fn own() {
        // Linux caps a namespace's sockets in TIME-WAIT at half its table's buckets, where the
        // host's cap is larger: the parent's cap is kept, so that connections close as they
        // would on the host's network.
        let time_wait = std::fs::read_to_string(TIME_WAIT).ok();
        if std::fs::write(CHILD, BUCKETS.to_string()).is_err() {
            return;
        }
        if unshare(CloneFlags::CLONE_NEWNET).is_err() {
            return;
        }
        if let Some(cap) = time_wait {
            let _ = std::fs::write(TIME_WAIT, cap.trim());
        }
    }
}

/// One line naming what the host refused: the capability for a network namespace, and why no
/// user namespace could stand in for it.
fn refusal(direct: Errno, user: Errno) -> String {
    let missing = match direct {
        Errno::EPERM => "CAP_SYS_ADMIN is missing".to_string(),
        e => format!("the kernel refused it ({})", e.desc()),
    };
    let instead = match user {
        Errno::EPERM => {
            "user namespaces are not allowed here (kernel.unprivileged_userns_clone=0, or a container's or seccomp policy)"
        }
        Errno::ENOSPC => "the limit of user namespaces is reached (user.max_user_namespaces)",
        Errno::EINVAL => "the process already runs several threads",
        Errno::EUSERS => "user namespaces are nested too deep",
        _ => "the kernel refused one",
    };
    format!(
        "cannot make a network namespace: {missing} (unshare(CLONE_NEWNET): {direct}), and no unprivileged user namespace can stand in: {instead} (unshare(CLONE_NEWUSER): {user})"
    )
}

/// Maps `uid` and `gid` to themselves in the user namespace just entered: the harness keeps
/// its identity, and a proxy it executes (uid unchanged, not 0) keeps no capability.
fn map_to_self(uid: u32, gid: u32) -> std::io::Result<()> {
    // An unprivileged process may map its group only after giving up setgroups(2).
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
}

/// Bringing `lo` up, the one thing here with no safe wrapper: an ioctl on an interface request.
/// (A netlink crate would do it safely, but the small ones pull in an async runtime of their own.)
#[allow(unsafe_code)]
mod loopback {
    use std::os::fd::AsRawFd as _;

    /// Sets IFF_UP on `lo`, keeping its other flags: a new namespace's loopback starts down.
    pub fn bring_up() -> std::io::Result<()> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (to, from) in name.iter_mut().zip(b"lo") {
            *to = *from as libc::c_char;
        }
        let mut request = libc::ifreq {
            ifr_name: name,
            ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
        };
        // SAFETY: SIOCGIFFLAGS writes the flags of the interface named in `request` into its
        // `ifru_flags`; the descriptor is a live socket and `request` outlives the call.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `ifru_flags` is the member set above and just written by the kernel.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the name and flags from `request`, alive for the call.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reports_name_the_network_and_why_it_is_the_host_s() {
        assert_eq!(Network::Namespace.to_string(), "network namespace");
        assert_eq!(
            Network::Host("--sandbox off".into()).to_string(),
            "host network: --sandbox off"
        );
        assert_eq!(
            Network::UserNamespace.to_string(),
            "network namespace (in a user namespace)"
        );
    }

    #[test]
    fn a_refusal_names_the_missing_capability_on_one_line() {
        let line = refusal(Errno::EPERM, Errno::EPERM);
        assert!(line.contains("CAP_SYS_ADMIN is missing"), "{line}");
        assert!(
            line.contains("user namespaces are not allowed here"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        let line = refusal(Errno::EPERM, Errno::ENOSPC);
        assert!(line.contains("user.max_user_namespaces"), "{line}");
    }
}
