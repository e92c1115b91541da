//! What Linux's /proc says about a proxy's process group: its members, their open
//! descriptors, their sockets' TCP states, resident memory and CPU time. The whole group is
//! judged, since a proxy may fork.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Whether this host has the /proc these readings need.
pub fn available() -> bool {
    Path::new("/proc/self/fd").is_dir() && Path::new("/proc/net/tcp").is_file()
}

/// PIDs whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.pgrp == pgid))
        .collect()
}

/// The fields of /proc/PID/stat used here.
#[derive(Debug, Clone, Copy)]
struct StatFields {
    ppid: i32,
    pgrp: i32,
    /// When the process started, in clock ticks since boot: with the pid, it names one process
    /// even after the pid is reused.
    started: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_pages: u64,
}

fn stat_fields(pid: i32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... starttime(19) ...
    // rss(21).
    Some(StatFields {
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        started: f.get(19)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

/// One process as /proc/PID/stat shows it: where it sits in the process tree, and when it
/// started (so a pid that was reused is not mistaken for the process seen before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub started: u64,
}

/// One process, if it exists.
pub fn process(pid: i32) -> Option<Proc> {
    let f = stat_fields(pid)?;
    Some(Proc {
        pid,
        ppid: f.ppid,
        pgrp: f.pgrp,
        started: f.started,
    })
}

/// Every process visible in /proc.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(process)
        .collect()
}

/// The processes of `table` whose parent chain leads to one of `roots` (the roots excluded,
/// unless one descends from another).
pub fn descendants(table: &[Proc], roots: &[i32]) -> Vec<Proc> {
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier: Vec<i32> = roots.to_vec();
    // Each round adds a generation; a table of N processes has at most N of them, which also
    // bounds the loop should /proc ever show a cycle mid-update.
    for _ in 0..=table.len() {
        let next: Vec<Proc> = table
            .iter()
            .filter(|p| frontier.contains(&p.ppid) && !found.iter().any(|f| f.pid == p.pid))
            .copied()
            .collect();
        if next.is_empty() {
            break;
        }
        frontier = next.iter().map(|p| p.pid).collect();
        found.extend(next);
    }
    found
}

/// Socket inodes open in any of `pids`.
pub fn socket_inodes_of(pids: impl IntoIterator<Item = i32>) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                let l = link.to_string_lossy();
                if let Some(n) = l.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    if let Ok(i) = n.parse() {
                        inodes.insert(i);
                    }
                }
            }
        }
    }
    inodes
}

/// The ports of TCP sockets in LISTEN whose inode is in `inodes`, in both tables.
pub fn listening_ports(inodes: &HashSet<u64>) -> Vec<u16> {
    let mut ports: Vec<u16> = listen_ports_in(listen_rows(), inodes).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn listen_ports_in<'a>(
    rows: impl IntoIterator<Item = TcpRow> + 'a,
    inodes: &'a HashSet<u64>,
) -> impl Iterator<Item = u16> + 'a {
    rows.into_iter()
        .filter(move |r| r.state == LISTEN && inodes.contains(&r.inode))
        .map(|r| r.ends.local)
}

/// Open descriptors across the group.
pub fn open_fds(pgid: i32) -> usize {
    group_members(pgid)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map(|d| d.count())
        .sum()
}

/// Socket inodes the group holds open.
pub fn socket_inodes(pgid: i32) -> HashSet<u64> {
    socket_inodes_of(group_members(pgid))
}

/// How many of the group's TCP sockets sit in CLOSE_WAIT: the peer finished, the proxy never
/// closed its end.
pub fn close_wait_sockets(pgid: i32) -> usize {
    let mine = socket_inodes(pgid);
    tcp_tables()
        .iter()
        .map(|text| count_state(text, CLOSE_WAIT, &mine))
        .sum()
}

/// Rows of a /proc/net/tcp table in `state` whose inode is in `inodes`.
fn count_state(table: &str, state: u8, inodes: &HashSet<u64>) -> usize {
    tcp_rows(table)
        .filter(|r| r.state == state && inodes.contains(&r.inode))
        .count()
}

const LISTEN: u8 = 0x0A;
const CLOSE_WAIT: u8 = 0x08;
pub const TIME_WAIT: u8 = 0x06;

/// Both TCP tables' text (those that could be read).
pub fn tcp_tables() -> Vec<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .collect()
}

/// Both TCP tables' LISTEN rows (of those tables that could be read). The kernel lists the
/// listening sockets first, so reading stops at the first other row: the whole table makes the
/// kernel walk every connection of the host, and the harness probes for listeners every few
/// milliseconds while its suites, side by side, hold thousands (reading the tables was the
/// largest kernel cost in a profile of a suite run, docs/benchmarks.md "Test time").
fn listen_rows() -> Vec<TcpRow> {
    use std::io::BufRead as _;
    let mut rows = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(file) = std::fs::File::open(table) else {
            continue;
        };
        let listeners = std::io::BufReader::new(file)
            .lines()
            .skip(1)
            .map_while(|line| tcp_row(&line.ok()?))
            .take_while(|r| r.state == LISTEN);
        rows.extend(listeners);
    }
    rows
}

/// One row of /proc/net/tcp{,6}:
/// `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...`, in hex but the
/// inode. Addresses are left out: every socket here is on loopback, told apart by its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub ends: Ends,
    pub state: u8,
    pub queues: Queues,
    /// 0 for a socket no descriptor holds (TIME-WAIT).
    pub inode: u64,
}

/// The rows of a table's text; lines that do not parse are skipped.
pub fn tcp_rows(table: &str) -> impl Iterator<Item = TcpRow> + '_ {
    table.lines().skip(1).filter_map(tcp_row)
}

/// One line of a table's text, if it parses.
fn tcp_row(line: &str) -> Option<TcpRow> {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let hex = |h: &str| u64::from_str_radix(h, 16).ok();
    let f: Vec<&str> = line.split_whitespace().collect();
    let (tx, rx) = f.get(4)?.split_once(':')?;
    Some(TcpRow {
        ends: Ends {
            local: port(f.get(1)?)?,
            remote: port(f.get(2)?)?,
        },
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        queues: Queues {
            send: hex(tx)?,
            recv: hex(rx)?,
        },
        inode: f.get(9)?.parse().ok()?,
    })
}

/// One TCP socket on loopback, by its local and remote ports (each pair's sockets are told
/// apart by their ports alone: every address is 127.0.0.1, or its IPv4-mapped IPv6 form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    pub local: u16,
    pub remote: u16,
}

/// A socket's queues as /proc/net/tcp shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queues {
    /// Bytes written and not yet acknowledged by the peer (sent or still waiting to be).
    pub send: u64,
    /// Bytes received in order and not yet read by the socket's owner.
    pub recv: u64,
}

/// The row of each of `wanted`, from both tables (None where a socket is not listed, or /proc
/// is missing). Rows in TIME-WAIT are skipped: loopback reuses their ports.
pub fn tcp_rows_of(wanted: &[Ends]) -> Vec<Option<TcpRow>> {
    let mut found = vec![None; wanted.len()];
    for text in tcp_tables() {
        rows_in(&text, wanted, &mut found);
    }
    found
}

fn rows_in(table: &str, wanted: &[Ends], found: &mut [Option<TcpRow>]) {
    for row in tcp_rows(table).filter(|r| r.state != TIME_WAIT) {
        if let Some(i) = wanted.iter().position(|w| *w == row.ends) {
            found[i] = Some(row);
        }
    }
}

/// The queues of each of `wanted` (see [`tcp_rows_of`]).
pub fn tcp_queues(wanted: &[Ends]) -> Vec<Option<Queues>> {
    tcp_rows_of(wanted)
        .into_iter()
        .map(|r| r.map(|r| r.queues))
        .collect()
}

/// The socket inode of each of `wanted` (see [`tcp_rows_of`]), None also where no descriptor
/// holds the socket any more. A socket whose FIN exchange finished is gone from the tables even
/// while a leaked descriptor keeps it, so whoever checks for leaks notes the inodes while the
/// sockets are established.
pub fn tcp_inodes(wanted: &[Ends]) -> Vec<Option<u64>> {
    tcp_rows_of(wanted)
        .into_iter()
        .map(|r| r.map(|r| r.inode).filter(|&i| i != 0))
        .collect()
}

/// What a process group holds and has used, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Open descriptors, whatever state their sockets are in.
    pub fds: usize,
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// The group's usage now, or `None` once no member is left.
pub fn usage(pgid: i32) -> Option<Usage> {
    if group_members(pgid).is_empty() {
        return None;
    }
    Some(Usage {
        fds: open_fds(pgid),
        rss_bytes: rss_bytes(pgid),
        cpu: Duration::from_secs_f64(cpu_seconds(pgid)),
    })
}

/// Whether any TCP socket listens on `port`, read from both tables, so no connection is made.
pub fn listening_on(port: u16) -> bool {
    listening_in(listen_rows(), port)
}

fn listening_in(rows: impl IntoIterator<Item = TcpRow>, port: u16) -> bool {
    rows.into_iter()
        .any(|r| r.state == LISTEN && r.ends.local == port)
}

/// Resident memory of the group, in bytes.
pub fn rss_bytes(pgid: i32) -> u64 {
    let page = sysconf_or(nix::unistd::SysconfVar::PAGE_SIZE, 4096) as u64;
    group_sum(pgid, |s| s.rss_pages * page)
}

/// CPU time (user + system) the group has used, in seconds. Exited members no longer count,
/// which errs on the lenient side.
pub fn cpu_seconds(pgid: i32) -> f64 {
    let hz = sysconf_or(nix::unistd::SysconfVar::CLK_TCK, 100) as f64;
    group_sum(pgid, |s| s.cpu_ticks as f64 / hz)
}

/// `of` each live member of the group, summed.
fn group_sum<T: std::iter::Sum>(pgid: i32, of: impl Fn(StatFields) -> T) -> T {
    group_members(pgid)
        .into_iter()
        .filter_map(stat_fields)
        .map(of)
        .sum()
}

/// A system setting, or `default` where the system does not say.
fn sysconf_or(var: nix::unistd::SysconfVar, default: i64) -> i64 {
    nix::unistd::sysconf(var).ok().flatten().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) proxy) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 12345678 321 18446744073709551615";
        let f = parse_stat(line).unwrap();
        assert_eq!((f.ppid, f.pgrp), (1, 4242));
        assert_eq!(f.started, 100);
        assert_eq!(f.cpu_ticks, 12);
        assert_eq!(f.rss_pages, 321);
    }

    #[test]
    fn descendants_follow_parent_links_through_every_generation() {
        let p = |pid, ppid| Proc {
            pid,
            ppid,
            pgrp: pid,
            started: 0,
        };
        // 10 -> 11 -> 12 -> 13, and 20 beside them under 1.
        let table = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(13, 12), p(20, 1)];
        let mut pids: Vec<i32> = descendants(&table, &[10]).iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, [11, 12, 13]);
        assert!(descendants(&table, &[13]).is_empty());
    }

    #[test]
    fn listen_rows_are_found_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n   \
            1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1\n   \
            2: 0100007F:1F92 0100007F:D433 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n";
        let mine: HashSet<u64> = [111, 333].into_iter().collect();
        assert_eq!(
            listen_ports_in(tcp_rows(table), &mine).collect::<Vec<_>>(),
            [0x1F90]
        );
    }

    #[test]
    fn a_port_listens_only_in_a_listen_row() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n   \
            1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n";
        assert!(listening_in(tcp_rows(table), 0x1F90));
        assert!(
            !listening_in(tcp_rows(table), 0x1F91),
            "ESTABLISHED is not LISTEN"
        );
        assert!(!listening_in(tcp_rows(table), 80));
    }

    #[test]
    fn close_wait_rows_are_counted_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 0100007F:D431 08 00000000:00000000 00:00000000 00000000     0        0 111 1\n   \
            1: 0100007F:1F90 0100007F:D432 08 00000000:00000000 00:00000000 00000000     0        0 222 1\n   \
            2: 0100007F:1F90 0100007F:D433 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n";
        let mine: HashSet<u64> = [111, 333].into_iter().collect();
        assert_eq!(count_state(table, CLOSE_WAIT, &mine), 1);
    }

    #[test]
    fn rows_are_found_by_ports_in_either_table_and_time_wait_is_skipped() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 0100007F:D431 01 00000010:00000200 00:00000000 00000000  1000        0 111 1 0\n   \
            1: 0100007F:1F90 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0\n   \
            2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D433 01 0000FFFF:00000000 00:00000000 00000000  1000        0 333 1 0\n";
        let wanted = [0xD431, 0xD432, 0xD433].map(|remote| Ends {
            local: 0x1F90,
            remote,
        });
        let mut found = vec![None; 3];
        rows_in(table, &wanted, &mut found);
        let q = |send, recv| Some(Queues { send, recv });
        let queues: Vec<_> = found.iter().map(|r| r.map(|r| r.queues)).collect();
        assert_eq!(queues, [q(0x10, 0x200), None, q(0xFFFF, 0)]);
        let inodes: Vec<_> = found.iter().map(|r| r.map(|r| r.inode)).collect();
        assert_eq!(inodes, [Some(111), None, Some(333)]);
    }

    #[test]
    fn unread_bytes_show_in_the_receivers_queue() {
        use std::io::Write as _;
        if !available() {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(&[7; 1000]).unwrap();
        let ends = Ends {
            local: s.local_addr().unwrap().port(),
            remote: s.peer_addr().unwrap().port(),
        };
        // Loopback delivers in softirq context, usually before write returns; not always.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let q = tcp_queues(&[ends])[0].expect("an established socket is listed");
            if q.recv == 1000 || std::time::Instant::now() > end {
                assert_eq!(q.recv, 1000);
                break;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn this_process_is_visible() {
        if !available() {
            return;
        }
        let me = nix::unistd::getpgrp().as_raw();
        assert!(group_members(me).contains(&(std::process::id() as i32)));
        assert!(open_fds(me) >= 3);
        assert!(rss_bytes(me) > 0);
        let u = usage(me).expect("this group has a member");
        assert!(u.fds >= 3 && u.rss_bytes > 0);
    }

    #[test]
    fn listeners_are_found_among_established_connections_and_not_after_they_close() {
        if !available() {
            return;
        }
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // Established rows beside the listeners, which reading stops at.
        let conns: Vec<_> = (0..50)
            .map(|_| std::net::TcpStream::connect(first.local_addr().unwrap()).unwrap())
            .collect();
        let accepted: Vec<_> = (0..50).map(|_| first.accept().unwrap()).collect();
        let second = std::net::TcpListener::bind("[::1]:0").unwrap();
        let (p1, p2) = (
            first.local_addr().unwrap().port(),
            second.local_addr().unwrap().port(),
        );
        assert!(listening_on(p1) && listening_on(p2));
        let mine = socket_inodes_of([std::process::id() as i32]);
        let ports = listening_ports(&mine);
        assert!(ports.contains(&p1) && ports.contains(&p2), "{ports:?}");
        // A connected socket's own port is not a listener.
        let client_port = conns[0].local_addr().unwrap().port();
        assert!(!listening_on(client_port));
        // Other tests here spawn children, and one between fork and exec would keep a merely
        // closed listener open.
        crate::fork_fence::close_listener(second).unwrap();
        assert!(!listening_on(p2));
        drop((conns, accepted));
    }
}
