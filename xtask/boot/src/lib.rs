//! The part of knet's workflows that must build on a machine with only
//! Rust: the Debian tools they run, and how to install them.

pub mod packages;

/// Prints a step the way every xtask command reports progress.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}
