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

/// Busy and total time of each CPU so far, from `/proc/stat`, in clock
/// ticks. Busy is what the CPU spent on work: user, system, hard and soft
/// interrupts. Niced user time (background builds on a shared machine),
/// idle, iowait and steal are not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTimes {
    /// (busy, total) per CPU, by CPU number.
    pub per_cpu: Vec<(u64, u64)>,
}

impl CpuTimes {
    pub fn now() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        Self::parse(&text).context("/proc/stat has no per-CPU lines")
    }

    /// The `cpuN user nice system idle iowait irq softirq steal ...` lines.
    pub fn parse(text: &str) -> Option<Self> {
        let mut per_cpu = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(n) = words.next().and_then(|w| w.strip_prefix("cpu")).filter(|n| !n.is_empty()) else {
                continue;
            };
            let n: usize = n.parse().ok()?;
            let v: Vec<u64> = words.take(8).map(|w| w.parse().ok()).collect::<Option<_>>()?;
            let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else { return None };
            if per_cpu.len() <= n {
                per_cpu.resize(n + 1, (0, 0));
            }
            per_cpu[n] = (user + system + irq + softirq, user + nice + system + idle + iowait + irq + softirq + steal);
        }
        (!per_cpu.is_empty()).then_some(CpuTimes { per_cpu })
    }

    /// Busy seconds of `cpu` between `self` (earlier) and `later`.
    pub fn busy_seconds_until(&self, later: &CpuTimes, cpu: usize) -> f64 {
        let ticks = |t: &CpuTimes| t.per_cpu.get(cpu).map_or(0, |c| c.0);
        ticks(later).saturating_sub(ticks(self)) as f64 / clock_ticks_per_second()
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_niced_work() {
        let before =
            "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 100 50 20 1000 5 1 4 0 0 0\ncpu1 10 0 10 900 0 0 0 0 0 0\nintr 5\n";
        let after = "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 150 90 40 1010 5 2 9 0 0 0\ncpu1 10 0 10 1000 0 0 0 0 0 0\n";
        let (a, b) = (CpuTimes::parse(before).unwrap(), CpuTimes::parse(after).unwrap());
        assert_eq!(a.per_cpu[0], (125, 1180));
        // 50 user + 20 system + 1 irq + 5 softirq ticks; nice's 40 are not ours.
        assert!((a.busy_seconds_until(&b, 0) - 0.76).abs() < 1e-9);
        assert_eq!(a.busy_seconds_until(&b, 1), 0.0);
        assert_eq!(a.busy_seconds_until(&b, 7), 0.0, "a CPU that is not there did nothing");
        assert!(CpuTimes::parse("intr 5\n").is_none());
    }
}
