//! One agent per node: the pin directory is locked (`flock`) before the
//! agent touches any kernel state, and a socket someone answers on is
//! refused before that too. A second `knet-agent run` leaves the first
//! one's maps, routes and links exactly as they are.

use std::{fs::File, path::Path};

use anyhow::{bail, Context, Result};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Held for the agent's lifetime; the kernel drops the lock when the
/// process ends, however it ends.
pub struct InstanceLock {
    _pin_dir: Flock<File>,
}

/// Takes the pin directory for this process, or says who has it.
pub fn acquire(pin_dir: &Path, socket: &Path) -> Result<InstanceLock> {
    // Another pin directory but the same socket: that agent is alive too.
    // Checked first, so a refused agent leaves nothing behind.
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        bail!("another knet-agent is serving on {}; this one changes nothing and exits", socket.display());
    }
    std::fs::create_dir_all(pin_dir).with_context(|| format!("cannot create {}", pin_dir.display()))?;
    let dir = File::open(pin_dir).with_context(|| format!("cannot open {}", pin_dir.display()))?;
    let lock = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "another knet-agent is running on {} (it holds the directory's lock); this one changes nothing and exits",
            pin_dir.display()
        ),
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", pin_dir.display())),
    };
    Ok(InstanceLock { _pin_dir: lock })
}
