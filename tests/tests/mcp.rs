//! The MCP gate end to end: an MCP server and client built with the
//! official `mcp` Python SDK, the client in a simulated pod, its calls
//! through the real eBPF redirect and the gateway.

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use std::time::Duration;
use trigate_e2e::{
    log_str, mcp_client, Destination, JwtSigner, McpServer, McpTransport, Node, Runner, TempFile,
    CMD_TIMEOUT,
};

const LOG_WAIT: Duration = Duration::from_secs(5);

fn set_gate_mcp(cfg: trigate_e2e::Config) -> trigate_e2e::Config {
    cfg.gate_all("mcp")
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
                    "limits": [{"name": "echo-rate", "tools": "echo", "requests": 2, "per_secs": 3600}],
                    "arguments": [{"tool": "read_file",
                                   "arguments": {"path": {"required": true, "glob": "/data/reports/**"}}}],
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
            {"op": "call", "tool": "read_file", "args": {"path": "/data/reports/q3.txt"}},
            {"op": "call", "tool": "read_file", "args": {"path": "/etc/passwd"}},
            {"op": "call", "tool": "echo", "args": {"text": "two"}},
            {"op": "call", "tool": "echo", "args": {"text": "three"}},
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
        r[5]["ok"] == true && r[6]["ok"] == true && r[11]["ok"] == true,
        "resources and session end: {out:#}"
    );
    ensure!(
        r[7]["ok"] == true && r[7]["value"]["text"] == "contents of /data/reports/q3.txt",
        "an argument within its constraint: {:#}",
        r[7]
    );
    let message = r[8]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[8]["ok"] == false
            && r[8]["error"]["code"] == -32001
            && message.contains("argument \"path\" of tool \"read_file\" must be a path matching")
            && !message.contains("/etc/passwd"),
        "an argument outside its constraint: {:#}",
        r[8]
    );

    let message = r[10]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[9]["ok"] == true
            && r[10]["ok"] == false
            && r[10]["error"]["code"] == -32029
            && message.contains("echo-rate")
            && message.contains("retry after"),
        "the third echo is over its per-tool limit: {:#} {:#}",
        r[9],
        r[10]
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
        calls("echo", "allowed") == 2.0
            && calls("echo", "limited") == 1.0
            && calls("delete_all", "denied") == 1.0
            && calls("get_config", "denied") == 1.0,
        "mcp_requests_total: echo {} delete_all {} get_config {}",
        calls("echo", "allowed"),
        calls("delete_all", "denied"),
        calls("get_config", "denied")
    );
    Ok(())
}

/// The guardrail engine on MCP traffic: a card number in a tool's
/// arguments refuses the call, a secret in a tool's result is redacted
/// before the client sees it (text and structured content), and a tool
/// whose description carries injected instructions is flagged.
#[test]
fn tool_arguments_results_and_descriptions_are_guarded() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let server = McpServer::start(
        pod.host_ip.into(),
        McpTransport::StreamableHttp,
        "alpha",
        true,
    )?;
    let rule = |detect: &str, action: &str| json!({"detect": [detect], "action": action});
    let cfg = set_gate_mcp(
        node.config()
            .destination(
                Destination::redirect("tools")
                    .addr(pod.host_ip.into())
                    .port(server.port()),
            )
            .set(
                "/guardrails",
                json!({"policies": [{
                    "name": "tool-data",
                    "gates": ["mcp"],
                    "request": [rule("credit_card", "block")],
                    "response": [rule("secret", "redact")],
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
            {"op": "call", "tool": "get_config", "args": {}},
            {"op": "call", "tool": "echo", "args": {"text": "pay with 4111 1111 1111 1111"}},
            {"op": "call", "tool": "echo", "args": {"text": "hello"}},
            {"op": "call", "tool": "upgrade", "args": {}},
            {"op": "list_tools"},
        ]),
    )?;
    let r = &out["results"];
    let weather = r[0]["value"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["name"] == "weather"))
        .cloned()
        .unwrap_or(Value::Null);
    ensure!(
        weather["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("[trigate:") && d.contains("Ignore all previous")),
        "the poisoned tool is flagged: {:#}",
        r[0]
    );
    let text = r[1]["value"]["text"].as_str().unwrap_or_default();
    ensure!(
        r[1]["ok"] == true
            && text.contains("<GITHUB_TOKEN_1>")
            && !out.to_string().contains("ghp_"),
        "the secret in the result is redacted everywhere: {:#}",
        r[1]
    );
    let message = r[2]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[2]["ok"] == false
            && r[2]["error"]["code"] == -32001
            && message.contains("credit_card")
            && message.contains("tool-data")
            && !message.contains("4111"),
        "a card number in the arguments refuses the call: {:#}",
        r[2]
    );
    ensure!(
        r[3]["ok"] == true && r[3]["value"]["text"] == "alpha: hello",
        "{:#}",
        r[3]
    );
    // A tool redefined mid-session is flagged in the next listing.
    let description = |listing: &Value, name: &str| {
        listing["value"]
            .as_array()
            .and_then(|tools| tools.iter().find(|t| t["name"] == name))
            .and_then(|t| t["description"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    ensure!(
        r[4]["ok"] == true
            && description(&r[5], "read_file")
                .starts_with("[trigate: this tool's definition changed")
            && !description(&r[5], "echo").starts_with("[trigate:"),
        "the rug pull is flagged: {:#}",
        r[5]
    );
    d.wait_for_log(LOG_WAIT, "the poisoned tool is logged", |l| {
        log_str(l, "message") == Some("mcp tool description looks poisoned")
            && log_str(l, "tool") == Some("weather")
    })?;
    let m = d.metrics()?;
    let found = |detector: &str, action: &str| {
        m.sum(
            "trigate_guardrail_findings_total",
            &[("gate", "mcp"), ("detector", detector), ("action", action)],
        )
    };
    ensure!(
        found("credit_card", "block") == 1.0 && found("github_token", "redact") >= 1.0,
        "findings: card {} token {}",
        found("credit_card", "block"),
        found("github_token", "redact")
    );
    Ok(())
}

/// The MCP destination as an OAuth 2.1 protected resource: its metadata
/// is public, a client without a token (or with a token for another
/// audience) gets 401 pointing to that metadata, and a valid token passes.
#[test]
fn oauth_tokens_are_required_and_the_metadata_is_published() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let server = McpServer::start(
        pod.host_ip.into(),
        McpTransport::StreamableHttp,
        "alpha",
        false,
    )?;
    let signer = JwtSigner::new()?;
    let jwks = TempFile::new("jwks.json", &signer.jwks())?;
    let resource = server.url().to_string();
    let cfg = set_gate_mcp(
        node.config()
            .destination(
                Destination::redirect("tools")
                    .addr(pod.host_ip.into())
                    .port(server.port()),
            )
            .set(
                "/auth",
                json!({"jwt": [{"name": "idp", "issuer": "https://idp.e2e.test",
                                "audiences": [resource], "jwks_file": jwks.path()}]}),
            )
            .set(
                "/mcp",
                json!({"oauth": {"resource": resource, "jwt": "idp",
                                 "authorization_servers": ["https://idp.e2e.test"]},
                       "policies": [{"name": "finance-agents", "claims": {"team": ["finance"]},
                                     "tools": {"deny": ["delete_*"]}}],
                       "upstreams": [{"destination": "tools", "headers": {"x-gateway": "trigate"}}]}),
            )
            .workload(pod.workload()),
    );
    let _d = node.start(&cfg)?;
    let env = trigate_e2e::env()?;
    let base = resource.trim_end_matches("/mcp");
    let metadata_url = format!("{base}/.well-known/oauth-protected-resource/mcp");
    let out = pod
        .run(
            &env.curl,
            &["-sS", "--noproxy", "*", "--max-time", "10", &metadata_url],
            CMD_TIMEOUT,
        )?
        .check("curl metadata")?;
    let metadata: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        metadata["resource"] == json!(resource)
            && metadata["authorization_servers"] == json!(["https://idp.e2e.test"]),
        "metadata: {metadata:#}"
    );
    let out = pod
        .run(
            &env.curl,
            &[
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "10",
                "-i",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                &resource,
            ],
            CMD_TIMEOUT,
        )?
        .check("curl without a token")?;
    let head = out.stdout.to_ascii_lowercase();
    ensure!(
        head.starts_with("http/1.1 401")
            && head.contains(&format!(
                "resource_metadata=\"{}\"",
                metadata_url.to_ascii_lowercase()
            )),
        "401 with the metadata's URL: {}",
        out.stdout
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = |aud: &str| {
        signer.token(
            &json!({"iss": "https://idp.e2e.test", "sub": "agent", "aud": aud, "exp": now + 300}),
        )
    };
    let finance = signer.token(&json!({"iss": "https://idp.e2e.test", "sub": "agent",
        "aud": resource, "exp": now + 300, "team": "finance"}))?;
    let ops = json!([{"op": "list_tools"}]);
    let without = mcp_client(&pod, &resource, &[], &ops)?;
    let other = mcp_client(
        &pod,
        &resource,
        &[&format!(
            "Authorization: Bearer {}",
            token("https://other.example")?
        )],
        &ops,
    )?;
    for (what, out) in [
        ("no token", &without),
        ("a token for another audience", &other),
    ] {
        ensure!(
            out["results"][0]["ok"] == false && out["results"][0]["error"]["http_status"] == 401,
            "{what}: {out:#}"
        );
    }
    let valid = mcp_client(
        &pod,
        &resource,
        &[&format!("Authorization: Bearer {}", token(&resource)?)],
        &ops,
    )?;
    let names = tool_names(&valid["results"][0]);
    ensure!(
        valid["results"][0]["ok"] == true
            && names.contains(&"echo".to_string())
            && names.contains(&"delete_all".to_string()),
        "a valid token (no team claim: the finance policy does not apply): {valid:#}"
    );
    // The policy selects callers by their token's claims.
    let fin = mcp_client(
        &pod,
        &resource,
        &[&format!("Authorization: Bearer {finance}")],
        &ops,
    )?;
    let names = tool_names(&fin["results"][0]);
    ensure!(
        names.contains(&"echo".to_string()) && !names.contains(&"delete_all".to_string()),
        "a finance token: {fin:#}"
    );
    Ok(())
}

/// Bad input on an MCP destination: JSON-RPC errors with the right codes
/// and HTTP statuses, never a panic, and the gateway keeps serving.
#[test]
fn bad_messages_get_json_rpc_errors() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let server = McpServer::start(
        pod.host_ip.into(),
        McpTransport::StreamableHttp,
        "alpha",
        false,
    )?;
    let dead_port = trigate_e2e::free_port(pod.host_ip.into())?;
    let cfg = set_gate_mcp(
        node.config()
            .set("/http", json!({"max_request_body_bytes": 4096}))
            .destination(
                Destination::redirect("tools")
                    .addr(pod.host_ip.into())
                    .port(server.port()),
            )
            .destination(
                Destination::redirect("dead")
                    .addr(pod.host_ip.into())
                    .port(dead_port),
            )
            .workload(pod.workload()),
    );
    let _d = node.start(&cfg)?;
    let env = trigate_e2e::env()?;
    let post = |url: &str, body: &str, extra: &[&str]| -> Result<(u16, Value)> {
        let mut args = vec![
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
        ];
        args.extend_from_slice(extra);
        args.extend(["--data-binary", body, url]);
        let out = pod.run(&env.curl, &args, CMD_TIMEOUT)?.check("curl")?;
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        Ok((
            status.trim().parse()?,
            serde_json::from_str(body).unwrap_or(Value::Null),
        ))
    };
    let url = server.url().to_string();
    let code = |v: &Value| v["error"]["code"].as_i64().unwrap_or(0);

    let (status, v) = post(&url, "{nope", &[])?;
    ensure!(
        status == 400 && code(&v) == -32700,
        "not JSON: {status} {v}"
    );
    let (status, v) = post(&url, "[]", &[])?;
    ensure!(
        status == 400 && code(&v) == -32600,
        "empty batch: {status} {v}"
    );
    let batch = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","method":"notifications/x"}"#; 40].join(",")
    );
    let (status, v) = post(&url, &batch, &[])?;
    ensure!(
        status == 400
            && code(&v) == -32600
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("mcp.max_batch"),
        "a batch over the limit: {status} {v}"
    );
    let (status, v) = post(&url, r#"{"jsonrpc":"2.0","id":7}"#, &[])?;
    ensure!(
        status == 400 && code(&v) == -32600 && v["id"] == 7,
        "not a message: {status} {v}"
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let (status, _) = post(&url, &big, &[])?;
    ensure!(status == 413, "an oversized message: {status}");
    let (status, _) = post(
        &url,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        &[
            "-H",
            "mcp-session-id: no-such-session",
            "-H",
            "mcp-protocol-version: 2025-11-25",
        ],
    )?;
    ensure!(
        status == 404,
        "an unknown session is the server's 404: {status}"
    );
    let dead = format!("http://{}:{dead_port}/mcp", pod.host_ip);
    let (status, v) = post(&dead, r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#, &[])?;
    ensure!(
        status == 503 && code(&v) == -32002,
        "a dead server: {status} {v}"
    );

    // Still serving.
    let out = mcp_client(
        &pod,
        &url,
        &[],
        &json!([{"op": "call", "tool": "echo", "args": {"text": "ok"}}]),
    )?;
    ensure!(out["results"][0]["value"]["text"] == "alpha: ok", "{out:#}");
    Ok(())
}

/// A server on the older HTTP+SSE transport, whose answers to every POST
/// come on its event stream: the gateway filters listings there too,
/// answers refused calls there (the transport's clients read nothing
/// else), and calls still reach the server through it. The same server
/// bridged to streamable HTTP by a one-server federation without a prefix.
#[test]
fn listings_and_refusals_on_the_older_sse_transport() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let server = McpServer::start(pod.host_ip.into(), McpTransport::Sse, "legacy", false)?;
    // The same server bridged for streamable-HTTP clients: a federation of
    // one server without a prefix.
    let bridge_port = trigate_e2e::free_port(pod.host_ip.into())?;
    let cfg = set_gate_mcp(
        node.config()
            .destination(
                Destination::redirect("tools")
                    .addr(pod.host_ip.into())
                    .port(server.port()),
            )
            .destination(
                Destination::redirect("bridge")
                    .addr(pod.host_ip.into())
                    .port(bridge_port),
            )
            .set(
                "/mcp",
                json!({
                    "policies": [{"name": "agents", "tools": {"deny": ["delete_*", "get_config"]}}],
                    "federations": [{"destination": "bridge", "servers": [
                        {"name": "legacy", "prefix": "", "url": server.url(), "transport": "sse"},
                    ]}],
                }),
            )
            .workload(pod.workload()),
    );
    let _d = node.start(&cfg)?;
    let bridged = mcp_client(
        &pod,
        &format!("http://{}:{bridge_port}/mcp", pod.host_ip),
        &[],
        &json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "count_slowly", "args": {"n": 2}, "progress": true},
            {"op": "call", "tool": "get_config", "args": {}},
            {"op": "terminate"},
        ]),
    )?;
    let b = &bridged["results"];
    let names = tool_names(&b[0]);
    ensure!(
        names.contains(&"echo".to_string()) && !names.contains(&"get_config".to_string()),
        "tools of the bridged server, unprefixed and filtered: {bridged:#}"
    );
    ensure!(
        b[1]["value"]["text"] == "counted 2"
            && b[1]["value"]["progress"] == json!([1, 2])
            && b[2]["error"]["code"] == -32001
            && b[3]["ok"] == true,
        "calls over the bridge: {bridged:#}"
    );
    let out = trigate_e2e::mcp_client_over(
        &pod,
        server.url(),
        McpTransport::Sse,
        &[],
        &json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "echo", "args": {"text": "over sse"}},
            {"op": "call", "tool": "delete_all", "args": {}},
            {"op": "call", "tool": "echo", "args": {"text": "still there"}},
        ]),
    )?;
    let r = &out["results"];
    let names = tool_names(&r[0]);
    ensure!(
        r[0]["ok"] == true
            && names.contains(&"echo".to_string())
            && !names.contains(&"delete_all".to_string())
            && !names.contains(&"get_config".to_string()),
        "the listing on the event stream: {out:#}"
    );
    ensure!(
        r[1]["ok"] == true && r[1]["value"]["text"] == "legacy: over sse",
        "a call over the SSE transport: {:#}",
        r[1]
    );
    // The transport's clients read every answer from the event stream:
    // the refusal must come there, and the session goes on.
    let message = r[2]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[2]["error"]["code"] == -32001
            && message.contains("\"agents\"")
            && r[3]["value"]["text"] == "legacy: still there",
        "a refused call over the SSE transport: {:#} {:#}",
        r[2],
        r[3]
    );
    Ok(())
}

/// Federation: one virtual MCP endpoint the gateway answers from three
/// servers (one on the older HTTP+SSE transport, bridged) and a fourth
/// that is down. Names carry their server's prefix,
/// calls reach the right server, progress and the servers' own requests
/// (elicitation) travel through, the policy applies to the prefixed names,
/// the dead server's tools are absent with a logged reason, and ending the
/// session makes it unknown.
#[test]
fn a_federation_serves_several_servers_as_one() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let ip: std::net::IpAddr = pod.host_ip.into();
    let alpha = McpServer::start(ip, McpTransport::StreamableHttp, "alpha", false)?;
    let beta = McpServer::start(ip, McpTransport::StreamableHttp, "beta", false)?;
    let legacy = McpServer::start(ip, McpTransport::Sse, "legacy", false)?;
    // Nobody listens on these: the hub is answered by the gateway, the
    // third server is down.
    let hub_port = trigate_e2e::free_port(ip)?;
    let gone_port = trigate_e2e::free_port(ip)?;
    let cfg = set_gate_mcp(
        node.config()
            .destination(Destination::redirect("hub").addr(ip).port(hub_port))
            .set(
                "/mcp",
                json!({
                    "federations": [{
                        "destination": "hub",
                        "servers": [
                            {"name": "alpha", "url": alpha.url()},
                            {"name": "beta", "url": beta.url()},
                            {"name": "legacy", "url": legacy.url(), "transport": "sse"},
                            {"name": "gone", "url": format!("http://{ip}:{gone_port}/mcp")},
                        ],
                    }],
                    "policies": [{"name": "agents", "tools": {"deny": ["beta__get_config"]}}],
                }),
            )
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let out = mcp_client(
        &pod,
        &format!("http://{ip}:{hub_port}/mcp"),
        &[],
        &json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "alpha__echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "beta__echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "beta__get_config", "args": {}},
            {"op": "call", "tool": "alpha__count_slowly", "args": {"n": 3}, "progress": true},
            {"op": "call", "tool": "beta__pick_color", "elicit": {"color": "green"}},
            {"op": "list_prompts"},
            {"op": "get_prompt", "name": "beta__summarize", "args": {"text": "x"}},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "file:///data/reports/q3.txt"},
            {"op": "call", "tool": "gone__echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "nobody__echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "legacy__echo", "args": {"text": "bridged"}},
            {"op": "call", "tool": "legacy__count_slowly", "args": {"n": 2}, "progress": true},
            {"op": "call", "tool": "legacy__pick_color", "elicit": {"color": "blue"}},
            {"op": "terminate"},
            {"op": "list_tools"},
        ]),
    )?;
    let r = &out["results"];
    let names = tool_names(&r[0]);
    for want in [
        "alpha__echo",
        "beta__echo",
        "alpha__get_config",
        "beta__pick_color",
        "legacy__echo",
    ] {
        ensure!(names.iter().any(|n| n == want), "{want} listed: {names:?}");
    }
    ensure!(
        !names
            .iter()
            .any(|n| n == "beta__get_config" || n.starts_with("gone__")),
        "the denied tool and the dead server's are absent: {names:?}"
    );
    ensure!(
        r[1]["value"]["text"] == "alpha: hi" && r[2]["value"]["text"] == "beta: hi",
        "calls routed by prefix: {:#} {:#}",
        r[1],
        r[2]
    );
    let message = r[3]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[3]["error"]["code"] == -32001 && message.contains("\"agents\""),
        "the policy on prefixed names: {:#}",
        r[3]
    );
    ensure!(
        r[4]["value"]["text"] == "counted 3" && r[4]["value"]["progress"] == json!([1, 2, 3]),
        "progress through the federation: {:#}",
        r[4]
    );
    ensure!(
        r[5]["value"]["text"] == "beta: green",
        "an elicitation request from beta answered by the client: {:#}",
        r[5]
    );
    let prompts: Vec<&str> = r[6]["value"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        prompts == ["alpha__summarize", "beta__summarize", "legacy__summarize"]
            && r[7]["ok"] == true,
        "prompts: {:#} {:#}",
        r[6],
        r[7]
    );
    ensure!(
        r[8]["ok"] == true
            && r[9]["ok"] == true
            && r[9]["value"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
        "resources: {:#} {:#}",
        r[8],
        r[9]
    );
    let message = r[10]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        r[10]["error"]["code"] == -32002 && message.contains("\"gone\""),
        "a call to the dead server: {:#}",
        r[10]
    );
    ensure!(
        r[11]["error"]["code"] == -32602,
        "an unknown prefix: {:#}",
        r[11]
    );
    ensure!(
        r[12]["value"]["text"] == "legacy: bridged"
            && r[13]["value"]["progress"] == json!([1, 2])
            && r[14]["value"]["text"] == "legacy: blue",
        "a server on the SSE transport, bridged: {:#} {:#} {:#}",
        r[12],
        r[13],
        r[14]
    );
    ensure!(
        r[15]["ok"] == true && r[16]["error"]["http_status"] == 404,
        "the ended session is unknown: {:#} {:#}",
        r[15],
        r[16]
    );
    let deadline = std::time::Instant::now() + LOG_WAIT;
    let logged = |msg: &str, server: &str| {
        d.logs().into_iter().any(|l| {
            log_str(&l, "message").is_some_and(|m| m.starts_with(msg))
                && log_str(&l, "server") == Some(server)
        })
    };
    while !logged("mcp federation server unavailable", "gone")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        logged("mcp federation server unavailable", "gone"),
        "the dead server's absence is logged"
    );
    Ok(())
}
