//! Figures taken of a run: percentiles of samples, and what a process has
//! used (resident memory, CPU time, descriptors) as the kernel accounts it.

use anyhow::{Context, Result};

/// p-th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// A process's use of the machine, from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident memory now (VmRSS), MiB.
    pub rss_mib: f64,
    /// The most it was ever resident (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User plus system CPU time since it started, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub fds: usize,
}

impl Usage {
    pub fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        Ok(Usage {
            rss_mib: status_kib(&status, "VmRSS:")? / 1024.0,
            peak_rss_mib: status_kib(&status, "VmHWM:")? / 1024.0,
            cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
            fds,
        })
    }
}

fn status_kib(status: &str, field: &str) -> Result<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/PID/status"))
}

/// utime + stime of a /proc/PID/stat line (fields 14 and 15, counted
/// after the parenthesised command name, which may contain spaces).
fn cpu_ticks(stat: &str) -> Result<u64> {
    let after = stat.rsplit_once(')').context("no command name in /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14.
    let tick = |i: usize| -> Result<u64> { fields.get(i - 3).context("short /proc/PID/stat")?.parse().context("stat") };
    Ok(tick(14)? + tick(15)?)
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn cpu_time_counts_past_a_command_name_with_spaces() {
        let stat = "42 (knet agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 10 1000 200";
        assert_eq!(cpu_ticks(stat).unwrap(), 300);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let u = Usage::of(std::process::id()).unwrap();
        assert!(u.rss_mib > 0.0 && u.peak_rss_mib >= u.rss_mib && u.fds >= 3, "{u:?}");
    }
}
