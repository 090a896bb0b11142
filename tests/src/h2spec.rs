//! h2spec, the HTTP/2 conformance checker (a Go program), built at a pinned version by
//! `tests/h2spec/install.sh` into a cache outside the clone, and its report read back
//! as the list of failed cases.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// h2spec's binary, built if needed; `None` after printing why `test` is skipped
/// (no Go). Panics instead under `CI=true`.
pub fn require(test: &str) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("h2spec/install.sh");
    let why = match Command::new("bash").arg(&script).output() {
        Ok(out) if out.status.success() => {
            return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        Ok(out) => format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    if crate::tools::in_ci() {
        panic!("{test}: {why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n******** SKIPPED {test}: {why} ********\n");
    None
}

/// What one h2spec run found.
#[derive(Debug)]
pub struct Report {
    pub total: usize,
    pub passed: usize,
    /// Each failed case as `<section>/<case>: <title>`, e.g.
    /// `3.5/2: Sends invalid connection preface`.
    pub failures: Vec<String>,
    pub output: String,
}

/// Runs every h2spec case, strict ones included, against the h2c listener `addr`.
pub async fn run(bin: PathBuf, addr: SocketAddr) -> anyhow::Result<Report> {
    let out = tokio::process::Command::new(&bin)
        .args(["--strict", "--timeout", "10", "--host"])
        .arg(addr.ip().to_string())
        .arg("--port")
        .arg(addr.port().to_string())
        .output()
        .await
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    parse(&output).with_context(|| format!("unexpected h2spec output:\n{output}"))
}

fn parse(output: &str) -> anyhow::Result<Report> {
    // The summary line: "146 tests, 145 passed, 0 skipped, 1 failed".
    let summary = output
        .lines()
        .rev()
        .find(|l| l.contains(" tests, "))
        .context("no summary line")?;
    let numbers: Vec<usize> = summary
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    let [total, passed, _skipped, failed] = numbers[..] else {
        anyhow::bail!("summary line {summary:?}");
    };
    let mut failures = Vec::new();
    let mut section = "";
    let listed = output
        .split_once("\nFailures:")
        .map_or("", |(_, rest)| rest);
    for line in listed.lines().map(str::trim) {
        if let Some(case) = line.strip_prefix("× ") {
            failures.push(format!("{section}/{case}"));
        } else if let Some((number, _)) = line.split_once(". ")
            && number.chars().all(|c| c.is_ascii_digit() || c == '.')
            && !number.is_empty()
        {
            section = number;
        }
    }
    anyhow::ensure!(
        failures.len() == failed,
        "{failed} failed but {} listed",
        failures.len()
    );
    Ok(Report {
        total,
        passed,
        failures,
        output: output.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_failed_cases_with_their_section() {
        let out = "Hypertext Transfer Protocol Version 2 (HTTP/2)\n  3. Starting HTTP/2\n    \
            3.5. HTTP/2 Connection Preface\n      ✔ 1: Sends client connection preface\n\
            Failures: \n\nHypertext Transfer Protocol Version 2 (HTTP/2)\n  3. Starting HTTP/2\n    \
            3.5. HTTP/2 Connection Preface\n      × 2: Sends invalid connection preface\n        \
            -> The endpoint MUST terminate the TCP connection.\n\n\
            Finished in 0.2047 seconds\n146 tests, 145 passed, 0 skipped, 1 failed\n";
        let report = parse(out).expect("parses");
        assert_eq!((report.total, report.passed), (146, 145));
        assert_eq!(report.failures, ["3.5/2: Sends invalid connection preface"]);
    }

    #[test]
    fn a_count_that_disagrees_with_the_list_is_an_error() {
        let out = "Failures: \n\n146 tests, 144 passed, 0 skipped, 2 failed\n";
        assert!(parse(out).is_err());
    }
}
