//! Raw Ethernet frames put on a namespace's link as if a host there had
//! sent them, for traffic no well-behaved stack sends: forged VXLAN from
//! the underlay, headers that lie. Frames come from `frames`.
//!
//! The only `unsafe` of the harness: an AF_PACKET socket through `libc`.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// An AF_PACKET socket bound to one link of one namespace; closed on drop.
pub struct Injector {
    socket: OwnedFd,
    link: String,
}

impl Injector {
    /// A socket that sends on `link` inside `ns` (and never receives).
    pub fn open(ns: &Netns, link: &str) -> Result<Self> {
        let ifindex = ns.read(&format!("/sys/class/net/{link}/ifindex"))?;
        let ifindex: i32 = ifindex.trim().parse().with_context(|| format!("ifindex of {link}: {ifindex:?}"))?;
        // The socket belongs to the namespace it is opened in, whichever
        // thread uses it later.
        let socket = ns.run_in(|| packet_socket(ifindex))??;
        Ok(Injector { socket, link: format!("{link} in {}", ns.name()) })
    }

    /// Sends one whole frame (Ethernet header first) as it is.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: the pointer and length describe `frame`, which outlives
        // the call; the kernel only reads from it.
        let sent = unsafe { libc::send(self.socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("cannot send a frame on {}", self.link));
        }
        if sent as usize != frame.len() {
            bail!("sent {sent} of {} bytes on {}", frame.len(), self.link);
        }
        Ok(())
    }
}

/// An AF_PACKET raw socket bound to `ifindex` of the calling thread's
/// namespace. Protocol 0: it receives nothing.
fn packet_socket(ifindex: i32) -> Result<OwnedFd> {
    // SAFETY: a system call with constant arguments; it touches no memory.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot open an AF_PACKET socket (needs CAP_NET_RAW)");
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: 0,
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is a complete sockaddr_ll that lives across the call,
    // and `len` is its size; the kernel only reads it.
    let bound = unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) };
    if bound < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot bind to ifindex {ifindex}"));
    }
    Ok(socket)
}
