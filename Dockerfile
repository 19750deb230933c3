# knet's image: knet-agent, the knet CNI plugin and nft, on Debian.
#
# The builder needs the network (crates.io for the crates and bpf-linker,
# Debian's packages, rustup's nightly): `docker build -t localhost/knet:0.1.0 .`
# where those are reachable. Without a network, `cargo xtask image` makes the
# same image from the host's own build, as an OCI archive.

FROM rust:1.95-bookworm AS builder
# The eBPF crate's toolchain; `cargo xtask build` does the rest of the
# set-up itself (Debian's tools, bpf-linker against this nightly's LLVM).
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN cargo xtask build --release

FROM debian:bookworm-slim
# The agent runs the `nft` CLI for its masquerade table.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/knet
COPY --from=builder /src/target/release/knet-agent /src/target/release/knet /usr/local/bin/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Together the DaemonSet's command (deploy/50-daemonset.yaml), which
# replaces both.
ENTRYPOINT ["/usr/local/bin/knet-agent"]
CMD ["run", "--config", "/etc/knet/agent.toml"]
