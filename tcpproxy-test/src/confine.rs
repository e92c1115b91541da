//! Confinement of the proxy under test: what it runs as and what it may use. When the harness
//! runs as root, each proxy runs as an unprivileged user (`--run-as`, `nobody` by default); every
//! proxy starts in a fresh temporary directory of its own with a cleaned environment, and within
//! limits on its tasks, memory, file size and CPU time, with core dumps off. A limit the host
//! cannot apply is said so in the run's header and reports, never silently skipped.
//!
//! It does not contain the network (that is `crate::sandbox`), the files the user may read
//! anyway, nor the disk the temporary directory sits on beyond one file's size
//! (docs/grading.md, "Unprivileged user and limits").

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::Resource;
use nix::unistd::{Gid, Uid, User};
use tcpproxy::flag_value;

/// The user proxies run as when the harness is root.
pub const RUN_AS: &str = "nobody";
/// Tasks (processes and threads) one proxy may have: room for a thread or a process per
/// connection in the many-connections phase (1,500 at once), not for a fork bomb.
pub const TASKS: u64 = 4096;
/// Memory one proxy may use, in MiB: far above any phase's need (a proxy that buffers without
/// bound is caught at 64 MiB of growth), and what a JVM sizes its heap from.
pub const MEMORY_MIB: u64 = 1024;
/// The largest file one proxy may write, in MiB: a log, not a disk.
pub const FILE_SIZE_MIB: u64 = 64;
/// CPU seconds one proxy may use: a phase lasts at most a minute or two, so this is a whole
/// suite's worth, even for one that spins.
pub const CPU_SECS: u64 = 900;
/// Seconds past the soft CPU limit (SIGXCPU) before the hard one (SIGKILL).
const CPU_GRACE_SECS: u64 = 5;
const MIB: u64 = 1024 * 1024;

/// The flags, flattened into the suite's, `fuzz`'s and `grade`'s arguments: one help text.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "confine")]
pub struct Flag {
    /// When the harness runs as root, run each proxy as USER (in a fresh temporary directory,
    /// with a cleaned environment); `--run-as root` keeps root. Ignored when the harness is not
    /// root: proxies then run as the harness's user.
    #[arg(long = "run-as", value_name = "USER", default_value = RUN_AS)]
    pub run_as: String,

    /// Tasks (processes and threads) each proxy may have: a pids cgroup where the host has one,
    /// else RLIMIT_NPROC for the unprivileged user (shared by every proxy of the run).
    #[arg(long = "limit-tasks", allow_negative_numbers = true, value_name = "N", default_value_t = TASKS, value_parser = |s: &str| flag_value::whole(s, "a number of tasks", 1..=1u64 << 22))]
    pub tasks: u64,

    /// Memory each proxy may use, in MiB (a memory cgroup; never RLIMIT_AS, which breaks
    /// runtimes that reserve address space, Go's and the JVM's among them).
    #[arg(long = "limit-memory", allow_negative_numbers = true, value_name = "MIB", default_value_t = MEMORY_MIB, value_parser = |s: &str| flag_value::whole(s, "a number of MiB", 16..=1u64 << 30))]
    pub memory_mib: u64,

    /// The largest file each proxy may write, in MiB (RLIMIT_FSIZE).
    #[arg(long = "limit-file-size", allow_negative_numbers = true, value_name = "MIB", default_value_t = FILE_SIZE_MIB, value_parser = |s: &str| flag_value::whole(s, "a number of MiB", 1..=1u64 << 30))]
    pub file_size_mib: u64,

    /// CPU seconds each proxy may use (RLIMIT_CPU).
    #[arg(long = "limit-cpu", allow_negative_numbers = true, value_name = "SECS", default_value_t = CPU_SECS, value_parser = |s: &str| flag_value::whole(s, "a number of seconds", 1..=flag_value::DAY_SECS as u64))]
    pub cpu_secs: u64,
}

impl Default for Flag {
    fn default() -> Flag {
        Flag {
            run_as: RUN_AS.into(),
            tasks: TASKS,
            memory_mib: MEMORY_MIB,
            file_size_mib: FILE_SIZE_MIB,
            cpu_secs: CPU_SECS,
        }
    }
}

/// The validated flags: the user looked up once, at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The user and group proxies run as when the harness is root; None: root itself.
    pub user: Option<Account>,
    pub tasks: u64,
    pub memory_mib: u64,
    pub file_size_mib: u64,
    pub cpu_secs: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Flag::default().policy().unwrap_or(Policy {
            user: None,
            tasks: TASKS,
            memory_mib: MEMORY_MIB,
            file_size_mib: FILE_SIZE_MIB,
            cpu_secs: CPU_SECS,
        })
    }
}

/// An unprivileged account to run proxies as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Flag {
    /// The policy these flags ask for, or the one-line error for a `--run-as` user this host
    /// does not know. USER is a name or a uid; it is looked up only when the harness is root,
    /// the one case it is used.
    pub fn policy(&self) -> Result<Policy, String> {
        let user = if Uid::effective().is_root() {
            account(&self.run_as)?
        } else {
            None
        };
        Ok(Policy {
            user,
            tasks: self.tasks,
            memory_mib: self.memory_mib,
            file_size_mib: self.file_size_mib,
            cpu_secs: self.cpu_secs,
        })
    }
}

/// The account `run_as` names (None: root), a name from the user database or a bare uid (its
/// group the same number where the database has no entry, as in a minimal container).
fn account(run_as: &str) -> Result<Option<Account>, String> {
    let found = match run_as.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map(|u| {
            u.or(Some(User {
                name: run_as.to_string(),
                uid: Uid::from_raw(uid),
                gid: Gid::from_raw(uid),
                ..User::from_uid(Uid::from_raw(0)).ok().flatten()?
            }))
        }),
        Err(_) => User::from_name(run_as),
    };
    match found {
        Ok(Some(u)) if u.uid.is_root() => Ok(None),
        Ok(Some(u)) => Ok(Some(Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        Ok(None) => Err(format!(
            "--run-as {run_as}: no such user on this host (a uid will do; --run-as root keeps the harness's user)"
        )),
        Err(e) => Err(format!("--run-as {run_as}: cannot look it up: {e}")),
    }
}

/// How one limit is applied, or why it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// By a cgroup of each proxy's own, in this directory (created and removed per proxy).
    Cgroup(PathBuf),
    /// By a resource limit set in the proxy before it runs (`RLIMIT_NPROC`, ...).
    Rlimit(&'static str),
    /// Not applied, and why.
    Not(String),
}

/// What every proxy of this run runs as and within: the policy as the host could apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Who proxies run as: None, the harness's own user (not root, or `--run-as root`).
    pub user: Option<Account>,
    /// Whether the harness is root (else proxies run as its user whatever `--run-as` says).
    pub root: bool,
    pub tasks: (u64, Applied),
    pub memory_mib: (u64, Applied),
    pub file_size_mib: u64,
    pub cpu_secs: u64,
}

/// As the run's header prints it: `user nobody (65534), a fresh temporary directory, a cleaned
/// environment; limits: tasks 4096 (pids cgroup), ...`.
impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.user, self.root) {
            (Some(a), _) => write!(f, "user {} ({})", a.name, a.uid)?,
            (None, true) => f.write_str("user root (--run-as root)")?,
            (None, false) => write!(f, "the harness's user ({}, not root)", Uid::current())?,
        }
        f.write_str(", a fresh temporary directory, a cleaned environment; limits: ")?;
        let how = |a: &Applied| match a {
            Applied::Cgroup(_) => None,
            Applied::Rlimit(name) => Some(format!(" ({name})")),
            Applied::Not(why) => Some(format!(" NOT APPLIED: {why}")),
        };
        let (n, a) = &self.tasks;
        let cgroup = |a: &Applied, name: &str| match a {
            Applied::Cgroup(_) => format!(" ({name} cgroup)"),
            other => how(other).unwrap_or_default(),
        };
        write!(f, "tasks {n}{}", cgroup(a, "pids"))?;
        let (m, a) = &self.memory_mib;
        write!(f, ", memory {m} MiB{}", cgroup(a, "memory"))?;
        write!(
            f,
            ", file size {} MiB, CPU {} s, core dumps off",
            self.file_size_mib, self.cpu_secs
        )
    }
}

impl Confinement {
    /// Whether every limit holds as asked.
    pub fn fully_applied(&self) -> bool {
        !matches!(self.tasks.1, Applied::Not(_)) && !matches!(self.memory_mib.1, Applied::Not(_))
    }
}

static INSTALLED: OnceLock<Confinement> = OnceLock::new();

/// Settles how this run confines its proxies, once per process; later calls return the first.
pub fn install(policy: &Policy) -> &'static Confinement {
    INSTALLED.get_or_init(|| settle(policy))
}

/// Installs `policy`; where the host could not apply a limit, says so once on stderr, as `name`,
/// with the whole confinement (as the sandbox's fallback is told). The reports always name it.
pub fn announce(
    name: &str,
    policy: &Policy,
    console: &crate::console::Console,
) -> &'static Confinement {
    let c = install(policy);
    if c.fully_applied() {
        return c;
    }
    console.err_line(format_args!("{name}: warning: confinement: {c}"));
    c
}

/// The run's confinement once [`install`]ed (None before, as in a `--build-failed` report,
/// which runs nothing).
pub fn installed() -> Option<&'static Confinement> {
    INSTALLED.get()
}

fn settle(policy: &Policy) -> Confinement {
    sweep_directories();
    let root = Uid::effective().is_root();
    let user = policy.user.clone().filter(|_| root);
    let tasks = match cgroup::Controller::PIDS.usable() {
        Ok(dir) => Applied::Cgroup(dir),
        Err(why) => match &user {
            // Counted per user: every proxy of the run (and anything else of that user) shares it.
            Some(_) => Applied::Rlimit("RLIMIT_NPROC, for all proxies of the run together"),
            None => Applied::Not(format!(
                "{why}, and RLIMIT_NPROC would count every process of the harness's own user"
            )),
        },
    };
    let memory = match cgroup::Controller::MEMORY.usable() {
        Ok(dir) => Applied::Cgroup(dir),
        Err(why) => Applied::Not(why),
    };
    for applied in [&tasks, &memory] {
        if let Applied::Cgroup(parent) = applied {
            cgroup::sweep(parent);
        }
    }
    Confinement {
        user,
        root,
        tasks: (policy.tasks, tasks),
        memory_mib: (policy.memory_mib, memory),
        file_size_mib: policy.file_size_mib,
        cpu_secs: policy.cpu_secs,
    }
}

/// Each proxy's directory is `$TMPDIR/tcpproxy-test-proxy.<run tag>.<random>`.
const DIR_PREFIX: &str = "tcpproxy-test-proxy.";

/// `<pid namespace>.<pid>` of this harness, in the names of what it makes for its proxies: the
/// namespace, so a harness never takes a pid of another container's for one of its own.
fn run_tag() -> String {
    format!("{}.{}", pid_namespace().unwrap_or(0), std::process::id())
}

fn pid_namespace() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Whether the harness whose run tag a leftover's name holds has ended: it was of this pid
/// namespace, and its pid is no process's now, so no live run can own the leftover.
fn owner_gone(name: &str, prefix: &str) -> bool {
    let mut parts = name.strip_prefix(prefix).unwrap_or_default().split('.');
    let (Some(ns), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let ours = ns.parse::<u64>().ok() == pid_namespace();
    ours && pid
        .parse::<u32>()
        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the directories of proxies whose harness ended without removing them (killed, or
/// interrupted while its proxies' tasks were abandoned).
fn sweep_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if owner_gone(&name.to_string_lossy(), DIR_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One resource limit for the child to set before it execs: (resource, soft, hard).
pub type Rlimit = (Resource, u64, u64);

/// What the harness sets in the proxy's child between fork and exec (`harness::limit_in_child`).
#[derive(Debug, Default)]
pub struct InChild {
    pub rlimits: Vec<Rlimit>,
    /// `cgroup.procs` of each cgroup the child joins by writing "0" (itself) there; opened by the
    /// harness, so the write is allowed after the child gave up root.
    pub join: Vec<RawFd>,
}

/// One proxy's confinement while it runs: its directory and cgroups, removed on drop after
/// whatever is left in them is killed (a cgroup holds what left the proxy's group and session).
#[derive(Debug)]
pub struct Jail {
    dir: Option<tempfile::TempDir>,
    cgroups: Vec<PathBuf>,
    /// Open until the child has joined: its `cgroup.procs` descriptors.
    procs: Vec<File>,
}

/// Numbers each proxy's cgroups within the run.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl Jail {
    /// Readies `command` (whose program and arguments are `program` and `args`) to run
    /// confined as `c` says: user, directory, environment; the limits are returned for the one
    /// `pre_exec` hook the harness installs. Err: one line for a proxy the confined user cannot
    /// run, or a directory or cgroup the harness could not make.
    pub fn prepare(
        c: &Confinement,
        command: &mut tokio::process::Command,
        program: &Path,
        args: &[OsString],
    ) -> Result<(Jail, InChild), String> {
        if let Some(a) = &c.user {
            check_reachable(program, args, a)?;
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}.", run_tag()))
            .tempdir()
            .map_err(|e| format!("cannot make the proxy's working directory: {e}"))?;
        if let Some(a) = &c.user {
            nix::unistd::chown(
                dir.path(),
                Some(Uid::from_raw(a.uid)),
                Some(Gid::from_raw(a.gid)),
            )
            .map_err(|e| {
                format!(
                    "cannot give the proxy's working directory {} to user {}: {e}",
                    dir.path().display(),
                    a.name
                )
            })?;
            command.uid(a.uid).gid(a.gid);
        }
        command.current_dir(dir.path()).env_clear();
        for (key, value) in environment(dir.path(), c.user.as_ref()) {
            command.env(key, value);
        }
        let mut jail = Jail {
            dir: Some(dir),
            cgroups: vec![],
            procs: vec![],
        };
        let mut child = InChild {
            rlimits: vec![
                (Resource::RLIMIT_CORE, 0, 0),
                (
                    Resource::RLIMIT_FSIZE,
                    c.file_size_mib * MIB,
                    c.file_size_mib * MIB,
                ),
                (
                    Resource::RLIMIT_CPU,
                    c.cpu_secs,
                    c.cpu_secs + CPU_GRACE_SECS,
                ),
            ],
            join: vec![],
        };
        if let (n, Applied::Rlimit(_)) = c.tasks {
            child.rlimits.push((Resource::RLIMIT_NPROC, n, n));
        }
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{}.{seq}", cgroup::PREFIX, run_tag());
        for (parent, limit) in [
            (&c.tasks.1, cgroup::Limit::Tasks(c.tasks.0)),
            (&c.memory_mib.1, cgroup::Limit::Bytes(c.memory_mib.0 * MIB)),
        ] {
            if let Applied::Cgroup(parent) = parent {
                let dir = parent.join(&name);
                let procs = cgroup::make(&dir, limit)?;
                jail.cgroups.push(dir);
                child.join.push(procs.as_raw_fd());
                jail.procs.push(procs);
            }
        }
        Ok((jail, child))
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.procs.clear();
        for dir in &self.cgroups {
            cgroup::empty_and_remove(dir);
        }
        // After the cgroups: nothing of the proxy's may still write into its directory.
        self.dir.take();
    }
}

/// Kept from the harness's environment as it is: a marker a grader (and the harness's own tests)
/// puts on a run to find whatever it left running, by /proc/PID/environ.
const MARKER: &str = "TCPPROXY_TEST_MARKER";

/// The proxy's whole environment: PATH (the harness's, so interpreters are found as in the
/// grader's shell), HOME and TMPDIR its own directory, the C locale, who it is, and [`MARKER`].
fn environment(dir: &Path, user: Option<&Account>) -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        (
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME", dir.as_os_str().to_owned()),
        ("TMPDIR", dir.as_os_str().to_owned()),
        ("LANG", "C".into()),
    ];
    let name = match user {
        Some(a) => Some(OsString::from(&a.name)),
        None => std::env::var_os("USER"),
    };
    if let Some(name) = name {
        env.push(("USER", name.clone()));
        env.push(("LOGNAME", name));
    }
    if let Some(marker) = std::env::var_os(MARKER) {
        env.push((MARKER, marker));
    }
    env
}

/// What a proxy needs of a path: to execute it, or to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Run,
    Read,
}

/// Err, one line, when `account` cannot run `program` or read an argument that names an
/// existing file (a script the program interprets): the directories the harness's user made
/// for it are often its alone (a temporary directory is 0700).
fn check_reachable(program: &Path, args: &[OsString], account: &Account) -> Result<(), String> {
    let mut wants = vec![(program.to_path_buf(), Need::Run)];
    wants.extend(
        args.iter()
            .map(Path::new)
            .filter(|p| p.is_file())
            .map(|p| (p.to_path_buf(), Need::Read)),
    );
    for (path, need) in wants {
        let Ok(full) = std::path::absolute(&path) else {
            continue;
        };
        if let Err(blocked) = reachable(&full, need, account) {
            let what = match need {
                Need::Run => "run the proxy",
                Need::Read => "read the proxy's argument",
            };
            return Err(format!(
                "the proxy runs as user {} ({}, --run-as), which cannot {what} {}: {blocked}; let other users reach it (chmod o+x on each directory, o+rx on the file) or keep the harness's user with --run-as root",
                account.name,
                account.uid,
                full.display()
            ));
        }
    }
    Ok(())
}

/// Whether `account` (its own group only: the child drops the others) may reach `path` by its
/// mode bits: search on every directory above it, then `need` on it. Err names the first
/// obstacle.
fn reachable(path: &Path, need: Need, account: &Account) -> Result<(), String> {
    let may = |meta: &std::fs::Metadata, bits: u32| {
        let mode = meta.permissions().mode();
        let shift = if meta.uid() == account.uid {
            6
        } else if meta.gid() == account.gid {
            3
        } else {
            0
        };
        (mode >> shift) & bits == bits
    };
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if !may(&meta, 0o1) {
            return Err(format!(
                "the directory {} is not searchable by it (mode {:04o}, owner {})",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                meta.uid()
            ));
        }
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    // An interpreted program is read by its interpreter as well as executed.
    let bits = match need {
        Need::Run if is_script(path) => 0o5,
        Need::Run => 0o1,
        Need::Read => 0o4,
    };
    if !may(&meta, bits) {
        return Err(format!(
            "the file's mode {:04o} (owner {}) does not let it",
            meta.permissions().mode() & 0o7777,
            meta.uid()
        ));
    }
    Ok(())
}

fn is_script(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// Relative paths in `word` as the proxy must see them from its own directory: absolute, when
/// `word` names an existing file or directory from the harness's (`./proxy`, `proxy.py`).
pub fn anchored(word: &OsStr) -> OsString {
    let path = Path::new(word);
    if path.is_relative() && path.exists() {
        if let Ok(full) = std::path::absolute(path) {
            return full.into_os_string();
        }
    }
    word.to_owned()
}

/// The cgroups a proxy is put in: found from this process's own (v1 hierarchies first, where a
/// controller is mounted on its own; else the unified v2 one), one child per proxy.
mod cgroup {
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// A controller, by its name and the file that limits it.
    pub struct Controller {
        name: &'static str,
        v1_limit: &'static str,
        v2_limit: &'static str,
    }

    impl Controller {
        pub const PIDS: Controller = Controller {
            name: "pids",
            v1_limit: "pids.max",
            v2_limit: "pids.max",
        };
        pub const MEMORY: Controller = Controller {
            name: "memory",
            v1_limit: "memory.limit_in_bytes",
            v2_limit: "memory.max",
        };

        /// The directory of this process's own cgroup under this controller, once a child made
        /// there proved to take the limit; Err says why there is none.
        pub fn usable(&self) -> Result<PathBuf, String> {
            let own = self.own_dir()?;
            let probe = own.join(format!("{PREFIX}{}.probe", super::run_tag()));
            let made = std::fs::create_dir(&probe).map_err(|e| {
                format!(
                    "cannot make a {} cgroup in {}: {e}",
                    self.name,
                    own.display()
                )
            });
            let limit_file = probe.join(self.limit_file(&own));
            let result = made.and_then(|()| {
                if limit_file.exists() {
                    Ok(own.clone())
                } else {
                    Err(format!(
                        "the {} controller is not enabled for {}'s children",
                        self.name,
                        own.display()
                    ))
                }
            });
            let _ = std::fs::remove_dir(&probe);
            result
        }

        fn limit_file(&self, dir: &Path) -> &'static str {
            if dir.join("cgroup.controllers").exists() {
                self.v2_limit
            } else {
                self.v1_limit
            }
        }

        /// This process's cgroup directory for the controller: its own v1 hierarchy if mounted,
        /// else the v2 one if that offers the controller.
        fn own_dir(&self) -> Result<PathBuf, String> {
            let membership = std::fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
            let mounts = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
            let mut v2 = None;
            for line in membership.lines() {
                let mut parts = line.splitn(3, ':');
                let (Some(_), Some(controllers), Some(path)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if controllers.is_empty() {
                    v2 = Some(path);
                } else if controllers.split(',').any(|c| c == self.name) {
                    if let Some(dir) = mounted(&mounts, Some(self.name), path) {
                        return Ok(dir);
                    }
                }
            }
            let path =
                v2.ok_or_else(|| format!("no {} cgroup hierarchy on this host", self.name))?;
            let dir = mounted(&mounts, None, path)
                .ok_or_else(|| format!("no {} cgroup hierarchy is mounted", self.name))?;
            let offered =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if !offered.split_whitespace().any(|c| c == self.name) {
                return Err(format!(
                    "no {} cgroup: neither a v1 hierarchy nor {} offers the controller",
                    self.name,
                    dir.display()
                ));
            }
            // Children get the controller only if it is enabled below us; that fails where this
            // cgroup holds processes (v2's no-internal-processes rule) unless it is the root.
            let _ = std::fs::write(
                dir.join("cgroup.subtree_control"),
                format!("+{}", self.name),
            );
            Ok(dir)
        }
    }

    /// Where the hierarchy holding `path` is mounted (v1 with `controller` among its options,
    /// or cgroup2 when None), joined with `path` below the mount's root.
    fn mounted(mountinfo: &str, controller: Option<&str>, path: &str) -> Option<PathBuf> {
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let theirs: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(kind), Some(options)) =
                (fields.get(3), fields.get(4), theirs.first(), theirs.get(2))
            else {
                continue;
            };
            let fits = match controller {
                Some(c) => *kind == "cgroup" && options.split(',').any(|o| o == c),
                None => *kind == "cgroup2",
            };
            if !fits {
                continue;
            }
            let below = match path.strip_prefix(root) {
                Some(rest) => rest,
                None if *root == "/" => path,
                None => continue,
            };
            return Some(Path::new(point).join(below.trim_start_matches('/')));
        }
        None
    }

    /// Each proxy's cgroup is `tcpproxy-test.<run tag>.<n>`, beside the harness's own.
    pub const PREFIX: &str = "tcpproxy-test.";

    /// Kills what is left in, and removes, the cgroups under `parent` of harnesses that ended
    /// without removing them.
    pub fn sweep(parent: &Path) {
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir()
                && super::owner_gone(&entry.file_name().to_string_lossy(), PREFIX)
            {
                empty_and_remove(&entry.path());
            }
        }
    }

    pub enum Limit {
        Tasks(u64),
        Bytes(u64),
    }

    /// Makes the cgroup `dir` with `limit` and opens its `cgroup.procs` for the child to join.
    pub fn make(dir: &Path, limit: Limit) -> Result<File, String> {
        let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", dir.display());
        std::fs::create_dir(dir).map_err(|e| fail("make the cgroup", e))?;
        let v2 = dir.join("cgroup.controllers").exists();
        let (file, value) = match limit {
            Limit::Tasks(n) => ("pids.max", n),
            Limit::Bytes(n) if v2 => ("memory.max", n),
            Limit::Bytes(n) => ("memory.limit_in_bytes", n),
        };
        let set = std::fs::write(dir.join(file), value.to_string());
        let procs = set.and_then(|()| File::options().write(true).open(dir.join("cgroup.procs")));
        procs.map_err(|e| {
            let _ = std::fs::remove_dir(dir);
            fail("set up the cgroup", e)
        })
    }

    /// How long a cgroup's last processes may take to die once killed.
    const EMPTY_WITHIN: Duration = Duration::from_secs(2);
    const LOOK_EVERY: Duration = Duration::from_millis(10);

    /// Kills whatever is left in `dir` (what escaped the proxy's group stays in its cgroup) and
    /// removes it once empty, within a bound.
    pub fn empty_and_remove(dir: &Path) {
        let end = Instant::now() + EMPTY_WITHIN;
        loop {
            let pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() >= end {
                return;
            }
            // Waiting for the kernel to finish the processes just killed: an event with no
            // notification to await.
            std::thread::sleep(LOOK_EVERY);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const V1: &str = "30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids\n\
            31 25 0:27 /process_api /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            40 25 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";

        #[test]
        fn a_hierarchy_is_found_by_its_controller_below_its_mount_root() {
            assert_eq!(
                mounted(V1, Some("pids"), "/a/b"),
                Some(PathBuf::from("/sys/fs/cgroup/pids/a/b"))
            );
            assert_eq!(
                mounted(V1, Some("memory"), "/process_api/x"),
                Some(PathBuf::from("/sys/fs/cgroup/memory/x"))
            );
            assert_eq!(
                mounted(V1, None, "/"),
                Some(PathBuf::from("/sys/fs/cgroup/unified"))
            );
            assert_eq!(mounted(V1, Some("cpu"), "/"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Account {
        Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        }
    }

    #[test]
    fn a_private_directory_on_the_way_is_named_with_the_flag_that_avoids_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("proxy");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let line = check_reachable(&program, &[], &nobody()).unwrap_err();
        assert!(
            line.contains(&format!(
                "the directory {} is not searchable",
                dir.path().display()
            )) && line.contains("--run-as root")
                && !line.contains('\n'),
            "{line}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(check_reachable(&program, &[], &nobody()), Ok(()));
        // A script the program reads must be readable too.
        let script = dir.path().join("proxy.py");
        std::fs::write(&script, "print()\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).unwrap();
        let line =
            check_reachable(&program, &[script.clone().into_os_string()], &nobody()).unwrap_err();
        assert!(line.contains("read the proxy's argument"), "{line}");
    }

    #[test]
    fn the_header_names_each_limit_and_how_it_holds() {
        let c = Confinement {
            user: Some(nobody()),
            root: true,
            tasks: (4096, Applied::Cgroup("/sys/fs/cgroup/pids".into())),
            memory_mib: (1024, Applied::Not("no memory cgroup on this host".into())),
            file_size_mib: 64,
            cpu_secs: 900,
        };
        assert_eq!(
            c.to_string(),
            "user nobody (65534), a fresh temporary directory, a cleaned environment; limits: tasks 4096 (pids cgroup), memory 1024 MiB NOT APPLIED: no memory cgroup on this host, file size 64 MiB, CPU 900 s, core dumps off"
        );
        assert!(!c.fully_applied());
        let held = Confinement {
            memory_mib: (1024, Applied::Cgroup("/sys/fs/cgroup/memory".into())),
            ..c
        };
        assert!(held.fully_applied());
    }

    #[test]
    fn a_leftover_is_swept_only_once_its_harness_is_gone() {
        let ns = pid_namespace().unwrap_or(0);
        assert!(!owner_gone(
            &format!("{DIR_PREFIX}{}.AbC123", run_tag()),
            DIR_PREFIX
        ));
        assert!(!owner_gone(
            &format!("tcpproxy-test.{}.3", run_tag()),
            "tcpproxy-test."
        ));
        // Above pid_max (4194304 at most): no process has it.
        let gone = format!("tcpproxy-test.{ns}.4294967295.0");
        assert!(owner_gone(&gone, "tcpproxy-test."));
        // Another pid namespace's: not ours to judge.
        let theirs = format!("tcpproxy-test.{}.4294967295.0", ns + 1);
        assert!(!owner_gone(&theirs, "tcpproxy-test."));
        assert!(!owner_gone("tcpproxy-test.notapid.0", "tcpproxy-test."));
        assert!(!owner_gone("someone-else.1.2.0", "tcpproxy-test."));
    }

    #[test]
    fn an_unknown_user_is_one_line_naming_the_flag() {
        let flag = Flag {
            run_as: "no-such-user-here".into(),
            ..Flag::default()
        };
        let e = flag.policy().unwrap_err();
        assert!(
            e.starts_with("--run-as no-such-user-here: no such user"),
            "{e}"
        );
        let root = Flag {
            run_as: "root".into(),
            ..Flag::default()
        };
        assert_eq!(root.policy().unwrap().user, None);
    }
}
