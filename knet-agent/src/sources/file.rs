//! The static node file, watched by polling its content: editors replace
//! files rather than write them in place, which content polling survives
//! where an inotify watch on the old inode would not.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Mutex;

use crate::agent::Agent;

const POLL: Duration = Duration::from_millis(250);

/// Feeds every new version of `file` to the agent, until the task is
/// aborted. The first read is fed too: if the file changed while the agent
/// started, that is caught; if not, it is an empty difference.
pub async fn watch(file: PathBuf, agent: Arc<Mutex<Agent>>) {
    let mut last = String::new();
    let mut ticker = tokio::time::interval(POLL);
    loop {
        ticker.tick().await;
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(t) => t,
            Err(e) => {
                // A file being replaced can be missing for a moment; the
                // running state stays until a readable version appears.
                tracing::debug!(error = %e, file = %file.display(), "node file unreadable");
                continue;
            }
        };
        if text == last {
            continue;
        }
        last = text;
        // Errors are logged and reported by the agent; the state is kept.
        let _ = agent.lock().await.node_file_changed(&last).await;
    }
}
