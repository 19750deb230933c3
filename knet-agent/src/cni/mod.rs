//! The `knet` CNI plugin (spec 1.1; configurations of 0.3.0 to 1.1.0): a
//! client of the agent's local API, never of the BPF maps.
//!
//! | file        | does                                                   |
//! |-------------|--------------------------------------------------------|
//! | `spec`      | CNI types: config, result, error codes (pure)          |
//! | `env`       | the `CNI_*` variables (pure)                           |
//! | `names`     | host veth names derived from the container (pure)      |
//! | `check`     | CHECK's comparison (pure)                              |
//! | `routes`    | the pod's routes and their MTUs (pure)                 |
//! | `conflist`  | the default `knet.conflist` (pure)                     |
//! | `ipam`      | running the IPAM plugin from `CNI_PATH`, at a version  |
//! |             | it speaks                                              |
//! | `netns`     | work inside the pod's namespace on a thread of its own |
//! | `wiring`    | the netlink work                                       |
//! | `agent`     | the agent's node view; registering endpoints           |
//! | `commands`  | ADD, DEL, CHECK, VERSION                               |

pub mod agent;
pub mod check;
pub mod commands;
pub mod conflist;
pub mod env;
pub mod ipam;
pub mod names;
pub mod netns;
pub mod routes;
pub mod spec;
pub mod wiring;

use std::{
    io::{Read, Write},
    process::ExitCode,
};

/// The plugin's `main`: the result (or nothing) on stdout and exit 0, or
/// the error JSON on stdout and exit 1. Diagnostics go to stderr.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = spec::version_of(&stdin).unwrap_or_else(|| spec::LATEST_VERSION.to_string());
    let outcome =
        match read {
            Ok(_) => commands::run(&|k: &str| std::env::var(k).ok(), &stdin),
            Err(e) => Err(spec::CniError::new(spec::code::IO, "cannot read the configuration on stdin")
                .with_details(e.to_string())),
        };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(text) => {
            if !text.is_empty() {
                let _ = writeln!(out, "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let json = serde_json::to_string(&e.to_json(&version)).expect("serializes");
            let _ = writeln!(out, "{json}");
            eprintln!("knet: {e}");
            ExitCode::FAILURE
        }
    }
}
