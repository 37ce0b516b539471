//! The agent's only `unsafe`: an AF_PACKET socket bound to one interface
//! with virtio-net headers. `nix` wraps the socket call but neither a
//! `sockaddr_ll` for `bind` nor the packet-socket options, and the AF_PACKET
//! crates lack `PACKET_VNET_HDR`; these calls, and handing the descriptor
//! to tokio's reactor, are all that is missing.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::io::unix::AsyncFd;

/// `linux/if_packet.h`.
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket for the duration of the call; the option
    // value is a live `c_int` and its exact size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking AF_PACKET socket that sees every frame interface
/// `ifindex` receives (not those sent on it: its own and the host's) and
/// sends frames out of it, each read and write led by a virtio-net header
/// (GSO and checksum offload, as on a TAP with `IFF_VNET_HDR`).
///
/// The socket is made with no protocol, so it hears nothing until it is
/// bound to the one interface: no frame of another interface can slip in
/// between.
pub fn packet_socket(ifindex: u32) -> io::Result<AsyncFd<OwnedFd>> {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    set_int(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    set_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    let ifindex = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
    // SAFETY: `sockaddr_ll` is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a fully initialised `sockaddr_ll` that outlives the
    // call, and its size is passed with it; `fd` is an open socket.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the `OwnedFd` moves into the `AsyncFd` and is only closed when
    // the `AsyncFd` drops it, so the descriptor stays open and the same for
    // the registration's whole life (what `register` requires).
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}
