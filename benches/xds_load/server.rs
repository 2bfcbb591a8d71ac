//! The pilotfish binary in its own process, so that what /proc says about it is the server's
//! alone; and the /proc readings.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How many of the server's log lines are kept for the report.
const LOG_LINES: usize = 200;

/// The running server; dropping it (also on panic) kills the process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The TLS port, when started with a CA directory.
    pub tls_addr: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `pilotfish serve` and waits until it has loaded `config_dir`. It logs at warn,
    /// plus `pilotfish::serve`'s one info line "config loaded", which tells us it is ready
    /// without a probe connection that would count in the baseline.
    /// With `ca_dir`, also the TLS port, the CA root kept there.
    pub fn spawn(config_dir: &Path, timeout: Duration, ca_dir: Option<&Path>) -> Result<Server> {
        let addr = free_port()?;
        let tls_addr = ca_dir.map(|_| free_port()).transpose()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_pilotfish"));
        // SAFETY: prctl is async-signal-safe. The kernel kills the server when the thread
        // that spawned it (the bench's main thread) exits, even on a signal that skips Drop.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .arg("serve")
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--xds-address", &addr.to_string(), "--debounce", "100ms"])
            .args(match (ca_dir, tls_addr) {
                (Some(dir), Some(tls)) => vec![
                    "--secure-xds-address".to_string(),
                    tls.to_string(),
                    "--ca-dir".into(),
                    dir.display().to_string(),
                    "--cacerts-dir".into(),
                    dir.join("no-cacerts").display().to_string(),
                ],
                _ => Vec::new(),
            })
            .env("RUST_LOG", "warn,pilotfish::serve=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting pilotfish")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("config loaded") {
                    let _ = ready_tx.send(());
                }
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() < LOG_LINES {
                    lines.push(line);
                }
            }
        });
        let mut server = Server {
            child,
            addr,
            tls_addr,
            log,
        };
        if ready_rx.recv_timeout(timeout).is_err() {
            let status = server.child.try_wait()?;
            bail!(
                "pilotfish did not load its config (exit: {status:?}); log:\n{}",
                server.log().join("\n")
            );
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged (warnings and errors), up to [`LOG_LINES`] lines.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "pilotfish exited ({status}); log:\n{}",
                self.log().join("\n")
            ),
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// VmRSS and VmHWM of a process, in KiB.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: &str) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key}"))?;
        let kib = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("bad {line}"))?;
        Ok(kib.parse()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// User + system CPU time of a process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (state); utime is 14.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc stat")?.parse()?) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / hz)
}

/// This process's own user + system CPU time, in seconds (the simulated proxies).
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Raises the soft open-files limit to the hard one: every client holds a socket here, and
/// the server holds one per client.
pub fn raise_fd_limit(needed: u64) -> Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
        if limit.rlim_cur < needed {
            bail!(
                "open-files limit {} is below the {needed} needed; raise it (ulimit -n {needed})",
                limit.rlim_cur
            );
        }
        Ok(limit.rlim_cur)
    }
}
