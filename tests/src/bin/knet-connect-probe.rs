//! Tries to connect to a Unix socket as fast as it can for a while and
//! prints how many connections succeeded. The tests run it as an
//! unprivileged user (`setpriv`) to prove an API socket is never open to
//! one, not even for the moment between bind and chmod.
//!
//! Usage: knet-connect-probe SOCKET MILLISECONDS

use std::{
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(ms)) = (args.next(), args.next().and_then(|m| m.parse::<u64>().ok())) else {
        eprintln!("usage: knet-connect-probe SOCKET MILLISECONDS");
        std::process::exit(2);
    };
    let deadline = Instant::now() + Duration::from_millis(ms);
    let (mut attempts, mut connected) = (0u64, 0u64);
    while Instant::now() < deadline {
        attempts += 1;
        if UnixStream::connect(&socket).is_ok() {
            connected += 1;
        }
    }
    println!("{connected} {attempts}");
}
