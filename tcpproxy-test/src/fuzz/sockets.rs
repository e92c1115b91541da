//! Whether the proxy still holds a pair's sockets, from Linux's /proc: a pair must be closed once
//! both its directions are done. A socket whose FIN exchange finished is CLOSED and gone from
//! /proc/net/tcp even while a leaked descriptor keeps it, so the pair's socket inodes are noted
//! while it is established, and looked for in the proxy's descriptor table at the end.

use crate::procfs;
pub use crate::procfs::Ends;

/// The inode of each of `wanted` in a /proc/net/tcp{,6} table, where it is there with one.
fn inodes_in(table: &str, wanted: &[Ends], found: &mut [Option<u64>]) {
    for row in procfs::tcp_rows(table).filter(|r| r.inode != 0) {
        if let Some(i) = wanted.iter().position(|w| *w == row.ends) {
            found[i] = Some(row.inode);
        }
    }
}

/// The socket inodes of `wanted` (None where a socket is not found, or /proc is missing).
pub fn inodes_of(wanted: &[Ends]) -> Vec<Option<u64>> {
    let mut found = vec![None; wanted.len()];
    if procfs::available() {
        for text in procfs::tcp_tables() {
            inodes_in(&text, wanted, &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_are_found_by_ports_in_either_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 111 1 0\n   \
            1: 0100007F:1F90 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0\n   \
            2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D433 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0\n";
        let wanted = [0xD431, 0xD432, 0xD433, 0xD434].map(|remote| Ends {
            local: 0x1F90,
            remote,
        });
        let mut found = vec![None; 4];
        inodes_in(table, &wanted, &mut found);
        // A TIME-WAIT row has no inode; a socket not listed is not found.
        assert_eq!(found, [Some(111), None, Some(333), None]);
    }

    #[test]
    fn this_process_holds_its_own_socket_until_it_closes_it() {
        if !procfs::available() {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let ends = Ends {
            local: c.local_addr().unwrap().port(),
            remote: l.local_addr().unwrap().port(),
        };
        let inode = inodes_of(&[ends])[0].expect("an established socket is listed");
        let me = nix::unistd::getpgrp().as_raw();
        assert!(procfs::socket_inodes(me).contains(&inode));
        drop(c);
        assert!(!procfs::socket_inodes(me).contains(&inode));
    }
}
