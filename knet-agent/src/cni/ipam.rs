//! The IPAM plugin, run the way libcni runs a delegate: found by name in
//! `CNI_PATH`, given the same network configuration on stdin and the same
//! `CNI_*` variables with `CNI_COMMAND` set, bounded in time.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::io::AsyncWriteExt;

use super::spec::{code, CniError, CniResult, ErrorJson};

/// How long an IPAM plugin may take (host-local takes milliseconds; a
/// stuck one must not hang the runtime).
const IPAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The first executable file named `plugin` in the `CNI_PATH` directories.
pub fn find(plugin: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    cni_path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "IPAM plugin {plugin:?} (ipam.type) not found in CNI_PATH {}",
                    cni_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
                ),
            )
        })
}

/// Runs `plugin` with `CNI_COMMAND=command`; its parsed result for ADD,
/// `None` for DEL and CHECK. A plugin error keeps the plugin's own code.
pub async fn exec(plugin: &Path, command: &str, netconf: &[u8]) -> Result<Option<CniResult>, CniError> {
    let name = plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let io_err = |what: &str, e: std::io::Error| {
        CniError::new(code::IO, format!("IPAM plugin {name}: {what}")).with_details(e.to_string())
    };
    let mut child = tokio::process::Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io_err("cannot start", e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = netconf.to_vec();
    let writer = tokio::spawn(async move {
        // A plugin that exits without reading closes the pipe; its exit
        // status tells what happened.
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(IPAM_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("IPAM plugin {name} {command} did not finish within {IPAM_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| io_err("wait failed", e))?;
    let _ = writer.await;
    if !out.status.success() {
        return Err(match serde_json::from_slice::<ErrorJson>(&out.stdout) {
            Ok(e) => CniError::from_plugin(&format!("IPAM plugin {name} {command}"), e),
            Err(_) => CniError::new(code::IPAM_RESULT, format!("IPAM plugin {name} {command} failed ({})", out.status))
                .with_details(format!(
                    "stdout: {} stderr: {}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(code::IPAM_RESULT, format!("IPAM plugin {name} printed no CNI result"))
            .with_details(format!("{e}: {}", String::from_utf8_lossy(&out.stdout).trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_only_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("knet-ipam-find-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("plain"), "x").unwrap();
        std::fs::write(b.join("plain"), "x").unwrap();
        std::fs::set_permissions(b.join("plain"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = find("plain", &[a.clone(), b.clone()]);
        let missing = find("nope", &[a.clone(), b.clone()]);
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(found.unwrap(), b.join("plain"));
        let err = missing.unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.msg.contains("\"nope\""), "{err}");
    }
}
