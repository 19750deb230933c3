//! knet's TC programs. One file per attach point (`from_pod`,
//! `from_netdev`, `to_netdev`); the steps they share each have a module;
//! every `unsafe` lives in `raw`.
#![no_std]
#![no_main]

mod deliver;
mod diag;
mod drop_events;
mod from_netdev;
mod from_pod;
mod headers;
mod icmp;
mod raw;
mod remote;
mod router;
mod to_netdev;
mod tunnel;
mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists only
    // because `no_std` binaries must name a handler.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
