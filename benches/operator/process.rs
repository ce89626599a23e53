//! The operator as a separate process, the way it runs in a pod: started from the binary cargo
//! built for this bench, read through its `/metrics` and `/readyz`, and measured through `/proc`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running operator; killed when dropped, so an aborted bench leaves nothing behind.
pub struct Operator {
    child: Child,
    address: String,
    /// When the process was spawned: the start of every "time until" figure.
    pub started: Instant,
}

/// The operator's own counters, from `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub reconciles: f64,
    pub writes: f64,
    pub reads: f64,
    pub watches: f64,
    /// Reconciles that failed (all reasons).
    pub errors: f64,
}

impl Counters {
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            reconciles: self.reconciles - before.reconciles,
            writes: self.writes - before.writes,
            reads: self.reads - before.reads,
            watches: self.watches - before.watches,
            errors: self.errors - before.errors,
        }
    }
}

/// Resident memory from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the highest resident size since the process started.
    pub peak_kib: u64,
    /// RssAnon: heap, stacks and other private memory; what grows with the number of releases.
    pub anon_kib: u64,
    /// RssFile: pages of the binary and shared libraries mapped in; shared and reclaimable, and
    /// bounded by the size of the binary.
    pub file_kib: u64,
}

impl Operator {
    /// Spawns the operator on all namespaces with its HTTP server on a free loopback port, and waits
    /// (bounded) for the log line that names the port. Its log goes to `log`.
    pub fn start(binary: &Path, log: &Path) -> Operator {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["--http-address", "127.0.0.1:0", "--log-format", "json"])
            // Info, not debug: a log line per reconcile would cost CPU that a real deployment
            // does not spend.
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("the operator's stderr is piped");
        let mut file = File::create(log)
            .unwrap_or_else(|e| panic!("cannot create the log {}: {e}", log.display()));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = tx.send(address.to_owned());
                }
                let _ = writeln!(file, "{line}");
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the operator did not log its HTTP address within 60 s; see {}",
                    log.display()
                );
            }
        };
        Operator {
            child,
            address,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain HTTP/1.0 GET on the operator's own server; `None` if it does not answer.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// True once the operator's caches have synced.
    pub async fn ready(&self) -> bool {
        self.get("/readyz").is_some_and(|(status, _)| status == 200)
    }

    pub async fn counters(&self) -> Option<Counters> {
        let (status, body) = self.get("/metrics")?;
        if status != 200 {
            return None;
        }
        let value = |prefix: &str| -> Option<f64> {
            body.lines()
                .find(|line| line.starts_with(prefix))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        };
        let requests = |kind: &str| {
            value(&format!(
                "canary_operator_api_requests_total{{client=\"controller\",kind=\"{kind}\"}}"
            ))
        };
        Some(Counters {
            reconciles: value("canary_operator_reconciles_total")?,
            writes: requests("write")?,
            reads: requests("read")?,
            watches: requests("watch")?,
            // One series per reason, absent until the first failure.
            errors: body
                .lines()
                .filter(|line| line.starts_with("canary_operator_reconcile_errors_total{"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                // fold from +0.0: an empty f64 sum is -0.0, which prints as "-0".
                .fold(0.0, |sum, n| sum + n),
        })
    }

    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Memory {
            rss_kib: kib("VmRSS:")?,
            peak_kib: kib("VmHWM:")?,
            anon_kib: kib("RssAnon:")?,
            file_kib: kib("RssFile:")?,
        })
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_seconds(&self, ticks_per_second: f64) -> Option<f64> {
        cpu_seconds(self.pid(), ticks_per_second)
    }

    /// SIGTERM, the way Kubernetes stops a pod, then a bounded wait for a clean exit; SIGKILL if it
    /// does not come. Returns the exit code of a clean exit.
    pub fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: the operator ignored SIGTERM for 30 s; killing it");
        None
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// User plus system CPU time process `pid` has used so far.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are space-separated,
    // starting with field 3 (state), so utime (field 14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// CPU time all processes on the machine have used so far (the first line of `/proc/stat`, less
/// idle and I/O wait): with the control plane's own figures, it shows what else ran meanwhile.
fn machine_busy_seconds(ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle) / ticks_per_second)
}

/// CPU time used over a span by the control plane's processes, this bench, and the whole machine:
/// where the CPU went while something ran, which is what bounds a throughput figure here.
pub struct CpuSpan {
    ticks: f64,
    started: std::time::Instant,
    components: Vec<(String, u32)>,
    before: Vec<f64>,
    bench_before: f64,
    machine_before: f64,
}

/// What [`CpuSpan::finish`] found.
#[derive(Clone, Debug)]
pub struct CpuUse {
    pub elapsed: f64,
    /// CPU seconds by process, largest first.
    pub by_process: Vec<(String, f64)>,
    pub machine_busy: f64,
    pub cores: f64,
}

impl CpuSpan {
    pub fn start(ticks: f64) -> CpuSpan {
        let components = control_plane();
        let before = components
            .iter()
            .map(|(_, pid)| cpu_seconds(*pid, ticks).unwrap_or_default())
            .collect();
        CpuSpan {
            ticks,
            started: std::time::Instant::now(),
            components,
            before,
            bench_before: cpu_seconds(std::process::id(), ticks).unwrap_or_default(),
            machine_before: machine_busy_seconds(ticks).unwrap_or_default(),
        }
    }

    /// The span so far; `others` adds processes measured by the caller (the operator).
    pub fn finish(&self, others: &[(&str, f64)]) -> CpuUse {
        let cpu = |pid| cpu_seconds(pid, self.ticks).unwrap_or_default();
        let mut by_process: Vec<(String, f64)> = self
            .components
            .iter()
            .zip(&self.before)
            .map(|((name, pid), before)| (name.clone(), cpu(*pid) - before))
            .chain(others.iter().map(|(name, s)| ((*name).to_owned(), *s)))
            // The bench's own watches and polling are part of the load too.
            .chain([(
                "bench".to_owned(),
                cpu(std::process::id()) - self.bench_before,
            )])
            .collect();
        by_process.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            elapsed: self.started.elapsed().as_secs_f64(),
            by_process,
            machine_busy: machine_busy_seconds(self.ticks).unwrap_or_default()
                - self.machine_before,
            cores: std::thread::available_parallelism().map_or(1, usize::from) as f64,
        }
    }
}

impl CpuUse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "elapsed": self.elapsed,
            "available": self.cores * self.elapsed,
            "machine_busy": self.machine_busy,
            "by_process": self.by_process.iter().map(|(name, s)| (name.clone(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// "kube-apiserver 94, etcd 15, ..."
    pub fn by_process_text(&self) -> String {
        self.by_process
            .iter()
            .map(|(name, s)| format!("{name} {s:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "153 / 154 (2 cores)"
    pub fn busy_text(&self) -> String {
        format!(
            "{:.0} / {:.0} ({} cores)",
            self.machine_busy,
            self.cores * self.elapsed,
            self.cores
        )
    }
}

/// The control plane's processes, from the pid files `hack/cluster.sh` keeps next to the
/// kubeconfig (`$CANARY_RUN_DIR/pids/<component>.pid`); empty for another cluster.
fn control_plane() -> Vec<(String, u32)> {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG") else {
        return Vec::new();
    };
    let Some(dir) = Path::new(&kubeconfig).parent().map(|d| d.join("pids")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u32)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_stem()?.to_str()?.to_owned();
            let pid = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect();
    found.sort();
    found
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ), from `getconf`; 100 on every common
/// Linux configuration, which is the fallback.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}
