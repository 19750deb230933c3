//! Work inside a pod's network namespace, on a thread of its own: the
//! thread enters the namespace with setns(2), opens its netlink socket
//! there, runs the work on a runtime of its own and ends. No other thread
//! of the plugin ever leaves the node's namespace.

use std::{fs::File, future::Future, path::Path};

use nix::{
    sched::{setns, CloneFlags},
    sys::{
        stat::{fstat, stat},
        statfs::{fstatfs, NSFS_MAGIC},
    },
};
use rtnetlink::Handle;

use super::spec::{code, CniError};

/// Opens a network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`):
/// missing is "unknown container" (3), anything but a namespace file is
/// an invalid CNI_NETNS (4).
pub fn open(path: &Path) -> Result<File, CniError> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CniError::new(code::UNKNOWN_CONTAINER, format!("network namespace {} does not exist", path.display()))
        } else {
            CniError::new(code::INVALID_ENV, format!("cannot open CNI_NETNS {}", path.display()))
                .with_details(e.to_string())
        }
    })?;
    let is_nsfs = fstatfs(&file).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC);
    if !is_nsfs {
        return Err(CniError::new(code::INVALID_ENV, format!("CNI_NETNS {} is not a namespace file", path.display())));
    }
    Ok(file)
}

/// Refuses a `CNI_NETNS` that is the plugin's own network namespace or the
/// host's (pid 1's): wiring a "pod" there would rewire the node itself (a
/// default route into a veth, a /32 address). Compared by device and
/// inode, the identity of a namespace.
pub fn refuse_node_namespace(ns: &File, path: &Path) -> Result<(), CniError> {
    let target = fstat(ns).map_err(|e| {
        CniError::new(code::INVALID_ENV, format!("cannot stat CNI_NETNS {}", path.display()))
            .with_details(e.to_string())
    })?;
    for (own, what) in [("/proc/self/ns/net", "the plugin's own"), ("/proc/1/ns/net", "the host's")] {
        if let Ok(st) = stat(own) {
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino) {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_NETNS {} is {what} network namespace, not a pod's", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Runs `work` with a netlink handle inside the namespace `ns`.
pub async fn run_in<T, F, Fut>(ns: &File, work: F) -> Result<T, CniError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, CniError>>,
{
    let ns = ns
        .try_clone()
        .map_err(|e| CniError::new(code::IO, "cannot duplicate the netns descriptor").with_details(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("knet-podns".into())
        .spawn(move || {
            let _ = tx.send(enter_and_run(ns, work));
        })
        .map_err(|e| CniError::new(code::IO, "cannot start a thread").with_details(e.to_string()))?;
    rx.await.unwrap_or_else(|_| Err(CniError::new(code::IO, "the thread working in the pod's namespace died")))
}

fn enter_and_run<T, F, Fut>(ns: File, work: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
        CniError::new(code::INVALID_ENV, "CNI_NETNS is not a network namespace knet can enter")
            .with_details(e.to_string())
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, "cannot build a runtime").with_details(e.to_string()))?;
    runtime.block_on(async move {
        let handle = super::wiring::connect()?;
        work(handle).await
    })
}
