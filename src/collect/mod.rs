//! Collectors: one module per source. Each turns what arrives into [`crate::bus::RawRecord`]s
//! (bytes, source identity, receive time) on the bus, applying its limits and counting what it
//! refuses. Collectors never parse: that is the pipeline's job.

pub mod file;
pub mod flow;
pub mod http;
pub mod syslog;

/// What the kernel dropped on one of Vigil's UDP sockets (receive buffer full): read from
/// `/proc/net/udp`, by the socket's inode, so another program's socket on the same port is not
/// counted. Every drop since the socket was bound counts.
pub struct KernelDrops {
    inode: Option<u64>,
    seen: u64,
}

impl KernelDrops {
    /// For `socket`, the listener `what`; warns once where `/proc` cannot be read.
    pub fn of(socket: &impl std::os::fd::AsRawFd, what: &str) -> KernelDrops {
        let inode = socket_inode(socket);
        if inode.is_none() {
            tracing::warn!(
                listener = what,
                "kernel drops on the socket cannot be read (/proc)"
            );
        }
        KernelDrops { inode, seen: 0 }
    }

    /// Datagrams dropped since the last call (0 where unreadable).
    pub fn new_drops(&mut self) -> u64 {
        let Some(drops) = self.inode.and_then(kernel_drops) else {
            return 0;
        };
        let new = drops.saturating_sub(self.seen);
        self.seen = drops;
        new
    }
}

/// The inode of a socket, as `/proc/net/udp` lists it (from the `/proc/self/fd` link), or
/// `None` where `/proc` is not readable.
fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Datagrams the kernel dropped on the UDP socket with `inode` (the `drops` column of its row
/// in `/proc/net/udp` or `/proc/net/udp6`), or `None` where that is not readable. By inode, not
/// port: another program's socket on the same port (another address) is not Vigil's loss.
fn kernel_drops(inode: u64) -> Option<u64> {
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(9).and_then(|i| i.parse::<u64>().ok()) == Some(inode) {
                return cols.last().and_then(|d| d.parse::<u64>().ok());
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kernel_drops_are_read_per_socket_not_per_port() {
        let small = |addr: std::net::SocketAddr| {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            s.set_recv_buffer_size(1).unwrap();
            s.bind(&addr.into()).unwrap();
            std::net::UdpSocket::from(s)
        };
        let quiet = small("127.0.0.1:0".parse().unwrap());
        let port = quiet.local_addr().unwrap().port();
        // The same port on another loopback address: its losses are not `quiet`'s.
        let flooded = small(std::net::SocketAddr::from(([127, 0, 0, 2], port)));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..400 {
            sender
                .send_to(&[7u8; 900], flooded.local_addr().unwrap())
                .unwrap();
        }
        let drops = |s: &std::net::UdpSocket| kernel_drops(socket_inode(s).unwrap());
        assert!(drops(&flooded).unwrap() > 0);
        assert_eq!(drops(&quiet), Some(0));
    }
}
