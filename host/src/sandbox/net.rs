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
    builder.allow_ip_name_lookup(!allowed.is_empty());
    builder.socket_addr_check(move |addr, use_| {
        let (allowed, what) = match use_ {
            // Connecting first binds to the wildcard address; that reveals nothing.
            SocketAddrUse::TcpBind => (addr.ip().is_unspecified() && addr.port() == 0, "TCP bind"),
            SocketAddrUse::UdpBind => (addr.ip().is_unspecified() && addr.port() == 0, "UDP bind"),
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
