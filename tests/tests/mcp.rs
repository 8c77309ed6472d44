//! The MCP gate end to end: an MCP server and client built with the
//! official `mcp` Python SDK, the client in a simulated pod, its calls
//! through the real eBPF redirect and the gateway.

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use std::time::Duration;
use trigate_e2e::{log_str, mcp_client, Destination, McpServer, McpTransport, Node};

const LOG_WAIT: Duration = Duration::from_secs(5);

fn set_gate_mcp(cfg: trigate_e2e::Config) -> trigate_e2e::Config {
    let mut dests = cfg.get("/destinations").cloned().unwrap_or(json!([]));
    if let Some(list) = dests.as_array_mut() {
        for d in list {
            d["gate"] = json!("mcp");
        }
    }
    cfg.set("/destinations", dests)
}

/// The names a `list_tools` result shows.
fn tool_names(result: &Value) -> Vec<String> {
    result["value"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Transparent mode: the pod calls its usual server URL; the gateway
/// hides the tools its policy refuses, answers a direct call to one with
/// a JSON-RPC error naming the policy, lets the allowed ones through
/// (progress notifications included) and audits every call.
#[test]
fn tools_are_filtered_and_refused_per_workload() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let server = McpServer::start(
        pod.host_ip.into(),
        McpTransport::StreamableHttp,
        "alpha",
        false,
    )?;
    let cfg = set_gate_mcp(
        node.config()
            .destination(
                Destination::redirect("tools")
                    .addr(pod.host_ip.into())
                    .port(server.port()),
            )
            .set(
                "/mcp",
                json!({"policies": [{
                    "name": "agents",
                    "tools": {"allow": ["echo", "read_*", "get_*", "count_slowly"], "deny": ["get_config"]},
                    "resources": {"allow": ["file:///data/reports/**"]},
                }]}),
            )
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let out = mcp_client(
        &pod,
        server.url(),
        &[],
        &json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "delete_all", "args": {}},
            {"op": "call", "tool": "get_config", "args": {}},
            {"op": "call", "tool": "count_slowly", "args": {"n": 3}, "progress": true},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "file:///data/reports/q3.txt"},
            {"op": "terminate"},
        ]),
    )?;
    let r = &out["results"];
    let names = tool_names(&r[0]);
    ensure!(
        names == ["echo", "read_file", "count_slowly"],
        "tools/list through the gateway: {names:?} ({out:#})"
    );
    ensure!(
        r[1]["ok"] == true && r[1]["value"]["text"] == "alpha: hi",
        "an allowed call: {:#}",
        r[1]
    );
    for (i, tool, why) in [
        (2, "delete_all", "not among the allowed"),
        (3, "get_config", "is denied"),
    ] {
        let message = r[i]["error"]["message"].as_str().unwrap_or_default();
        ensure!(
            r[i]["ok"] == false
                && r[i]["error"]["code"] == -32001
                && message.contains(tool)
                && message.contains("\"agents\"")
                && message.contains(why),
            "a refused call to {tool}: {:#}",
            r[i]
        );
    }
    ensure!(
        r[4]["ok"] == true
            && r[4]["value"]["text"] == "counted 3"
            && r[4]["value"]["progress"] == json!([1, 2, 3]),
        "progress notifications through the gateway: {:#}",
        r[4]
    );
    ensure!(
        r[5]["ok"] == true && r[6]["ok"] == true && r[7]["ok"] == true,
        "resources and session end: {out:#}"
    );

    // One audit line per call; the refused ones never reached the server.
    let audit = |name: &str, decision: &str| {
        d.logs().into_iter().any(|l| {
            log_str(&l, "message") == Some("mcp call")
                && log_str(&l, "name") == Some(name)
                && log_str(&l, "decision") == Some(decision)
        })
    };
    let deadline = std::time::Instant::now() + LOG_WAIT;
    while !(audit("count_slowly", "allowed") && audit("delete_all", "denied"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        audit("echo", "allowed")
            && audit("delete_all", "denied")
            && audit("get_config", "denied")
            && audit("count_slowly", "allowed"),
        "audit lines: {:#?}",
        d.logs()
            .into_iter()
            .filter(|l| log_str(l, "message") == Some("mcp call"))
            .collect::<Vec<_>>()
    );
    let m = d.metrics()?;
    let calls = |tool, decision| {
        m.sum(
            "mcp_requests_total",
            &[
                ("method", "tools/call"),
                ("tool", tool),
                ("server", "tools"),
                ("decision", decision),
            ],
        )
    };
    ensure!(
        calls("echo", "allowed") == 1.0
            && calls("delete_all", "denied") == 1.0
            && calls("get_config", "denied") == 1.0,
        "mcp_requests_total: echo {} delete_all {} get_config {}",
        calls("echo", "allowed"),
        calls("delete_all", "denied"),
        calls("get_config", "denied")
    );
    Ok(())
}
