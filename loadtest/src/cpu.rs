//! CPU time of processes, from `/proc/<pid>/stat`: the harness's own, and in
//! `bench` the replicas' and PostgreSQL's, so a reader sees what bounds
//! throughput on a shared machine.
//!
//! Times in `/proc` are in clock ticks of `USER_HZ`, which Linux fixes at
//! 100 per second for user space on every architecture.

use std::{fs, io, path::Path, time::Duration};

/// Clock ticks per second in `/proc/<pid>/stat` (Linux `USER_HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// A process (or a process and its children) whose CPU time is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuProbe {
    /// What the reader sees (`replica 1`, `postgresql`).
    pub name: String,
    /// Which processes.
    pub source: CpuSource,
}

/// Which processes a [`CpuProbe`] adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    /// This process (all its threads).
    Current,
    /// One process (all its threads).
    Process(u32),
    /// A process and its children, those already gone included (their
    /// time is in the parent's `cutime`/`cstime` once reaped): PostgreSQL's
    /// postmaster and its backends.
    Tree(u32),
}

impl CpuProbe {
    /// A probe of this process.
    pub fn current(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: CpuSource::Current,
        }
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let ticks = match self.source {
            CpuSource::Current => read_stat(Path::new("/proc/self/stat"))?.own(),
            CpuSource::Process(pid) => read_pid(pid)?.own(),
            CpuSource::Tree(pid) => tree_ticks(pid)?,
        };
        Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
    }
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    fn own(&self) -> u64 {
        self.utime + self.stime
    }

    fn with_reaped_children(&self) -> u64 {
        self.own() + self.cutime + self.cstime
    }
}

fn read_pid(pid: u32) -> io::Result<ProcStat> {
    read_stat(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

fn read_stat(path: &Path) -> io::Result<ProcStat> {
    let text = fs::read_to_string(path)?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not parse", path.display()),
        )
    })
}

/// Parses a `stat` line. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let fields: Vec<&str> = rest.split_whitespace().take(15).collect();
    let field = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(field(1)?).ok()?,
        utime: field(11)?,
        stime: field(12)?,
        cutime: field(13)?,
        cstime: field(14)?,
    })
}

/// Ticks of `root`, its reaped children, and its live children.
fn tree_ticks(root: u32) -> io::Result<u64> {
    let mut ticks = read_pid(root)?.with_reaped_children();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: skip the ones gone.
        if let Ok(stat) = read_pid(pid)
            && stat.ppid == root
        {
            ticks += stat.with_reaped_children();
        }
    }
    Ok(ticks)
}

/// CPU time of the whole machine so far, from the first line of
/// `/proc/stat`: busy (everything but idle and I/O wait) and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTime {
    /// Time some CPU was busy.
    pub busy: Duration,
    /// Time of every CPU together.
    pub total: Duration,
    /// CPUs of the machine.
    pub cpus: usize,
}

impl MachineTime {
    /// The machine's CPU time now.
    pub fn now() -> io::Result<Self> {
        let text = fs::read_to_string("/proc/stat")?;
        parse_machine(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat does not parse"))
    }
}

/// Parses `cpu user nice system idle iowait irq softirq steal …`.
fn parse_machine(text: &str) -> Option<MachineTime> {
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    let duration = |ticks: u64| Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND);
    let cpus = text
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(MachineTime {
        busy: duration(busy),
        total: duration(busy + idle + iowait),
        cpus,
    })
}

/// The most memory this process has had resident (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_and_parentheses_do_not_shift_the_fields() {
        let line = "4242 (post (gres) x) S 17 4242 4242 0 -1 4194560 1200 0 0 0 250 75 30 12 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 17,
                utime: 250,
                stime: 75,
                cutime: 30,
                cstime: 12,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_time_counts_idle_and_io_wait_as_not_busy() {
        let stat = "cpu  100 5 45 800 50 0 0 0 0 0\ncpu0 50 2 20 400 25 0 0 0 0 0\ncpu1 50 3 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(
            parse_machine(stat),
            Some(MachineTime {
                busy: Duration::from_millis(1500),
                total: Duration::from_millis(10_000),
                cpus: 2,
            })
        );
        assert_eq!(parse_machine("cpu 1 2"), None);
        assert!(MachineTime::now().is_ok());
    }

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(CpuProbe::current("self").cpu_time().is_ok());
        let tree = CpuProbe {
            name: "self".into(),
            source: CpuSource::Tree(std::process::id()),
        };
        assert!(tree.cpu_time().is_ok());
        assert!(peak_rss_bytes().is_some_and(|bytes| bytes > 0));
    }
}
