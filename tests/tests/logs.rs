//! The agent's log as an operator's pipeline reads it: with
//! `log_format = "json"` every line is one JSON object, and every applied
//! change (a node added or removed, an endpoint deleted, a pinned endpoint
//! adopted) is one line naming what changed and its cause. Needs root; run
//! with `cargo xtask test`.

use std::time::Duration;

use knet_agent::config::Mode;
use knet_tests::{
    cluster::{node_address, node_line, Cluster},
    wait,
};
use serde_json::Value;

/// The log's lines since `from` (a byte offset), each parsed; panics on a
/// line that is not JSON.
fn json_lines(log: &str, from: usize) -> Vec<Value> {
    log[from..]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}")))
        .collect()
}

/// Waits (bounded) for a line with `message` whose fields contain `fields`.
fn wait_line(c: &Cluster, from: usize, message: &str, fields: &[(&str, &str)]) -> Value {
    wait::until(&format!("a {message:?} log line with {fields:?}"), Duration::from_secs(10), || {
        json_lines(&c.agents[0].log_text(), from).into_iter().find(|l| {
            l["message"] == message && fields.iter().all(|(k, v)| l[*k].as_str().is_some_and(|s| s.contains(v)))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.agents[0].log_text()))
}

#[test]
fn json_lines_name_each_applied_change_and_its_cause() {
    let mut c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let config = c.agents[0].config_path().to_path_buf();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}log_format = \"json\"\n")).unwrap();
    assert!(c.agents[0].stop().unwrap().success());
    let from = c.agents[0].log_text().len();
    c.agents[0].restart().unwrap();

    let adopted = wait_line(&c, from, "adopted pinned endpoint", &[("cause", "earlier agent")]);
    assert_eq!(adopted["ip"], c.pods[0][0].ip.to_string());
    assert_eq!(adopted["level"], "INFO");

    let file = c.nodes_file().display().to_string();
    c.write_nodes_file(&(node_line(0) + &node_line(1))).unwrap();
    let added = wait_line(&c, from, "node added", &[("node", "node-1"), ("cause", &file)]);
    assert_eq!(added["ip"], node_address(1).to_string());
    assert!(added["cause"].as_str().unwrap().ends_with("changed"), "{added}");

    c.write_nodes_file(&node_line(0)).unwrap();
    wait_line(&c, from, "node removed", &[("node", "node-1"), ("cause", &file)]);

    c.agents[0].delete_pod(&c.pods[0][0]).unwrap();
    wait_line(&c, from, "endpoint deleted", &[("ip", &c.pods[0][0].ip.to_string()), ("cause", "API request")]);
    // Every line from the restart on, not only the ones waited for.
    assert!(json_lines(&c.agents[0].log_text(), from).len() >= 4);
}
