//! Embeds the eBPF object that `cargo xtask build-ebpf` produced.
//!
//! The object comes from `KNET_EBPF_OBJECT` (xtask sets it) or from where
//! xtask writes it. Without one, the agent still builds, so that a plain
//! `cargo build` never needs the BPF target, and it says at start-up how to
//! get a working build.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(knet_ebpf_embedded)");
    println!("cargo::rerun-if-env-changed=KNET_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpfel-unknown-none/release/knet");
    let source = env::var_os("KNET_EBPF_OBJECT").map(PathBuf::from).unwrap_or(default);
    println!("cargo::rerun-if-changed={}", source.display());

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("knet.bpf.o");
    match fs::read(&source) {
        Ok(bytes) => {
            fs::write(&out, bytes).expect("write eBPF object to OUT_DIR");
            println!("cargo::rustc-cfg=knet_ebpf_embedded");
        }
        Err(_) => {
            fs::write(&out, []).expect("write empty eBPF object to OUT_DIR");
            println!(
                "cargo::warning=no eBPF object at {}: this knet-agent cannot load its data path; build with `cargo xtask build`",
                source.display()
            );
        }
    }
}
