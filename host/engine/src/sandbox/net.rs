//! Socket grants: TCP/UDP connections only to allow-listed `host:port` pairs.
//!
//! Names are resolved once, when the instance is set up; the check then compares addresses.
//! Listening is never allowed. A refused connection is logged with the grant that would allow it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::Notice;

/// Installs the allow-list check (an empty list denies everything, the default).
pub fn grant(builder: &mut WasiCtxBuilder, allowed: &[String], notice: Notice) {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for entry in allowed {
        match entry.to_socket_addrs() {
            Ok(resolved) => addrs.extend(resolved),
            Err(e) => notice.deny(format!(
                "network grant `{entry}` could not be resolved ({e}); it allows nothing"
            )),
        }
    }
    let addrs = Arc::new(addrs);
    // Sockets can be created so that every use goes through the check below (and a refusal is
    // logged with the grant that would allow it); with no grant, every address is refused.
    builder.allow_tcp(true).allow_udp(true);
    builder.allow_ip_name_lookup(!allowed.is_empty());
    builder.socket_addr_check(move |addr, use_| {
        let (allowed, what) = match use_ {
            // Connecting first binds to the wildcard address; that reveals nothing.
            SocketAddrUse::TcpBind => (implicit_bind(&addr), "TCP bind"),
            SocketAddrUse::UdpBind => (implicit_bind(&addr), "UDP bind"),
            SocketAddrUse::TcpConnect => (addrs.contains(&addr), "TCP connect"),
            SocketAddrUse::UdpSend => (addrs.contains(&addr), "UDP send"),
            SocketAddrUse::UdpReceive => (addrs.contains(&addr), "UDP receive"),
            SocketAddrUse::TcpListen => (false, "TCP listen"),
            SocketAddrUse::TcpAccept => (false, "TCP accept"),
        };
        if !allowed {
            let hint = match use_ {
                SocketAddrUse::TcpListen
                | SocketAddrUse::TcpAccept
                | SocketAddrUse::TcpBind
                | SocketAddrUse::UdpBind => {
                    "plugins may not listen or bind; no grant allows it".to_owned()
                }
                _ => format!("no grant allows it; add `grants.net = [\"{addr}\"]` to allow it"),
            };
            notice.deny(format!("denied {what} to {addr}: {hint}"));
        }
        Box::pin(async move { allowed })
    });
}

/// The wildcard bind to an ephemeral port that a connect performs first. It exposes nothing on
/// its own (listening, accepting and receiving are checked separately), and allowing it lets the
/// connect itself reach the check, so a refusal names the grant that would allow it.
fn implicit_bind(addr: &SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}
