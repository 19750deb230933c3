//! The IPAM plugin, run the way libcni runs a delegate: found by name in
//! `CNI_PATH`, given the same network configuration on stdin and the same
//! `CNI_*` variables with `CNI_COMMAND` set, bounded in time.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::spec::{code, is_supported, parse_prev_result, parse_version, CniError, CniResult, ErrorJson};

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

/// The IPAM plugin of one invocation and the configuration it is given.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub plugin: PathBuf,
    /// The network configuration, at a version the plugin speaks.
    conf: Vec<u8>,
}

impl Ipam {
    /// `plugin_type` from `CNI_PATH`, given the configuration as it came,
    /// unless the configuration is newer than 1.0.0 and the plugin does not
    /// list its version (Debian's host-local stops at 1.0.0): then it gets
    /// it at the newest version it lists, which knet reads as well. Its
    /// answer converts to the newer format losslessly (1.1.0 only adds
    /// fields). Runs nothing but VERSION.
    pub async fn prepare(
        plugin_type: &str,
        cni_path: &[PathBuf],
        conf_version: &str,
        stdin: &[u8],
    ) -> Result<Self, CniError> {
        let plugin = find(plugin_type, cni_path)?;
        if parse_version(conf_version).is_some_and(|v| v <= (1, 0, 0)) {
            return Ok(Ipam { plugin, conf: stdin.to_vec() });
        }
        let probe = format!(r#"{{"cniVersion":{conf_version:?}}}"#);
        let answer = run(&plugin, "VERSION", probe.as_bytes()).await?;
        let name = plugin_name(&plugin);
        let info: PluginVersions = serde_json::from_slice(&answer).map_err(|e| {
            CniError::new(code::IPAM_RESULT, format!("IPAM plugin {name} answered VERSION with no version list"))
                .with_details(format!("{e}: {}", String::from_utf8_lossy(&answer).trim()))
        })?;
        let Some(version) = delegate_version(conf_version, &info.supported_versions) else {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "IPAM plugin {name} supports {:?}, none of them {conf_version} or an older version knet reads",
                    info.supported_versions
                ),
            ));
        };
        let conf = if version == conf_version { stdin.to_vec() } else { at_version(stdin, &version)? };
        Ok(Ipam { plugin, conf })
    }

    /// Runs the plugin with `CNI_COMMAND=command`; its parsed result for
    /// ADD, `None` for DEL and CHECK. A plugin error keeps the plugin's own
    /// code.
    pub async fn exec(&self, command: &str) -> Result<Option<CniResult>, CniError> {
        let out = run(&self.plugin, command, &self.conf).await?;
        if command != "ADD" {
            return Ok(None);
        }
        serde_json::from_slice(&out).map(Some).map_err(|e| {
            CniError::new(code::IPAM_RESULT, format!("IPAM plugin {} printed no CNI result", plugin_name(&self.plugin)))
                .with_details(format!("{e}: {}", String::from_utf8_lossy(&out).trim()))
        })
    }
}

#[derive(Deserialize)]
struct PluginVersions {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
}

/// The version to delegate a `conf_version` configuration at: its own if
/// the plugin lists it, else the newest older one that knet also speaks.
fn delegate_version(conf_version: &str, supported: &[String]) -> Option<String> {
    if supported.iter().any(|v| v == conf_version) {
        return Some(conf_version.to_string());
    }
    let limit = parse_version(conf_version)?;
    supported
        .iter()
        .filter(|v| is_supported(v))
        .filter_map(|v| Some((parse_version(v)?, v)))
        .filter(|(parsed, _)| *parsed <= limit)
        .max()
        .map(|(_, v)| v.clone())
}

/// The configuration with `cniVersion` (and its `prevResult`'s format)
/// set to `version`.
pub fn at_version(stdin: &[u8], version: &str) -> Result<Vec<u8>, CniError> {
    let decode = |e: serde_json::Error| {
        CniError::new(code::DECODE, "the network configuration is not a JSON object").with_details(e.to_string())
    };
    let mut conf: Map<String, Value> = serde_json::from_slice(stdin).map_err(decode)?;
    conf.insert("cniVersion".into(), Value::from(version));
    if let Some(prev) = conf.get_mut("prevResult").filter(|p| p.is_object()) {
        let result = parse_prev_result(prev.clone())?;
        *prev = serde_json::to_value(result.for_version(version)).expect("CNI types serialize");
    }
    Ok(serde_json::to_vec(&conf).expect("JSON serializes"))
}

fn plugin_name(plugin: &Path) -> String {
    plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Runs `plugin` with `CNI_COMMAND=command` and `netconf` on stdin,
/// bounded; its stdout if it exits 0, its error (with its own code) if not.
async fn run(plugin: &Path, command: &str, netconf: &[u8]) -> Result<Vec<u8>, CniError> {
    let name = plugin_name(plugin);
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
    Ok(out.stdout)
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

    fn versions(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn delegates_at_the_configurations_version_or_the_newest_older_one_knet_reads() {
        let host_local = versions(&["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]);
        assert_eq!(delegate_version("1.1.0", &host_local).as_deref(), Some("1.0.0"));
        assert_eq!(delegate_version("1.0.0", &host_local).as_deref(), Some("1.0.0"));
        assert_eq!(delegate_version("1.1.0", &versions(&["1.0.0", "1.1.0"])).as_deref(), Some("1.1.0"));
        // 0.2.0 results are not a format knet reads.
        assert_eq!(delegate_version("1.1.0", &versions(&["0.1.0", "0.2.0"])), None);
        assert_eq!(delegate_version("1.1.0", &versions(&["2.0.0"])), None);
    }

    #[test]
    fn a_configuration_at_an_older_version_carries_its_prev_result_in_that_format() {
        let conf = br#"{"cniVersion":"1.1.0","name":"n","type":"knet","ipam":{"type":"host-local"},
            "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.244.0.5/32"}],
            "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1","mtu":1450}]}}"#;
        let v: Value = serde_json::from_slice(&at_version(conf, "1.0.0").unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["ipam"], serde_json::json!({"type": "host-local"}));
        assert_eq!(v["prevResult"]["cniVersion"], "1.0.0");
        assert_eq!(v["prevResult"]["routes"], serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
        let bare: Value = serde_json::from_slice(&at_version(br#"{"cniVersion":"1.1.0"}"#, "1.0.0").unwrap()).unwrap();
        assert_eq!(bare, serde_json::json!({"cniVersion": "1.0.0"}));
    }
}
