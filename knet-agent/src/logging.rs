//! The agent's log: `tracing` lines on stderr, as text or one JSON object
//! per line, filtered by the configured level unless RUST_LOG is set (an
//! operator's override wins over the file).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings, DEFAULT_LOG_LEVEL};

/// Installs the process's subscriber; once per process.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVEL));
    // Colours only for a person at a terminal, never into a log file.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match settings.format {
        LogFormat::Text => builder.init(),
        // Fields at the top level, so a log pipeline indexes `node`, `ip`
        // and `cause` without digging.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// For the commands other than `run`: text at the default level.
pub fn init_default() {
    init(&LogSettings { format: LogFormat::Text, filter: DEFAULT_LOG_LEVEL.into() })
}
