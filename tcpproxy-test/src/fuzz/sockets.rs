//! Which of one pair's sockets the proxy still holds open, read from Linux's /proc: a pair must
//! be closed once both its directions are done, and a socket whose FIN exchange finished looks
//! closed from outside, so only the proxy's own descriptor table can tell.

use std::collections::HashSet;

use crate::procfs;

/// One socket of the proxy's, by its local and remote ports on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    pub local: u16,
    pub remote: u16,
}

/// The TCP state names of /proc/net/tcp's `st` column.
fn state_name(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN-SENT",
        "03" => "SYN-RECEIVED",
        "04" => "FIN-WAIT-1",
        "05" => "FIN-WAIT-2",
        "06" => "TIME-WAIT",
        "07" => "CLOSED",
        "08" => "CLOSE-WAIT",
        "09" => "LAST-ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "unknown state",
    }
}

/// Socket inodes the process group `pgid` holds open.
fn socket_inodes(pgid: i32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for pid in procfs::group_members(pgid) {
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

/// The rows of a /proc/net/tcp{,6} table among `wanted` whose inode is in `held`, with their
/// state: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn held_in(table: &str, held: &HashSet<u64>, wanted: &[Ends]) -> Vec<(Ends, &'static str)> {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ends = Ends {
                local: port(f.get(1)?)?,
                remote: port(f.get(2)?)?,
            };
            let inode: u64 = f.get(9)?.parse().ok()?;
            (held.contains(&inode) && wanted.contains(&ends)).then(|| (ends, state_name(f[3])))
        })
        .collect()
}

/// Of `wanted`, the sockets the group `pgid` still holds, with their TCP states. Empty where
/// /proc is missing (nothing can be said there).
pub fn still_held(pgid: i32, wanted: &[Ends]) -> Vec<(Ends, &'static str)> {
    if !procfs::available() {
        return vec![];
    }
    let held = socket_inodes(pgid);
    if held.is_empty() {
        return vec![];
    }
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| held_in(&text, &held, wanted))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_rows_are_found_by_ports_and_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 111 1 0\n   \
            1: 0100007F:1F90 0100007F:D432 08 00000000:00000000 00:00000000 00000000  1000        0 222 1 0\n   \
            2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D433 09 00000000:00000000 00:00000000 00000000  1000        0 333 1 0\n";
        let held: HashSet<u64> = [111, 333].into();
        let wanted = [
            Ends {
                local: 0x1F90,
                remote: 0xD431,
            },
            Ends {
                local: 0x1F90,
                remote: 0xD432,
            },
            Ends {
                local: 0x1F90,
                remote: 0xD433,
            },
        ];
        let found = held_in(table, &held, &wanted);
        assert_eq!(
            found,
            [(wanted[0], "ESTABLISHED"), (wanted[2], "LAST-ACK")],
            "inode 222 is not the proxy's"
        );
    }

    #[test]
    fn this_process_holds_its_own_socket() {
        if !procfs::available() {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let ends = Ends {
            local: c.local_addr().unwrap().port(),
            remote: l.local_addr().unwrap().port(),
        };
        let me = nix::unistd::getpgrp().as_raw();
        assert_eq!(still_held(me, &[ends]), [(ends, "ESTABLISHED")]);
        drop(c);
        assert!(still_held(me, &[ends]).is_empty());
    }
}
