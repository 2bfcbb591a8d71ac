//! `--log-as-json`: every line pilotfish writes is one JSON object with a level and a message,
//! so log pipelines can parse it without a grok pattern.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_logs_one_json_object_per_line() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bookinfo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args([
            "serve",
            "--log-as-json",
            "--config-dir",
            config,
            "--xds-address",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("config loaded");
        lines.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["timestamp"].is_string(), "no timestamp: {line}");
    }
    let loaded: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(loaded["message"], "config loaded", "{lines:?}");
    assert!(
        loaded["objects"].as_u64().is_some_and(|n| n > 0),
        "fields are top-level: {loaded}"
    );
}
