//! The standard `process_*` series of a Prometheus client, read from Linux's `/proc` when
//! scraped (nothing on other systems).

use super::Snapshot;

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, 100 on every Linux build.
const TICKS_PER_SECOND: f64 = 100.0;

/// Adds `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds` and
/// `process_start_time_seconds`, those that can be read.
pub(crate) fn process_series(out: &mut Snapshot) {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    // The fields after the command (which may hold spaces) start after its closing paren:
    // state is field 3, utime 14, stime 15, starttime 22.
    let stat = read("/proc/self/stat");
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        out.counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            (user + system) / TICKS_PER_SECOND,
        );
    }
    let status = read("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k * 1024.0)
    };
    if let Some(rss) = kib("VmRSS:") {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some(virt) = kib("VmSize:") {
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            virt,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = read("/proc/self/limits").and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
    });
    if let Some(max) = max_fds {
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    let boot = read("/proc/stat").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS_PER_SECOND,
        );
    }
}
