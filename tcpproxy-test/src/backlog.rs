//! The kernel's count of connections its listen queues turned away (`ListenOverflows`,
//! `ListenDrops` and `SyncookiesFailed` in /proc/net/netstat's TcpExt lines): how a proxy's small listen(2) backlog
//! shows. With `tcp_abort_on_overflow` at 0, Linux drops a SYN or handshake ACK it has no room
//! for (the client retries after 1 s, then 3 s) and, where a SYN cookie stood in for the queue,
//! may reset a client whose later segment no longer matches it. The counters are host-wide (per
//! network namespace): other programs' bursts raise them too, so a rise is evidence only beside
//! a phase's own refused or reset connects.

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenDrops {
    /// Connections that found their listener's accept queue full.
    pub overflows: u64,
    /// Connections dropped by a listener for any reason (every overflow counts here too).
    pub drops: u64,
    /// Handshakes that ended in a reset because the segment after a SYN cookie did not match it
    /// (the cookie stood in for a full SYN queue, which need not count as an overflow).
    pub cookies_failed: u64,
}

impl ListenDrops {
    /// The counters now, or None where /proc/net/netstat is missing or has neither.
    pub fn read() -> Option<ListenDrops> {
        parse(&std::fs::read_to_string("/proc/net/netstat").ok()?)
    }

    /// How many connections the kernel turned away since `earlier`: the largest rise, since
    /// one connection may count in one counter or several (an overflow in both listen counters,
    /// a dropped handshake ACK then a failed cookie).
    pub fn since(&self, earlier: &ListenDrops) -> u64 {
        let rise = |now: u64, then: u64| now.saturating_sub(then);
        rise(self.overflows, earlier.overflows)
            .max(rise(self.drops, earlier.drops))
            .max(rise(self.cookies_failed, earlier.cookies_failed))
    }
}

/// Reads the counters from /proc/net/netstat's text: for each protocol a line of names, then a
/// line of values, both starting `TcpExt:`.
pub fn parse(text: &str) -> Option<ListenDrops> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    let (mut overflows, mut drops, mut cookies_failed) = (None, None, None);
    for (name, value) in names.zip(values) {
        let slot = match name {
            "ListenOverflows" => &mut overflows,
            "ListenDrops" => &mut drops,
            "SyncookiesFailed" => &mut cookies_failed,
            _ => continue,
        };
        *slot = value.parse().ok();
    }
    if overflows.is_none() && drops.is_none() {
        return None;
    }
    Some(ListenDrops {
        overflows: overflows.unwrap_or(0),
        drops: drops.unwrap_or(0),
        cookies_failed: cookies_failed.unwrap_or(0),
    })
}

/// The counters when a phase began, to tell afterwards whether the kernel turned connections
/// away meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    start: Option<ListenDrops>,
}

impl Watch {
    pub fn start() -> Watch {
        Watch {
            start: ListenDrops::read(),
        }
    }

    /// How many connections the kernel's listen queues turned away since the start (0 for
    /// none), or None when the counters cannot be read.
    pub fn dropped(&self) -> Option<u64> {
        Some(ListenDrops::read()?.since(self.start.as_ref()?))
    }
}

/// The hint for a phase whose own connects were refused or reset while the kernel's counters
/// rose by `dropped`.
pub fn hint(dropped: u64) -> String {
    format!(
        "the proxy's listen backlog overflowed ({dropped} connections dropped or reset by the kernel): a small listen(2) backlog such as listen(5); use 128 or more (SOMAXCONN)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a Linux 6.x /proc/net/netstat, cut short: IpExt follows TcpExt and has no
    /// counters of these names.
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops TCPHPHits\n\
        TcpExt: 188 0 29 0 476 480 569\n\
        IpExt: InNoRoutes InTruncatedPkts ListenDrops\n\
        IpExt: 0 0 7\n";

    #[test]
    fn the_tcpext_counters_are_read_by_name() {
        assert_eq!(
            parse(NETSTAT),
            Some(ListenDrops {
                overflows: 476,
                drops: 480,
                cookies_failed: 29,
            })
        );
    }

    #[test]
    fn a_table_without_the_counters_gives_none() {
        assert_eq!(parse("IpExt: InNoRoutes\nIpExt: 0\n"), None);
        assert_eq!(parse("TcpExt: TCPHPHits\nTcpExt: 5\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn the_rise_is_the_largest_of_the_three() {
        let before = ListenDrops {
            overflows: 10,
            drops: 12,
            cookies_failed: 3,
        };
        let after = ListenDrops {
            overflows: 40,
            drops: 50,
            cookies_failed: 5,
        };
        assert_eq!(after.since(&before), 38);
        assert_eq!(before.since(&before), 0);
        let resets_only = ListenDrops {
            cookies_failed: 9,
            ..before
        };
        assert_eq!(resets_only.since(&before), 6);
        // A counter that went down (a new namespace, a reset) is no rise.
        assert_eq!(before.since(&after), 0);
    }

    #[test]
    fn this_host_has_the_counters() {
        if !std::path::Path::new("/proc/net/netstat").is_file() {
            return;
        }
        assert!(ListenDrops::read().is_some());
    }

    #[test]
    fn the_hint_names_the_backlog_and_the_count() {
        let h = hint(93);
        assert!(
            h.contains("93 connections dropped or reset by the kernel"),
            "{h}"
        );
        assert!(h.contains("listen(5)") && h.contains("SOMAXCONN"), "{h}");
    }
}
