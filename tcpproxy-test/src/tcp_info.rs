//! What the kernel's TCP_INFO says of one of the harness's own connections.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How many segments the kernel has sent again on `socket` (`tcpi_total_retrans`). Read right
/// after a connect completes, before any byte is sent, it counts SYNs sent again: a connect that
/// waited on a full accept queue, told apart from one that was merely slow to be noticed.
pub fn retransmitted(socket: &impl AsRawFd) -> io::Result<u32> {
    Ok(read(socket)?.tcpi_total_retrans)
}

/// How long ago the kernel last took a byte in on `socket` (`tcpi_last_data_recv`, in
/// milliseconds); None if it never did. For a receiver that never reads, that is when its
/// peer's writes last made progress.
pub fn since_last_data(socket: &impl AsRawFd) -> io::Result<Option<Duration>> {
    let info = read(socket)?;
    Ok((info.tcpi_bytes_received > 0)
        .then(|| Duration::from_millis(info.tcpi_last_data_recv.into())))
}

#[allow(unsafe_code)]
fn read(socket: &impl AsRawFd) -> io::Result<libc::tcp_info> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `info`, which is that large and
    // zeroed first, so fields an older kernel does not fill stay valid zeros.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every field is a plain integer, and all of them were zeroed or written above.
    Ok(unsafe { info.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn a_connect_that_waited_for_its_syn_to_be_sent_again_says_so() {
        // A backlog of 0 takes one connection into the queue; the next SYN is dropped until the
        // first is accepted, and is sent again a second later.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(retransmitted(&first).unwrap(), 0);
        let second = tokio::spawn(tokio::net::TcpStream::connect(addr));
        // The second SYN can only be dropped once it is sent: wait for the kernel to hold it
        // (its socket in SYN_SENT), then make room.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !syn_sent_to(addr.port()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second connect never sent its SYN"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _accepted = listener.accept().await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second connect to complete once there was room")
            .unwrap()
            .unwrap();
        assert!(retransmitted(&second).unwrap() >= 1);
    }

    /// Whether a socket in SYN_SENT (state 02 in /proc/net/tcp) is connecting to `port`.
    fn syn_sent_to(port: u16) -> bool {
        const SYN_SENT: u8 = 0x02;
        crate::procfs::tcp_tables().iter().any(|t| {
            crate::procfs::tcp_rows(t).any(|r| r.state == SYN_SENT && r.ends.remote == port)
        })
    }

    #[tokio::test]
    async fn a_receiver_knows_when_it_last_took_bytes_in_and_none_before_any() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(since_last_data(&server).unwrap(), None);
        client.write_all(b"x").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ago) = since_last_data(&server).unwrap() {
                assert!(ago < Duration::from_secs(10), "{ago:?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the byte never arrived"
            );
            tokio::task::yield_now().await;
        }
    }
}
