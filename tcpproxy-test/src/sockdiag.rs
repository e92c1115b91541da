//! One TCP socket's queues, looked up by its ports through Linux's sock_diag netlink interface
//! (what `ss` uses). /proc/net/tcp gives the same figures but lists every socket of the host:
//! after a suite leaves thousands in TIME-WAIT, one read takes milliseconds, and a held tail
//! (`crate::hold`) reads four sockets after every piece it writes. An exact lookup costs one
//! request whatever the host holds.

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::procfs::{Ends, Queues};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
/// Both cookie words: match any socket with these ports.
const NO_COOKIE: u32 = !0;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, expires, then the
/// receive and send queues.
const RQUEUE_AT: usize = NLMSG_HDRLEN + 4 + 48 + 4;
const WQUEUE_AT: usize = RQUEUE_AT + 4;
/// After the send queue, the owner's uid, then the inode (0 for a socket no descriptor holds
/// yet: one in a listener's accept queue).
const INODE_AT: usize = WQUEUE_AT + 8;

/// A netlink socket for lookups.
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
}

impl Diag {
    pub fn open() -> io::Result<Diag> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        // The kernel answers within the send; this only bounds a kernel that does not.
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            // Through nix's constructor: libc's time_t is deprecated on musl targets.
            &TimeVal::new(1, 0),
        )?;
        Ok(Diag { fd, seq: 0 })
    }

    /// The queues of the socket on 127.0.0.1 with these ports, whether it is an IPv4 socket
    /// or an IPv6 one holding an IPv4-mapped address (a dual-stack listener's); None if there
    /// is none.
    pub fn queues(&mut self, ends: Ends) -> io::Result<Option<Queues>> {
        Ok(self.socket(ends)?.map(|(q, _)| q))
    }

    /// [`Diag::queues`] and the socket's inode, 0 while no descriptor holds it (accepted by
    /// the kernel, not yet by its listener's owner).
    pub fn socket(&mut self, ends: Ends) -> io::Result<Option<(Queues, u64)>> {
        Ok(self.found(ends)?.map(|(q, inode, _)| (q, inode)))
    }

    /// Whether the server's end of a connection (`ends` as the server sees them) waits in its
    /// listener's accept queue: established, and held by no descriptor yet. One its owner
    /// accepted and closed is held by none either, but has left ESTABLISHED.
    pub fn queued_for_accept(&mut self, ends: Ends) -> io::Result<bool> {
        Ok(matches!(self.found(ends)?, Some((_, 0, TCP_ESTABLISHED))))
    }

    /// Whether a socket listens on `port` on loopback: 127.0.0.1 (an IPv4 socket, or a
    /// dual-stack IPv6 one) or ::1 (a proxy that bound "localhost" and got IPv6 first, which the
    /// phases then tell it cannot be reached). A lookup with remote port 0 matches no
    /// connection, so the kernel answers with the listener on the local port, if any, without
    /// walking a table: /proc/net/tcp lists the listeners first, but a read of it goes on into
    /// the connection table, the host's whole table where the run's namespace shares it.
    pub fn listening(&mut self, port: u16) -> io::Result<bool> {
        let ends = Ends {
            local: port,
            remote: 0,
        };
        for (family, at) in [
            (libc::AF_INET, Loopback::V4),
            (libc::AF_INET6, Loopback::V4Mapped),
            (libc::AF_INET6, Loopback::V6),
        ] {
            if self
                .lookup_at(family as u8, at, ends)?
                .is_some_and(|r| r.listens_on(port))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn found(&mut self, ends: Ends) -> io::Result<Option<(Queues, u64, u8)>> {
        for family in [libc::AF_INET, libc::AF_INET6] {
            if let Some(found) = self.lookup(family as u8, ends)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn lookup(&mut self, family: u8, ends: Ends) -> io::Result<Option<(Queues, u64, u8)>> {
        Ok(self
            .lookup_any(family, ends)?
            .and_then(|r| r.connection(ends)))
    }

    /// The socket the kernel answers with for these ports: the connection, else the listener on
    /// the local port.
    fn lookup_any(&mut self, family: u8, ends: Ends) -> io::Result<Option<Answer>> {
        let at = if family == libc::AF_INET as u8 {
            Loopback::V4
        } else {
            Loopback::V4Mapped
        };
        self.lookup_at(family, at, ends)
    }

    fn lookup_at(&mut self, family: u8, at: Loopback, ends: Ends) -> io::Result<Option<Answer>> {
        self.seq = self.seq.wrapping_add(1);
        let request = request(family, at, ends, self.seq);
        sendto(
            self.fd.as_raw_fd(),
            &request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut reply = [0u8; 512];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
            match parse(&reply[..n], self.seq) {
                Reply::Stale => continue,
                Reply::Found(answer) => return Ok(Some(answer)),
                Reply::NotFound => return Ok(None),
                Reply::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }
}

/// The loopback address both ends of a lookup have.
#[derive(Debug, Clone, Copy)]
enum Loopback {
    /// 127.0.0.1, in an IPv4 lookup.
    V4,
    /// ::ffff:127.0.0.1, in an IPv6 lookup: a dual-stack socket's view of 127.0.0.1.
    V4Mapped,
    /// ::1.
    V6,
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for the one TCP socket with these ports.
fn request(family: u8, at: Loopback, ends: Ends, seq: u32) -> Vec<u8> {
    let loopback = |v: &mut Vec<u8>| match at {
        Loopback::V4 => {
            v.extend_from_slice(&[127, 0, 0, 1]);
            v.extend_from_slice(&[0; 12]);
        }
        Loopback::V4Mapped => {
            v.extend_from_slice(&[0; 10]);
            v.extend_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        }
        Loopback::V6 => {
            v.extend_from_slice(&[0; 15]);
            v.push(1);
        }
    };
    let mut v = Vec::with_capacity(72);
    v.extend_from_slice(&72u32.to_ne_bytes());
    v.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    v.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    v.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    v.extend_from_slice(&ends.local.to_be_bytes());
    v.extend_from_slice(&ends.remote.to_be_bytes());
    loopback(&mut v);
    loopback(&mut v);
    v.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    v.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    v.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(v.len(), 72);
    v
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An answer to an earlier request (one that timed out).
    Stale,
    Found(Answer),
    NotFound,
    Error(i32),
}

/// The socket a lookup found.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    state: u8,
    local: u16,
    remote: u16,
    queues: Queues,
    inode: u64,
}

impl Answer {
    /// The queues, the inode and the TCP state, if this is the connection with `ends`: a lookup
    /// with no socket of these ports falls back to the listener on the local port.
    fn connection(self, ends: Ends) -> Option<(Queues, u64, u8)> {
        (self.state != TCP_LISTEN && self.remote == ends.remote).then_some((
            self.queues,
            self.inode,
            self.state,
        ))
    }

    fn listens_on(&self, port: u16) -> bool {
        self.state == TCP_LISTEN && self.local == port
    }
}

fn parse(reply: &[u8], seq: u32) -> Reply {
    let u32_at = |at: usize| {
        reply
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("four bytes")))
    };
    let kind = reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    if u32_at(8) != Some(seq) {
        return Reply::Stale;
    }
    if kind == Some(NLMSG_ERROR) {
        return match u32_at(NLMSG_HDRLEN).map(|e| -(e as i32)) {
            Some(libc::ENOENT) => Reply::NotFound,
            Some(errno) => Reply::Error(errno),
            None => Reply::Error(libc::EPROTO),
        };
    }
    let state = reply.get(NLMSG_HDRLEN + 1).copied();
    let port = |at: usize| {
        reply
            .get(NLMSG_HDRLEN + at..NLMSG_HDRLEN + at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    // The socket id starts with the source port, then the destination port.
    match (
        u32_at(RQUEUE_AT),
        u32_at(WQUEUE_AT),
        u32_at(INODE_AT),
        state,
        port(4),
        port(6),
    ) {
        (Some(recv), Some(send), Some(inode), Some(state), Some(local), Some(remote)) => {
            Reply::Found(Answer {
                state,
                local,
                remote,
                queues: Queues {
                    send: send.into(),
                    recv: recv.into(),
                },
                inode: inode.into(),
            })
        }
        _ => Reply::Error(libc::EPROTO),
    }
}

/// For tests of the socket readings: a connection on loopback, not yet accepted, and its
/// client's ends.
#[cfg(test)]
pub(crate) fn loopback_client() -> (std::net::TcpListener, std::net::TcpStream, Ends) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let ends = Ends {
        local: c.local_addr().unwrap().port(),
        remote: l.local_addr().unwrap().port(),
    };
    (l, c, ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// What `ready` gives once it gives something, within 10 s: the kernel's side of a loopback
    /// connection settles just after the call that started it returns, not always before.
    #[track_caller]
    fn eventually<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(v) = ready() {
                return v;
            }
            assert!(std::time::Instant::now() < end, "never saw {what}");
            std::thread::yield_now();
        }
    }

    /// The server's ends of the connection whose client has `client`.
    fn facing(client: Ends) -> Ends {
        Ends {
            local: client.remote,
            remote: client.local,
        }
    }

    #[test]
    fn a_request_is_one_netlink_message_for_one_socket() {
        let r = request(
            libc::AF_INET as u8,
            Loopback::V4,
            Ends {
                local: 0x1F90,
                remote: 0xD431,
            },
            7,
        );
        assert_eq!(r.len(), 72);
        assert_eq!(&r[24..28], &[0x1F, 0x90, 0xD4, 0x31]);
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
    }

    #[test]
    fn unread_bytes_show_in_the_receivers_queue_and_a_closed_socket_is_not_found() {
        let Ok(mut diag) = Diag::open() else {
            return;
        };
        let (l, mut c, client) = loopback_client();
        let (_s, _) = l.accept().unwrap();
        let ends = facing(client);
        c.write_all(&[7; 1000]).unwrap();
        // Loopback delivers in softirq context, usually before write returns; not always.
        eventually("1000 bytes in the receiver's queue", || {
            let q = diag.queues(ends).unwrap().expect("an established socket");
            (q.recv == 1000).then_some(())
        });
        let unused = Ends {
            local: ends.local,
            remote: 1,
        };
        assert_eq!(diag.queues(unused).unwrap(), None);
    }

    #[test]
    fn a_listener_is_found_by_its_port_and_only_while_it_listens() {
        let Ok(mut diag) = Diag::open() else {
            return;
        };
        let (l, c, client) = loopback_client();
        let port = client.remote;
        assert!(diag.listening(port).unwrap());
        // The client's port has a connection, not a listener.
        assert!(!diag.listening(client.local).unwrap());
        let v6 = std::net::TcpListener::bind("[::]:0");
        drop((l, c));
        assert!(!diag.listening(port).unwrap());
        // A dual-stack listener takes 127.0.0.1 too.
        if let Ok(v6) = v6 {
            assert!(diag.listening(v6.local_addr().unwrap().port()).unwrap());
        }
        // One on ::1 alone is found as well (where the host has IPv6 loopback).
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let port = v6.local_addr().unwrap().port();
            assert!(diag.listening(port).unwrap());
            drop(v6);
            assert!(!diag.listening(port).unwrap());
        }
    }

    #[test]
    fn a_connection_in_the_accept_queue_has_no_inode_until_accepted() {
        let Ok(mut diag) = Diag::open() else {
            return;
        };
        let (l, _c, client) = loopback_client();
        let ends = facing(client);
        // connect returns once the SYN-ACK is in; the listener's child follows the last ACK,
        // which loopback delivers within the connect call or just after it.
        let queued = eventually("a socket for the queued connection", || {
            diag.socket(ends).unwrap()
        });
        assert_eq!(queued.1, 0);
        let (_s, _) = l.accept().unwrap();
        let (_, inode) = diag.socket(ends).unwrap().expect("the accepted socket");
        assert_ne!(inode, 0);
    }

    #[test]
    fn only_a_connection_waiting_for_accept_is_queued() {
        let Ok(mut diag) = Diag::open() else {
            return;
        };
        let (l, _c, client) = loopback_client();
        let ends = facing(client);
        eventually("the connection in the queue", || {
            diag.queued_for_accept(ends).unwrap().then_some(())
        });
        let (s, _) = l.accept().unwrap();
        assert!(!diag.queued_for_accept(ends).unwrap(), "accepted");
        drop(s);
        // Closed by its owner: FIN-WAIT, no descriptor, not waiting for anyone's accept.
        assert!(
            !diag.queued_for_accept(ends).unwrap(),
            "accepted and closed"
        );
    }
}
