//! A CRI client as kubelet has one: containerd's `RuntimeService` and
//! `ImageService` over its gRPC Unix socket, every call bounded in time.

use std::{future::Future, path::Path, time::Duration};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient, ContainerConfig,
    ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use tokio::{net::UnixStream, runtime::Runtime};
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take (a RunPodSandbox includes CNI ADD, whose
/// own agent calls are bounded well below this).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The metadata kubelet gives a pod sandbox.
#[derive(Debug, Clone)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    // Last: the clients' connection tasks live on it.
    rt: Runtime,
}

impl Cri {
    /// Connects to `socket` and asks for the runtime's version (so a
    /// returned client is one the CRI plugin answers).
    pub fn connect(socket: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let path = socket.to_path_buf();
        let channel = rt.block_on(async {
            let connector = tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            });
            // The URI is a placeholder: the connector ignores it.
            let endpoint = Endpoint::try_from("http://[::1]:50051")?.connect_timeout(Duration::from_secs(5));
            tokio::time::timeout(CALL_TIMEOUT, endpoint.connect_with_connector(connector))
                .await
                .context("connecting timed out")?
                .context("cannot connect")
        })?;
        let cri =
            Cri { runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel), rt };
        cri.version()?;
        Ok(cri)
    }

    fn call<T>(&self, what: &str, fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
        // The timer must be made inside the runtime.
        match self.rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await }) {
            Ok(Ok(r)) => Ok(r.into_inner()),
            // The runtime's own words (CNI errors arrive in the message).
            Ok(Err(status)) => Err(anyhow::anyhow!("{what}: {:?}: {}", status.code(), status.message())),
            Err(_) => Err(anyhow::anyhow!("{what}: no answer within {CALL_TIMEOUT:?}")),
        }
    }

    /// The runtime's name and version, e.g. `containerd 1.6.20~ds1`.
    pub fn version(&self) -> Result<String> {
        let mut c = self.runtime.clone();
        let v = self.call("Version", c.version(VersionRequest { version: "v1".into() }))?;
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// Whether the image service knows `image`.
    pub fn has_image(&self, image: &str) -> Result<bool> {
        let mut c = self.images.clone();
        let req =
            ImageStatusRequest { image: Some(ImageSpec { image: image.into(), ..Default::default() }), verbose: false };
        Ok(self.call("ImageStatus", c.image_status(req))?.image.is_some())
    }

    /// The sandbox configuration kubelet sends for a pod without
    /// containers' extras (no ports, default DNS); `host_network` is a pod
    /// with `hostNetwork: true` (the node's network namespace).
    pub fn sandbox_config(meta: &PodMeta, cgroup_parent: &str, host_network: bool) -> PodSandboxConfig {
        let security_context = host_network.then(|| LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
            ..Default::default()
        });
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                namespace: meta.namespace.clone(),
                attempt: 0,
            }),
            // A host-network pod keeps the node's hostname (no UTS namespace).
            hostname: if host_network { String::new() } else { meta.name.clone() },
            labels: [
                ("io.kubernetes.pod.name", &meta.name),
                ("io.kubernetes.pod.namespace", &meta.namespace),
                ("io.kubernetes.pod.uid", &meta.uid),
            ]
            .map(|(k, v)| (k.to_string(), v.clone()))
            .into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox as kubelet sends it for a pod without containers'
    /// extras (no ports, default DNS); the sandbox id.
    pub fn run_pod_sandbox(&self, meta: &PodMeta, cgroup_parent: &str) -> Result<String> {
        self.run_sandbox(Self::sandbox_config(meta, cgroup_parent, false))
    }

    pub fn run_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        let mut c = self.runtime.clone();
        let req = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        Ok(self.call("RunPodSandbox", c.run_pod_sandbox(req))?.pod_sandbox_id)
    }

    /// CreateContainer then StartContainer in a sandbox; the container id.
    pub fn run_container(
        &self,
        sandbox: &str,
        sandbox_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let id = self.call("CreateContainer", c.create_container(req))?.container_id;
        self.call("StartContainer", c.start_container(StartContainerRequest { container_id: id.clone() }))?;
        Ok(id)
    }

    /// StopContainer: SIGTERM, SIGKILL after `timeout_s` (kubelet sends the
    /// pod's grace period).
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "StopContainer",
            c.stop_container(StopContainerRequest { container_id: id.into(), timeout: timeout_s }),
        )?;
        Ok(())
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatusResponse> {
        let mut c = self.runtime.clone();
        self.call(
            "ContainerStatus",
            c.container_status(ContainerStatusRequest { container_id: id.into(), verbose: false }),
        )
    }

    /// ExecSync, as kubelet runs an exec probe: (exit code, stdout, stderr).
    pub fn exec_sync(&self, id: &str, cmd: &[String], timeout_s: i64) -> Result<(i32, String, String)> {
        let mut c = self.runtime.clone();
        let req = ExecSyncRequest { container_id: id.into(), cmd: cmd.to_vec(), timeout: timeout_s };
        let r = self.call("ExecSync", c.exec_sync(req))?;
        Ok((
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ))
    }

    /// PodSandboxStatus with the verbose info (containerd's JSON under
    /// `info`).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true };
        self.call("PodSandboxStatus", c.pod_sandbox_status(req))
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call("StopPodSandbox", c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }))?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call("RemovePodSandbox", c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }))?;
        Ok(())
    }

    /// The ids of every sandbox the runtime holds, ready or not.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<String>> {
        let mut c = self.runtime.clone();
        let items = self.call("ListPodSandbox", c.list_pod_sandbox(ListPodSandboxRequest { filter: None }))?.items;
        Ok(items.into_iter().map(|s| s.id).collect())
    }
}
