//! `cargo xtask image`: knet's container image, made offline from the
//! host's own release build, as an OCI image layout in one tar archive
//! (`target/image/knet-<version>.oci.tar`) for `ctr -n k8s.io images
//! import`. It holds what the Dockerfile's runtime stage holds for knet:
//! the two binaries, `nft` with every shared library it needs (and the
//! binaries' own, and the dynamic loader), `/etc/knet`, `/run` and `/tmp`.
//!
//! One uncompressed layer, so its digest is also its diff id; every entry
//! owned by root with mtime 0 and the entries sorted, so the same files
//! give the same digests.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{build, root, setup, step};

/// The image's repository; its tag is the workspace version. The
/// DaemonSet's image (`deploy/50-daemonset.yaml`) must be this name, which
/// `tests/tests/manifests.rs` checks by reading this line.
pub const REPOSITORY: &str = "localhost/knet";

/// Entrypoint and Cmd together are the DaemonSet's command.
const ENTRYPOINT: &[&str] = &["/usr/local/bin/knet-agent"];
const CMD: &[&str] = &["run", "--config", "/etc/knet/agent.toml"];
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent runs the `nft` CLI for its masquerade table.
const NFT: &str = "/usr/sbin/nft";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// `localhost/knet:<workspace version>`.
pub fn name() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

pub fn run() -> Result<()> {
    let archive = build()?;
    println!("{}", archive.display());
    Ok(())
}

/// Builds the release binaries and the image; the archive's path.
pub fn build() -> Result<PathBuf> {
    let bin_dir = build::all(&setup::ensure_ready()?, true)?;
    step("collecting the image's files (the binaries, nft, their shared libraries)");
    let mut files = vec![
        (bin_dir.join("knet-agent"), PathBuf::from("/usr/local/bin/knet-agent")),
        (bin_dir.join("knet"), PathBuf::from("/usr/local/bin/knet")),
        (PathBuf::from(NFT), PathBuf::from(NFT)),
    ];
    let mut libraries = Vec::new();
    for (binary, _) in &files {
        libraries.extend(shared_libraries(binary)?);
    }
    libraries.sort();
    libraries.dedup();
    files.extend(libraries.into_iter().map(|lib| (lib.clone(), lib)));

    let mut tree = Tree::default();
    for dir in ["/etc/knet", "/run"] {
        tree.dir(Path::new(dir), 0o755);
    }
    tree.dir(Path::new("/tmp"), 0o1777);
    for (source, target) in &files {
        // Read through symlinks: the loader's path (/lib64/...) is one on
        // the host, the image gets the file itself.
        let bytes = std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        let mode = std::fs::metadata(source)?.permissions().mode() & 0o777;
        tree.file(target, mode, bytes);
    }
    let layer = tree.into_tar()?;
    let layout = Layout::new(layer, &name(), oci_arch());

    let out = root().join("target/image").join(format!("knet-{}.oci.tar", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(out.parent().context("archive directory")?)?;
    let staged = out.with_extension("tar.partial");
    std::fs::write(&staged, layout.archive()?).with_context(|| format!("cannot write {}", staged.display()))?;
    std::fs::rename(&staged, &out)?;
    step(format!(
        "wrote {} ({} MiB, layer {}); import with `ctr -n k8s.io images import {}`",
        out.display(),
        std::fs::metadata(&out)?.len() / (1 << 20),
        layout.layer.digest,
        out.display()
    ));
    step(format!("image {}", name()));
    Ok(out)
}

/// The shared libraries `binary` loads, the dynamic loader included, as
/// `ldd` resolves them on this host.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: ldd says so and exits 1.
        if text.contains("not a dynamic executable") || String::from_utf8_lossy(&out.stderr).contains("not a dynamic") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// The absolute paths in `ldd`'s output: `name => /path (0x...)` and the
/// loader's `/path (0x...)`; the vDSO has no file. A library ldd cannot
/// find is an error naming it.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let resolved = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("{} is not found on this host", name.trim());
                }
                target
            }
            None => line,
        };
        let path = resolved.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// A layer's entries by path inside the image (relative, no leading `/`);
/// sorted, so every directory comes before what it holds.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
}

enum Entry {
    Dir { mode: u32 },
    File { mode: u32, bytes: Vec<u8> },
}

impl Tree {
    fn dir(&mut self, path: &Path, mode: u32) {
        self.parents(path);
        self.entries.insert(relative(path), Entry::Dir { mode });
    }

    fn file(&mut self, path: &Path, mode: u32, bytes: Vec<u8>) {
        self.parents(path);
        self.entries.insert(relative(path), Entry::File { mode, bytes });
    }

    fn parents(&mut self, path: &Path) {
        for parent in path.ancestors().skip(1).map(relative).filter(|p| !p.as_os_str().is_empty()) {
            self.entries.entry(parent).or_insert(Entry::Dir { mode: 0o755 });
        }
    }

    /// The layer as an uncompressed tar.
    fn into_tar(self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(mode);
                    header.set_size(0);
                    tar.append_data(&mut header, &path, std::io::empty())?;
                }
                Entry::File { mode, bytes } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(mode);
                    header.set_size(bytes.len() as u64);
                    tar.append_data(&mut header, &path, bytes.as_slice())?;
                }
            }
        }
        Ok(tar.into_inner()?)
    }
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

/// A content-addressed blob.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        Blob { digest: sha256_digest(&bytes), bytes }
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An OCI image layout of one image: its index and its three blobs.
struct Layout {
    index: Vec<u8>,
    manifest: Blob,
    config: Blob,
    layer: Blob,
}

impl Layout {
    fn new(layer: Vec<u8>, name: &str, arch: &str) -> Self {
        let layer = Blob::new(layer);
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {
                "Entrypoint": ENTRYPOINT,
                "Cmd": CMD,
                "Env": [PATH_ENV],
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        });
        let config = Blob::new(config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(CONFIG_TYPE),
            "layers": [layer.descriptor(LAYER_TYPE)],
        });
        let manifest = Blob::new(manifest.to_string().into_bytes());
        let tag = name.rsplit_once(':').map_or(name, |(_, tag)| tag);
        let mut descriptor = manifest.descriptor(MANIFEST_TYPE);
        descriptor["platform"] = json!({"architecture": arch, "os": "linux"});
        // containerd names the image from the first; OCI tools take the
        // tag from the second.
        descriptor["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        });
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor],
        });
        Layout { index: index.to_string().into_bytes(), manifest, config, layer }
    }

    /// The layout as one tar: `oci-layout`, `index.json`, `blobs/sha256/`.
    fn archive(&self) -> Result<Vec<u8>> {
        let mut tree = Tree::default();
        tree.file(Path::new("oci-layout"), 0o644, json!({"imageLayoutVersion": "1.0.0"}).to_string().into_bytes());
        tree.file(Path::new("index.json"), 0o644, self.index.clone());
        for blob in [&self.manifest, &self.config, &self.layer] {
            let hex = blob.digest.strip_prefix("sha256:").context("digest")?;
            tree.file(&Path::new("blobs/sha256").join(hex), 0o644, blob.bytes.clone());
        }
        tree.into_tar()
    }
}

/// The OCI name of this machine's architecture.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let (kind, mode) = (e.header().entry_type(), e.header().mode().unwrap());
                assert_eq!((e.header().uid().unwrap(), e.header().mtime().unwrap()), (0, 0), "{path}");
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                (path, kind, mode, bytes)
            })
            .collect()
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x00007f84)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f83)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f85)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libnftables.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let err = parse_ldd("\tlibmnl.so.0 => not found\n").unwrap_err().to_string();
        assert!(err.contains("libmnl.so.0"), "{err}");
    }

    #[test]
    fn layer_has_parents_first_and_fixed_metadata() {
        let mut tree = Tree::default();
        tree.dir(Path::new("/tmp"), 0o1777);
        tree.file(Path::new("/usr/local/bin/knet"), 0o755, b"plugin".to_vec());
        tree.file(Path::new("/lib64/ld-linux-x86-64.so.2"), 0o755, b"loader".to_vec());
        let got: Vec<_> = entries(&tree.into_tar().unwrap())
            .into_iter()
            .map(|(p, kind, mode, bytes)| (p, kind.is_dir(), mode, bytes))
            .collect();
        let dir = |p: &str, mode| (p.to_string(), true, mode, Vec::new());
        assert_eq!(
            got,
            vec![
                dir("lib64", 0o755),
                ("lib64/ld-linux-x86-64.so.2".into(), false, 0o755, b"loader".to_vec()),
                dir("tmp", 0o1777),
                dir("usr", 0o755),
                dir("usr/local", 0o755),
                dir("usr/local/bin", 0o755),
                ("usr/local/bin/knet".into(), false, 0o755, b"plugin".to_vec()),
            ]
        );
    }

    #[test]
    fn digests_tie_index_manifest_config_and_layer_together() {
        let layer = b"not really a tar, but bytes to hash".to_vec();
        let layout = Layout::new(layer.clone(), "localhost/knet:1.2.3", "amd64");

        let index = json(&layout.index);
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], sha256_digest(&layout.manifest.bytes));
        assert_eq!(m["size"], layout.manifest.bytes.len());
        assert_eq!(m["mediaType"], MANIFEST_TYPE);
        assert_eq!(m["annotations"]["io.containerd.image.name"], "localhost/knet:1.2.3");
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1.2.3");

        let manifest = json(&layout.manifest.bytes);
        assert_eq!(manifest["config"]["digest"], sha256_digest(&layout.config.bytes));
        assert_eq!(manifest["config"]["size"], layout.config.bytes.len());
        assert_eq!(manifest["layers"][0]["digest"], sha256_digest(&layer));
        assert_eq!(manifest["layers"][0]["size"], layer.len());
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_TYPE);

        let config = json(&layout.config.bytes);
        assert_eq!(config["rootfs"]["diff_ids"], json!([sha256_digest(&layer)]), "uncompressed: diff id = digest");
        let argv: Vec<&str> = ["Entrypoint", "Cmd"]
            .iter()
            .flat_map(|k| config["config"][k].as_array().unwrap())
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(argv, ["/usr/local/bin/knet-agent", "run", "--config", "/etc/knet/agent.toml"]);
        assert_eq!(config["config"]["Env"], json!([PATH_ENV]));
    }

    #[test]
    fn archive_holds_the_layout_under_the_blobs_digests() {
        let layout = Layout::new(b"layer".to_vec(), "localhost/knet:1.2.3", "amd64");
        let files: BTreeMap<String, Vec<u8>> = entries(&layout.archive().unwrap())
            .into_iter()
            .filter(|(_, kind, _, _)| !kind.is_dir())
            .map(|(p, _, _, bytes)| (p, bytes))
            .collect();
        assert_eq!(json(&files["oci-layout"]), json!({"imageLayoutVersion": "1.0.0"}));
        assert_eq!(files["index.json"], layout.index);
        for bytes in [&layout.manifest.bytes, &layout.config.bytes, &b"layer".to_vec()] {
            let path = format!("blobs/sha256/{}", sha256_digest(bytes).trim_start_matches("sha256:"));
            assert_eq!(&files[&path], bytes, "{path}");
        }
        assert_eq!(files.len(), 5);
    }

    #[test]
    fn the_name_is_the_repository_and_the_workspace_version() {
        assert_eq!(name(), format!("localhost/knet:{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
