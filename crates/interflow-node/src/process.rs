//! The standard `process_*` metrics (CPU seconds, resident and virtual memory, open and
//! maximum file descriptors, start time), read from `/proc/self` on each scrape so dashboards
//! built for any Prometheus client work unchanged. Where `/proc` is missing (not Linux) the
//! collector reports nothing rather than failing the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, 100 on every Linux ABI.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// What one scrape reads from `/proc`.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

/// Fields of `/proc/self/stat` after the command name, which may itself hold spaces and `)`.
pub(crate) fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default()
}

fn parse(stat: &str, status: &str, proc_stat: &str, limits: &str) -> Sample {
    // Numbering of proc(5) from field 3 (state) on, so index = field number - 3.
    let f = stat_fields(stat);
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = match (field(14), field(15)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / TICKS_PER_SEC),
        _ => None,
    };
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.saturating_mul(1024))
    };
    let boot = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let start_time_seconds = match (boot, field(22)) {
        (Some(b), Some(ticks)) => Some(b as f64 + ticks as f64 / TICKS_PER_SEC),
        _ => None,
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<i64>().ok());
    Sample {
        cpu_seconds,
        resident_bytes: kb("VmRSS:"),
        virtual_bytes: kb("VmSize:"),
        start_time_seconds,
        open_fds: None,
        max_fds,
    }
}

fn read() -> Sample {
    let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut s = parse(
        &text("/proc/self/stat"),
        &text("/proc/self/status"),
        &text("/proc/stat"),
        &text("/proc/self/limits"),
    );
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
    s
}

/// Reads `/proc/self` on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_files_including_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (inter flow) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 1200 100000000 3000 18446744073709551615";
        let status = "Name:\tinterflow\nVmSize:\t  97656 kB\nVmRSS:\t   11720 kB\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let s = parse(stat, status, proc_stat, limits);
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.start_time_seconds, Some(1_700_000_012.0));
        assert_eq!(s.resident_bytes, Some(11720 * 1024));
        assert_eq!(s.virtual_bytes, Some(97656 * 1024));
        assert_eq!(s.max_fds, Some(1024));
    }

    #[test]
    fn missing_files_give_no_figures() {
        assert_eq!(parse("", "", "", ""), Sample::default());
    }
}
