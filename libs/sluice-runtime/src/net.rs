//! Listening sockets.

use std::net::SocketAddr;

/// Binds `addr` with an accept backlog of `backlog` and returns a std listener for actix-web.
///
/// A reconnect storm arrives as a burst of SYNs; the OS default backlog (often 128) would drop
/// most of them and add seconds of SYN retransmits to every reconnect.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(backlog)?.into_std()?;
    // actix-web registers the socket with its own reactor.
    listener.set_nonblocking(true)?;
    Ok(listener)
}
