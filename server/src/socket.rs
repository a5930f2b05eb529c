//! The listening socket. Its options are inherited by every connection it
//! accepts: a device that vanished without closing (a phone out of
//! coverage, a laptop shut) frees its connection and event stream within
//! about a minute instead of the kernel's quarter of an hour, and a deep
//! backlog lets a thousand devices reconnect at once after a restart
//! without their connections being dropped and retried a second later.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

/// Connections waiting to be accepted (the kernel caps it at somaxconn).
const BACKLOG: i32 = 4096;

/// An idle connection is probed after this long, then every
/// `PROBE_EVERY`, and given up after `PROBES` unanswered probes.
const IDLE_BEFORE_PROBES: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBES: u32 = 3;

/// Data sent and not acknowledged this long ends the connection (an event
/// stream's keep-alive to a device that is gone).
const UNACKNOWLEDGED_FOR: Duration = Duration::from_secs(60);

/// Binds `addr` with the options above.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    let keepalive = TcpKeepalive::new().with_time(IDLE_BEFORE_PROBES).with_interval(PROBE_EVERY).with_retries(PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_FOR))?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_keepalive_and_the_user_timeout() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = Socket::from(accepted);
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.tcp_keepalive_time().unwrap(), IDLE_BEFORE_PROBES);
        #[cfg(target_os = "linux")]
        assert_eq!(accepted.tcp_user_timeout().unwrap(), Some(UNACKNOWLEDGED_FOR));
    }
}
