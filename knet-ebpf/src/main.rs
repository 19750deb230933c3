//! knet's TC programs. One file per attach point; all raw pointer work and
//! every other `unsafe` lives in `parse`.
#![no_std]
#![no_main]

mod deliver;
mod encap;
mod from_netdev;
mod from_pod;
mod maps;
mod parse;
mod to_netdev;
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
