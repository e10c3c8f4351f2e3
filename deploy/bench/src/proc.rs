//! Child processes: memory (VmHWM) and CPU sampling from /proc, bounded waits,
//! polite stops.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Child;

/// `VmHWM` and `VmRSS` of a process in KiB (None when it is gone).
pub fn mem_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

pub fn vm_hwm_kb_self() -> u64 {
    mem_kb(std::process::id()).map_or(0, |m| m.0)
}

/// Clock ticks per second for /proc/<pid>/stat (USER_HZ; 100 on Linux).
fn clk_tck() -> f64 {
    static T: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime = field 14, stime = field 15
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

/// Whole-machine busy/total jiffies from /proc/stat.
pub fn machine_cpu() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let l = s.lines().next()?;
    let v: Vec<f64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / clk_tck(), total / clk_tck()))
}

/// Pid from a pid file, if that process is alive.
pub fn pid_from_file(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Polls VmHWM of a process every `every` until it exits or the sampler is stopped;
/// keeps the last value seen (VmHWM only grows).
pub struct Sampler {
    hwm: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let hwm = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hwm.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                match mem_kb(pid) {
                    Some((hw, _)) => {
                        h.fetch_max(hw, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Sampler { hwm, stop }
    }

    pub fn hwm_kb(&self) -> u64 {
        self.hwm.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends SIGTERM (via kill(1): the workspace forbids unsafe code).
pub fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` up to `grace`; then SIGTERM and `grace` again; then SIGKILL.
/// Returns the exit status text.
pub async fn stop_child(
    child: &mut Child,
    name: &str,
    grace: Duration,
    term_first: bool,
) -> String {
    if term_first {
        if let Some(pid) = child.id() {
            sigterm(pid);
        }
    }
    if let Ok(Ok(st)) = tokio::time::timeout(grace, child.wait()).await {
        return st.to_string();
    }
    if let Some(pid) = child.id() {
        eprintln!("[bench] {name} (pid {pid}) still running after {grace:?}: SIGTERM");
        sigterm(pid);
    }
    if let Ok(Ok(st)) = tokio::time::timeout(grace, child.wait()).await {
        return st.to_string();
    }
    eprintln!("[bench] {name} did not stop: SIGKILL");
    let _ = child.kill().await;
    "killed".into()
}

/// Runs a command to completion with a timeout, failing with its output on error.
pub async fn run_checked(
    cmd: &mut tokio::process::Command,
    what: &str,
    timeout: Duration,
) -> Result<String> {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{what}: timeout after {timeout:?}"))?
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU seconds of the services around the pipeline, read at the start and end of a phase.
#[derive(Clone, Copy, Default)]
pub struct CpuMark {
    clickhouse: f64,
    kafka: f64,
    bench: f64,
    busy: f64,
}

pub struct Services {
    clickhouse: Option<u32>,
    kafka: Option<u32>,
}

impl Services {
    pub fn find() -> Services {
        let local = std::env::var("SOCIALCRM_LOCAL_DIR").unwrap_or_else(|_| ".local".into());
        Services {
            clickhouse: pid_from_file(&Path::new(&local).join("clickhouse/clickhouse-server.pid")),
            kafka: pid_from_file(&Path::new(&local).join("kafka/kafka.pid")),
        }
    }
    pub fn mark(&self) -> CpuMark {
        let (busy, _) = machine_cpu().unwrap_or_default();
        CpuMark {
            clickhouse: self.clickhouse.and_then(cpu_secs).unwrap_or(0.0),
            kafka: self.kafka.and_then(cpu_secs).unwrap_or(0.0),
            bench: cpu_secs(std::process::id()).unwrap_or(0.0),
            busy,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct CpuUse {
    /// CPU seconds per wall second (2.0 = both cores of this machine busy) of the
    /// process under test: the pipeline (a, c), the bare consumer/inserter (b1, b2).
    pub process: f64,
    pub collector: Option<f64>,
    pub clickhouse: f64,
    pub kafka: f64,
    /// The harness itself (polling, and in phase c the HTTP load generator).
    pub bench: f64,
    /// Whole machine, all processes.
    pub machine: f64,
    /// Machine minus everything above: other work on the machine during the phase
    /// (should be ~0; if not, the figures are disturbed).
    pub other: f64,
}

pub fn cpu_use(
    a: CpuMark,
    b: CpuMark,
    wall: f64,
    process_cpu: f64,
    collector_cpu: Option<f64>,
) -> CpuUse {
    let w = wall.max(1e-9);
    let mut u = CpuUse {
        process: process_cpu / w,
        collector: collector_cpu.map(|c| c / w),
        clickhouse: (b.clickhouse - a.clickhouse) / w,
        kafka: (b.kafka - a.kafka) / w,
        bench: (b.bench - a.bench) / w,
        machine: (b.busy - a.busy) / w,
        other: 0.0,
    };
    u.other =
        (u.machine - u.process - u.collector.unwrap_or(0.0) - u.clickhouse - u.kafka - u.bench)
            .max(0.0);
    u
}

/// CPU use over a stretch of work done by this very process (phases b1, b2).
pub struct SelfCpu {
    svc: Services,
    mark: CpuMark,
}

impl SelfCpu {
    pub fn start() -> SelfCpu {
        let svc = Services::find();
        let mark = svc.mark();
        SelfCpu { svc, mark }
    }
    pub fn finish(&self, wall: f64) -> CpuUse {
        let m = self.svc.mark();
        let mut u = cpu_use(self.mark, m, wall, m.bench - self.mark.bench, None);
        u.bench = 0.0;
        u.other = (u.machine - u.process - u.clickhouse - u.kafka).max(0.0);
        u
    }
}

/// The process whose command line contains `needle` (the first one found, not
/// this process), e.g. the local Kafka broker (`kafka.Kafka`).
pub fn find_pid(needle: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(needle)
            .then_some(pid)
    })
}
