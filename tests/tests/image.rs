//! The archive `cargo xtask image` writes is an image a real containerd
//! imports under the DaemonSet's image name and runs with runc: the agent
//! and `nft` start in it (their shared libraries and loader are there).
//!
//! Ignored by default: it needs the release build and the archive, which
//! `cargo xtask test` does not make. Run it as root after `cargo xtask
//! image` with `cargo test -p knet-tests --test image -- --ignored`.
//!
//! containerd runs as ../shared/toolchain.md says: in a network namespace
//! of the test's, in mount and pid namespaces of its own (`/run` and
//! `/var/lib` fresh tmpfs mounts there, so the shim sockets and fifos that
//! containerd 1.6 puts at fixed paths never reach the host), with root,
//! state and sockets in a directory of the test's. `ctr` runs inside those
//! namespaces too. On drop, also on panic: containerd is killed (pid 1 of
//! its namespace, so shims and containers go with it), then the cgroups
//! made for the container, bottom-up, then the directory and the network
//! namespace.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use knet_tests::{cni::TempDir, netns::unique_name, wait, Netns};

const NAMESPACE: &str = "k8s.io";

/// Run as pid 1 of containerd's namespaces, with the config as `$1`;
/// `mount -n` leaves the host's `/run/mount/utab` alone.
const PRIVATE_RUN_THEN_CONTAINERD: &str = concat!(
    "mount -n -t tmpfs -o mode=0755 knet-run /run",
    " && mount -n -t tmpfs -o mode=0755 knet-var-lib /var/lib",
    " && exec containerd --config \"$1\"",
);

/// A containerd of the test's own, torn down on drop. Fields drop in
/// order: the process, then its directory, then the network namespace.
struct ThrowAwayContainerd {
    /// The `unshare` process (nsenter execs it); containerd is its child.
    child: Option<Child>,
    /// containerd's pid as the host sees it.
    pid: u32,
    /// The cgroup parent of the containers this test runs.
    cgroup: String,
    dir: TempDir,
    // Held for its drop, after everything that runs inside it.
    _netns: Netns,
}

impl ThrowAwayContainerd {
    fn start() -> Result<Self> {
        let netns = Netns::new("img")?;
        let dir = TempDir::new("img-containerd")?;
        let config = dir.0.join("config.toml");
        std::fs::write(&config, config_toml(&dir.0))?;
        let log = std::fs::File::create(dir.0.join("containerd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", netns.name()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"])
            .args(["--mount-proc", "--", "sh", "-c", PRIVATE_RUN_THEN_CONTAINERD, "sh"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start containerd (nsenter, unshare)")?;
        let mut c = ThrowAwayContainerd { child: Some(child), pid: 0, cgroup: unique_name("img"), dir, _netns: netns };
        c.wait_ready().map_err(|e| anyhow::anyhow!("{e:#}\n--- containerd log ---\n{}", c.log()))?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let unshare = self.child.as_ref().context("no child")?.id();
        self.pid = wait::until("containerd to be forked", Duration::from_secs(10), || {
            let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })?;
        let child = self.child.as_mut().context("no child")?;
        let socket = self.dir.0.join("containerd.sock");
        wait::until("containerd to answer", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(anyhow::anyhow!("containerd exited ({status}) while starting")));
            }
            if !socket.exists() {
                return None;
            }
            let out = ctr_in(self.pid, &socket, &["version"]).ok()?;
            out.status.success().then_some(Ok(()))
        })?
    }

    /// `ctr -n k8s.io --address <socket> args...` inside containerd's
    /// namespaces; stdout, or an error quoting stderr.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = ctr_in(self.pid, &self.dir.0.join("containerd.sock"), args)?;
        if !out.status.success() {
            bail!("`ctr {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `argv` with `env` (`NAME=value`) in a new container of `image`
    /// (removed when it exits), in this test's cgroup parent, with a bound
    /// on how long it may take; its output. The output goes to a file, so
    /// the container gets no stdin (ctr never closes a piped one, and the
    /// CNI plugin reads stdin to its end).
    fn run(&self, image: &str, env: &[&str], argv: &[&str]) -> Result<String> {
        let id = unique_name("run");
        let cgroup = format!("/{}/{id}", self.cgroup);
        let output = self.dir.0.join(format!("{id}.out"));
        let log_uri = format!("file://{}", output.display());
        let mut args = vec!["run", "--rm", "--cgroup", &cgroup, "--log-uri", &log_uri];
        for e in env {
            args.extend(["--env", e]);
        }
        args.extend([image, &id]);
        args.extend_from_slice(argv);
        let out = ctr_in(self.pid, &self.dir.0.join("containerd.sock"), &args)?;
        let printed = std::fs::read_to_string(&output).unwrap_or_default();
        if !out.status.success() {
            bail!(
                "`ctr run {}` failed ({}): {}{printed}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(printed)
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if self.pid != 0 {
            // pid 1 of its pid namespace: the kernel ends shims and
            // containers with it.
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
        if wait::until("containerd's unshare to exit", Duration::from_secs(10), || child.try_wait().ok().flatten())
            .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// rmdir of this test's cgroup trees in every hierarchy, deepest first.
    fn remove_cgroups(&self) {
        let mut roots = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup)];
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(hierarchies.flatten().map(|h| h.path().join(&self.cgroup)));
        }
        for root in roots.into_iter().filter(|r| r.is_dir()) {
            let removed = wait::until(&format!("{} to be removable", root.display()), Duration::from_secs(10), || {
                remove_cgroup_tree(&root).ok()
            });
            if let Err(e) = removed {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

impl Drop for ThrowAwayContainerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- containerd log (last 40 lines) ---\n{}", self.log());
        }
        self.kill();
        self.remove_cgroups();
        // Then `dir` and `netns`, with their fields.
    }
}

fn in_namespaces(pid: u32, program: &str, args: &[&str]) -> Result<Output> {
    Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--net", "--pid", "--", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run nsenter")
}

fn ctr_in(pid: u32, socket: &Path, args: &[&str]) -> Result<Output> {
    let socket = socket.to_str().context("socket path")?;
    // ctr passes SIGTERM on to the container, whose pid 1 may ignore it.
    let mut full = vec!["--kill-after=5s", "30s", "ctr", "-n", NAMESPACE, "--address", socket];
    full.extend_from_slice(args);
    in_namespaces(pid, "timeout", &full)
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Every path containerd's own, no CRI (nothing here needs it), overlayfs
/// snapshots.
fn config_toml(dir: &Path) -> String {
    let p = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = p("root"),
        state = p("state"),
        socket = p("containerd.sock"),
        ttrpc = p("containerd.ttrpc.sock"),
        opt = p("opt"),
    )
}

/// `target/image/knet-<version>.oci.tar`, or `KNET_IMAGE_ARCHIVE`.
fn archive() -> PathBuf {
    let path = std::env::var_os("KNET_IMAGE_ARCHIVE").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/image")
            .join(format!("knet-{}.oci.tar", env!("CARGO_PKG_VERSION")))
    });
    assert!(path.exists(), "no image archive at {}: run `cargo xtask image` first", path.display());
    path
}

#[test]
#[ignore = "needs `cargo xtask image` first (a release build); run with --ignored as root"]
fn containerd_imports_the_image_under_its_name_and_runs_the_agent_and_nft() {
    let image = format!("localhost/knet:{}", env!("CARGO_PKG_VERSION"));
    let archive = archive();
    let c = ThrowAwayContainerd::start().unwrap();
    c.ctr(&["images", "import", archive.to_str().unwrap()]).unwrap();
    let names = c.ctr(&["images", "ls", "-q"]).unwrap();
    assert!(names.lines().any(|l| l == image), "{image} not among the imported images:\n{names}");

    let version = c.run(&image, &[], &["/usr/local/bin/knet-agent", "--version"]).unwrap();
    assert_eq!(version.trim(), format!("knet-agent {}", env!("CARGO_PKG_VERSION")));
    let nft = c.run(&image, &[], &["/usr/sbin/nft", "--version"]).unwrap();
    assert!(nft.starts_with("nftables v"), "{nft}");
    // The plugin answers VERSION without an agent, as any CNI plugin does.
    let plugin = c.run(&image, &["CNI_COMMAND=VERSION"], &["/usr/local/bin/knet"]).unwrap();
    let versions: serde_json::Value = serde_json::from_str(&plugin).unwrap();
    assert!(versions["supportedVersions"].as_array().is_some_and(|v| v.contains(&"1.0.0".into())), "{plugin}");
}
