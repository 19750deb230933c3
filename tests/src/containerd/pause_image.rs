//! The sandbox image, made offline: our own pause (`tests/pause/pause.c`,
//! `gcc -static`) as the one layer of a hand-written OCI image layout,
//! archived for `ctr images import`. No registry is reachable from the
//! test machines.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{cmd, cni::TempDir};

/// The name the image is imported under and containerd's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "localhost/knet-pause:test";

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pause/pause.c");
/// This file: a change to how the image is made makes a new archive too.
const BUILDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/containerd/pause_image.rs");

/// The OCI archive of the pause image: built once per test process, and
/// kept under `target/` keyed by the digests of the pause source and of
/// this builder, so a later process reuses it.
pub fn archive() -> Result<&'static Path> {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = ARCHIVE.get() {
        return Ok(p);
    }
    let built = build()?;
    Ok(ARCHIVE.get_or_init(|| built))
}

fn build() -> Result<PathBuf> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/knet-pause-image");
    std::fs::create_dir_all(&cache)?;
    let (source, builder) = (sha256(Path::new(SOURCE))?, sha256(Path::new(BUILDER))?);
    let archive = cache.join(format!("pause-{}-{}-{}.tar", oci_arch(), &source[..12], &builder[..12]));
    if archive.exists() {
        return Ok(archive);
    }
    let work = TempDir::new("pause-image")?;
    let rootfs = work.0.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let pause = rootfs.join("pause");
    cmd::run("gcc", &["-static", "-O2", "-s", "-o", path_str(&pause)?, SOURCE])
        .context("building the static pause (needs gcc and libc6-dev)")?;

    let layout = work.0.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    // Uncompressed, so the layer's digest is also its diff id.
    let layer_tar = work.0.join("layer.tar");
    cmd::run(
        "tar",
        &[
            "--create",
            "--file",
            path_str(&layer_tar)?,
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
            path_str(&rootfs)?,
            "pause",
        ],
    )?;
    let layer = add_blob(&layout, &std::fs::read(&layer_tar)?)?;
    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    });
    let config = add_blob(&layout, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest, "size": layer.size}],
    });
    let manifest = add_blob(&layout, manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": PAUSE_IMAGE},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(layout.join("oci-layout"), json!({"imageLayoutVersion": "1.0.0"}).to_string())?;

    let tmp = work.0.join("image.tar");
    cmd::run(
        "tar",
        &["--create", "--file", path_str(&tmp)?, "-C", path_str(&layout)?, "oci-layout", "index.json", "blobs"],
    )?;
    // A rename within target/: another process finds the archive whole or
    // not at all.
    let staged =
        cache.join(format!(".{}.{}", std::process::id(), archive.file_name().context("name")?.to_string_lossy()));
    std::fs::copy(&tmp, &staged)?;
    std::fs::rename(&staged, &archive)?;
    Ok(archive)
}

struct Blob {
    digest: String,
    size: usize,
}

/// Stores `bytes` under `blobs/sha256/<digest>`.
fn add_blob(layout: &Path, bytes: &[u8]) -> Result<Blob> {
    let staged = layout.join("blob.tmp");
    std::fs::write(&staged, bytes)?;
    let hex = sha256(&staged)?;
    std::fs::rename(&staged, layout.join("blobs/sha256").join(&hex))?;
    Ok(Blob { digest: format!("sha256:{hex}"), size: bytes.len() })
}

/// The hex SHA-256 of a file, from coreutils' `sha256sum`.
fn sha256(path: &Path) -> Result<String> {
    let out = cmd::run("sha256sum", &[path_str(path)?])?;
    let hex = out.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 {
        bail!("sha256sum printed {out:?}");
    }
    Ok(hex.to_string())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The OCI name of this machine's architecture.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
