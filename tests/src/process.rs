//! A child process whose stdout and stderr go to a log file, stopped on drop so no
//! process outlives a failed test. When a test panics, the log is printed (libtest
//! shows it with the failure).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How long [`Process::stop`] waits for a clean exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a dropped process gets after SIGTERM before SIGKILL. Shorter than
/// [`STOP_GRACE`]: drop blocks the test's thread, and on a current-thread runtime
/// that also stalls in-process peers (an HTTP/2 client cannot answer the proxy's
/// GOAWAY), so a proxy may legitimately wait out its grace. Tests that care about a
/// clean exit call `stop().await` instead.
pub const DROP_GRACE: Duration = Duration::from_secs(2);

pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// Leads its own process group: whatever it started is killed with it on drop.
    group: bool,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Process> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate the log file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log,
            exited: None,
            group: false,
        })
    }

    /// Like [`Process::spawn`], for a process that starts children of its own (the
    /// demo): it leads a new process group, and on drop, after it had its chance to
    /// stop them cleanly, anything left in that group is killed, so a failed test
    /// leaves no grandchild behind.
    pub fn spawn_group(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Process> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        let mut process = Self::spawn(name, cmd, log_dir)?;
        process.group = true;
        Ok(process)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, from /proc.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which may hold spaces, in parentheses.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks =
            |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        let total = ticks(11)? + ticks(12)?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
        Ok(Duration::from_millis(
            total * 1000 / u64::try_from(hz).unwrap_or(100),
        ))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote so far (stdout and stderr, interleaved).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` (SIGHUP to reload, SIGTERM to stop...). Fails if it has exited.
    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        if let Some(status) = self.try_exit()? {
            anyhow::bail!("{} already exited ({status}); cannot send {sig}", self.name);
        }
        let pid = i32::try_from(self.pid()).context("pid out of range")?;
        signal::kill(Pid::from_raw(pid), sig)
            .with_context(|| format!("cannot send {sig} to {}", self.name))
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("cannot wait for {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// Waits (polling, without blocking the async runtime) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{} still running after {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(STOP_GRACE).await
    }

    fn stop_blocking(&mut self) {
        self.stop_leader_blocking();
        if self.group {
            // The group's id is the leader's pid; it is gone only once every member is.
            if let Ok(pid) = i32::try_from(self.pid()) {
                let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    fn stop_leader_blocking(&mut self) {
        if matches!(self.try_exit(), Ok(Some(_))) {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        // A group leader stops its children first, each with its own grace.
        let grace = if self.group { STOP_GRACE } else { DROP_GRACE };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.try_exit(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "{} still running {grace:?} after SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }
}

/// How much of each process's log a failing test prints: the end, where the
/// failure is. A test's every log in full buries it (CI keeps only the start and
/// the end of a long output).
const PANIC_LINES: usize = 80;

/// The last `n` lines of `text`, saying how many came before.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skipped > 0 {
        out.push_str(&format!("[{skipped} earlier lines]\n"));
    }
    for line in &lines[skipped..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop_blocking();
        if std::thread::panicking() {
            eprintln!(
                "----- {} output ({}) -----\n{}----- end of {} output -----",
                self.name,
                self.log.display(),
                last_lines(&self.output(), PANIC_LINES),
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn a_long_log_keeps_its_end_and_counts_the_rest() {
        let log: String = (1..=5).map(|i| format!("line {i}\n")).collect();
        assert_eq!(last_lines(&log, 2), "[3 earlier lines]\nline 4\nline 5\n");
        assert_eq!(last_lines(&log, 5), log);
        assert_eq!(last_lines("", 2), "");
    }
}
