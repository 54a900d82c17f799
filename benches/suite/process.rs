//! Running one workload process: a command with a time limit, its stdout read whole, and the
//! `metric<TAB>unit<TAB>value` lines the workload binaries print.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One figure a workload printed: metric, unit, value.
pub type Figure = (String, String, f64);

/// Runs `cmd` (stdout captured, stderr inherited), killing it after `timeout`; returns its
/// stdout, or why it failed (spawn error, time-out, non-zero exit).
pub fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(text)
}

/// Runs workload `arg` of the allocator binary `exe`; returns the figures it printed.
pub fn run_workload(exe: &Path, arg: &str, timeout: Duration) -> Result<Vec<Figure>, String> {
    let mut cmd = Command::new(exe);
    cmd.arg(arg);
    let text = run(cmd, timeout)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (m, u, v) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            Some((m.to_string(), u.to_string(), v))
        })
        .collect())
}
