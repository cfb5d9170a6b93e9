//! The floor under any UDP DNS server on this machine: receives requests with `recvmmsg` and
//! sends each straight back with the response bit set (`sendmmsg`), doing no DNS work at all.
//! `cargo xtask bench dns` runs it beside the real servers, so the table shows how much of a
//! query's cost is the kernel's path for one datagram in and one out.
//!
//! Usage: udp-floor ADDRESS:PORT

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

const BATCH: usize = 32;

fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: udp-floor ADDRESS:PORT"))?;
    let socket = std::net::UdpSocket::bind(&address)?;
    eprintln!("echoing on {address}");
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0_u8; 1232]; BATCH];
    let mut receiving = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut sending = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            match recvmmsg(
                fd,
                &mut receiving,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => received.extend(messages.map(|m| (m.bytes, m.address))),
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        for (index, &(length, _)) in received.iter().enumerate() {
            if length > 2 {
                buffers[index][2] |= 0x80;
            }
        }
        let to: Vec<Option<SockaddrStorage>> = received.iter().map(|&(_, a)| a).collect();
        let slices: Vec<[IoSlice<'_>; 1]> = received
            .iter()
            .zip(&buffers)
            .map(|(&(length, _), buffer)| [IoSlice::new(&buffer[..length])])
            .collect();
        let mut sent = 0;
        while sent < slices.len() {
            match sendmmsg(
                fd,
                &mut sending,
                &slices[sent..],
                &to[sent..],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => sent += 1,
            }
        }
    }
}
