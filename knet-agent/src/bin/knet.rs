//! `knet`: the CNI plugin. A container runtime runs it with `CNI_*`
//! variables and the network configuration on stdin; see `knet_agent::cni`.

fn main() -> std::process::ExitCode {
    knet_agent::cni::main()
}
