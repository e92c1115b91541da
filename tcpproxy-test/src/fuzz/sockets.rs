//! Whether the proxy still holds a pair's sockets, from Linux's /proc: a pair must be closed once
//! both its directions are done. The pair's socket inodes are noted while it is established
//! ([`crate::procfs::tcp_inodes`]), and looked for in the proxy's descriptor table at the end.

pub use crate::procfs::Ends;

#[cfg(test)]
mod tests {
    use crate::procfs;

    #[test]
    fn this_process_holds_its_own_socket_until_it_closes_it() {
        if !procfs::available() {
            return;
        }
        let (_l, c, ends) = crate::sockdiag::loopback_client();
        let inode = procfs::tcp_inodes(&[ends])[0].expect("an established socket is listed");
        let me = nix::unistd::getpgrp().as_raw();
        assert!(procfs::socket_inodes(me).contains(&inode));
        drop(c);
        assert!(!procfs::socket_inodes(me).contains(&inode));
    }
}
