//! The LLM gate end to end: a pod runs the official OpenAI and Anthropic
//! Python SDKs against an address whose destination has `gate: llm`; the
//! eBPF redirect hands the connection to the daemon, which routes the model
//! to fake providers speaking the real wire formats (tests/src/fake_llm.rs),
//! translating between the two APIs, failing over, enforcing token and
//! cost limits, injecting provider keys, and accounting in metrics and
//! access logs.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use trigate_e2e::{
    free_port, log_field, log_str, log_u64, poll_until, Config, Daemon, Destination, FakeKind,
    FakeLlm, Metrics, Node, Pod, Runner, SigV4Check, TempFile, CMD_TIMEOUT,
};

const LOG_WAIT: Duration = Duration::from_secs(5);
/// SDK clients start slowly (imports) and some scenarios stream for a while.
const SDK_TIMEOUT: Duration = Duration::from_secs(90);
/// The key pods present; providers must never see it.
const POD_KEY: &str = "sk-pod-key";

// ------------------------------------------------------------- the clients

/// The OpenAI SDK. Argument: `{"base_url", "api_key"?, "op", "request"?,
/// "read"?, "ca"?, "resolve"?}`: `ca` is the only CA the client trusts,
/// `resolve` maps host names to addresses (pods have no DNS here).
/// Prints one JSON object: what the op returned, or `error` with the
/// exception's class, status, body and headers (plus what had been read).
const OPENAI_PY: &str = r#"
import json, sys
import openai
a = json.loads(sys.argv[1])
if a.get("resolve"):
    import socket
    _getaddrinfo = socket.getaddrinfo
    socket.getaddrinfo = lambda host, *r, **k: _getaddrinfo(a["resolve"].get(host, host), *r, **k)
http_client = None
if a.get("ca"):
    http_client = openai.DefaultHttpxClient(verify=a["ca"])
client = openai.OpenAI(base_url=a["base_url"], api_key=a.get("api_key", "sk-pod-key"),
                       timeout=60.0, max_retries=0, http_client=http_client)
req = a.get("request", {})
out = {}
try:
    op = a["op"]
    if op == "chat":
        raw = client.chat.completions.with_raw_response.create(**req)
        out["status"] = raw.status_code
        out["headers"] = dict(raw.headers)
        out["completion"] = raw.parse().model_dump()
    elif op == "stream":
        out["chunks"] = []
        for chunk in client.chat.completions.create(stream=True, **req):
            out["chunks"].append(chunk.model_dump())
        out["text"] = "".join(c["choices"][0]["delta"].get("content") or ""
                              for c in out["chunks"] if c["choices"])
    elif op == "disconnect":
        stream = client.chat.completions.create(stream=True, **req)
        n = 0
        for chunk in stream:
            n += 1
            if n >= a["read"]:
                break
        stream.close()
        out["read"] = n
    elif op == "models":
        out["models"] = sorted(m.id for m in client.models.list())
    elif op == "responses":
        out["response"] = client.responses.create(**req).model_dump()
    elif op == "responses_stream":
        with client.responses.stream(**req) as stream:
            out["events"] = [e.type for e in stream]
            out["response"] = stream.get_final_response().model_dump()
    else:
        raise ValueError("unknown op " + op)
except openai.APIStatusError as e:
    out["error"] = {"class": type(e).__name__, "status": e.status_code, "body": e.body,
                    "headers": dict(e.response.headers)}
except openai.APIError as e:
    out["error"] = {"class": type(e).__name__, "message": str(e), "body": e.body}
except Exception as e:
    out["error"] = {"class": type(e).__name__, "message": str(e)}
print(json.dumps(out, default=str))
"#;

/// The Anthropic SDK, same contract as [`OPENAI_PY`].
const ANTHROPIC_PY: &str = r#"
import json, sys
import anthropic
a = json.loads(sys.argv[1])
client = anthropic.Anthropic(base_url=a["base_url"], api_key=a.get("api_key", "sk-pod-key"),
                             timeout=60.0, max_retries=0)
req = a.get("request", {})
out = {}
try:
    op = a["op"]
    if op == "create":
        raw = client.messages.with_raw_response.create(**req)
        out["status"] = raw.status_code
        out["headers"] = dict(raw.headers)
        out["message"] = raw.parse().model_dump()
    elif op == "stream":
        out["texts"] = []
        with client.messages.stream(**req) as s:
            for t in s.text_stream:
                out["texts"].append(t)
            out["message"] = s.get_final_message().model_dump()
        out["text"] = "".join(out["texts"])
    elif op == "count":
        out["input_tokens"] = client.messages.count_tokens(**req).input_tokens
    else:
        raise ValueError("unknown op " + op)
except anthropic.APIStatusError as e:
    out["error"] = {"class": type(e).__name__, "status": e.status_code, "body": e.body,
                    "headers": dict(e.response.headers)}
except anthropic.APIError as e:
    out["error"] = {"class": type(e).__name__, "message": str(e), "body": e.body}
except Exception as e:
    out["error"] = {"class": type(e).__name__, "message": str(e)}
print(json.dumps(out, default=str))
"#;

/// Runs `script` with the venv's interpreter in `pod` (or on the host when
/// `pod` is `None`) and parses the JSON it printed last.
fn sdk(pod: Option<&Pod>, script: &str, arg: &Value) -> Result<Value> {
    let py = trigate_e2e::sdk_python()?;
    let arg_s = arg.to_string();
    let out = match pod {
        Some(pod) => pod.run(py, &["-c", script, &arg_s], SDK_TIMEOUT)?,
        None => {
            let mut cmd = std::process::Command::new(py);
            cmd.args(["-c", script, &arg_s]);
            for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"] {
                cmd.env_remove(var);
            }
            trigate_e2e::run_with_timeout(cmd, SDK_TIMEOUT)?
        }
    };
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "the SDK script printed no result ({}) for {arg_s}: stdout={:?} stderr={:?}",
            out.status, out.stdout, out.stderr
        )
    })
}

fn openai(pod: &Pod, base: &str, op: &str, request: Value) -> Result<Value> {
    sdk(
        Some(pod),
        OPENAI_PY,
        &json!({"base_url": base, "api_key": POD_KEY, "op": op, "request": request}),
    )
}

fn anthropic(pod: &Pod, base: &str, op: &str, request: Value) -> Result<Value> {
    sdk(
        Some(pod),
        ANTHROPIC_PY,
        &json!({"base_url": base, "api_key": POD_KEY, "op": op, "request": request}),
    )
}

/// Fails with the result when the client saw an error.
fn no_error(what: &str, r: Value) -> Result<Value> {
    ensure!(r.get("error").is_none(), "{what}: the client failed: {r:#}");
    Ok(r)
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// curl in `pod`: status, lower-cased head, body.
fn curl(pod: &Pod, args: &[&str]) -> Result<(u16, String, String)> {
    let env = trigate_e2e::env()?;
    let mut all = vec!["-sS", "--noproxy", "*", "--max-time", "20", "-i"];
    all.extend_from_slice(args);
    let out = pod.run(&env.curl, &all, CMD_TIMEOUT)?.check("curl")?;
    let text = out.stdout.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

// ------------------------------------------------------------ the setting

/// Where pods send LLM traffic: an unused port on `pod`'s host-side
/// address, matched by an `llm` destination (the redirect happens at
/// connect(), so nothing listens there).
fn llm_address(pod: &Pod) -> Result<SocketAddr> {
    let ip = pod.host_ip.into();
    Ok(SocketAddr::new(ip, free_port(ip)?))
}

fn llm_destination(addr: SocketAddr) -> Destination {
    Destination::redirect("llm")
        .addr(addr.ip())
        .port(addr.port())
        .gate("llm")
}

/// The base URL an SDK gets: OpenAI's ends in `/v1`, Anthropic's does not.
fn openai_base(addr: SocketAddr) -> String {
    format!("http://{addr}/v1")
}
fn anthropic_base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A `llm.providers[]` entry for `fake` (`openai-compatible` for OpenAI
/// fakes unless `kind` says otherwise).
fn provider(name: &str, fake: &FakeLlm) -> Value {
    let kind = match fake.kind() {
        FakeKind::OpenAi => "openai-compatible",
        FakeKind::Anthropic => "anthropic",
        FakeKind::Gemini => "gemini",
        FakeKind::Bedrock => "bedrock",
    };
    json!({"name": name, "kind": kind, "url": fake.base_url()})
}

fn llm_config(node: &Node, addr: SocketAddr, llm: Value) -> Config {
    node.config()
        .destination(llm_destination(addr))
        .set("/llm", llm)
}

/// Request access-log lines of the llm gate.
fn llm_logs(d: &Daemon) -> Vec<Value> {
    d.access_logs()
        .into_iter()
        .filter(|l| log_str(l, "message") == Some("request") && log_str(l, "gate") == Some("llm"))
        .collect()
}

/// Waits until at least `n` llm request lines are logged.
fn wait_llm_logs(d: &Daemon, n: usize) -> Result<Vec<Value>> {
    poll_until(LOG_WAIT, &format!("{n} llm request log lines"), || {
        let logs = llm_logs(d);
        Ok((logs.len() >= n).then_some(logs))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}; llm access lines: {:#?}", llm_logs(d)))
}

fn log_f64(line: &Value, key: &str) -> Option<f64> {
    match log_field(line, key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 + b.abs() * 1e-6
}

/// `gen_ai_client_token_usage` `_sum` and `_count` for one token type and
/// the given labels.
fn token_usage(m: &Metrics, token_type: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let mut all = vec![("gen_ai_token_type", token_type)];
    all.extend_from_slice(labels);
    (
        m.sum("gen_ai_client_token_usage_sum", &all),
        m.sum("gen_ai_client_token_usage_count", &all),
    )
}

// ------------------------------------------------------------- the fakes

/// The fakes answer the SDKs directly (no gateway): their wire formats
/// are what the official clients parse.
#[test]
fn fakes_speak_what_the_sdks_expect() -> Result<()> {
    let ip = "127.0.0.1".parse()?;
    let oa = FakeLlm::openai(ip)?;
    let an = FakeLlm::anthropic(ip)?;
    oa.usage(3, 4);
    an.usage(5, 6);
    let run =
        |script, arg: Value| -> Result<Value> { no_error("direct", sdk(None, script, &arg)?) };
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);

    let r = run(
        OPENAI_PY,
        json!({"base_url": oa.base_url(), "op": "chat", "request": {"model": "m1", "messages": user("hi")}}),
    )?;
    let c = &r["completion"];
    ensure!(
        c["choices"][0]["message"]["content"] == "hello from fake-openai"
            && c["model"] == "m1"
            && c["usage"]["total_tokens"] == 7,
        "{r:#}"
    );
    let r = run(
        OPENAI_PY,
        json!({"base_url": oa.base_url(), "op": "stream", "request": {"model": "m1", "messages": user("hi"),
            "stream_options": {"include_usage": true}}}),
    )?;
    let chunks = r["chunks"].as_array().context("chunks")?;
    ensure!(
        r["text"] == "hello from fake-openai"
            && chunks
                .last()
                .is_some_and(|c| c["usage"]["completion_tokens"] == 4),
        "{r:#}"
    );
    let r = run(
        OPENAI_PY,
        json!({"base_url": oa.base_url(), "op": "stream", "request": {"model": "m1",
            "messages": user("use the tool"), "tools": tools}}),
    )?;
    let args: String = r["chunks"]
        .as_array()
        .context("chunks")?
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    ensure!(args == r#"{"city":"Paris"}"#, "{r:#}");

    let r = run(
        ANTHROPIC_PY,
        json!({"base_url": an.base_url(), "op": "create", "request": {"model": "c1", "max_tokens": 10,
            "messages": user("hi")}}),
    )?;
    ensure!(
        r["message"]["content"][0]["text"] == "hello from fake-anthropic"
            && r["message"]["usage"]["input_tokens"] == 5,
        "{r:#}"
    );
    let r = run(
        ANTHROPIC_PY,
        json!({"base_url": an.base_url(), "op": "stream", "request": {"model": "c1", "max_tokens": 10,
            "messages": user("hi")}}),
    )?;
    ensure!(
        r["text"] == "hello from fake-anthropic"
            && r["message"]["usage"]["output_tokens"] == 6
            && r["message"]["stop_reason"] == "end_turn",
        "{r:#}"
    );
    let r = run(
        ANTHROPIC_PY,
        json!({"base_url": an.base_url(), "op": "count", "request": {"model": "c1", "messages": user("hi")}}),
    )?;
    ensure!(r["input_tokens"] == 5, "{r:#}");
    let r = sdk(
        None,
        ANTHROPIC_PY,
        &json!({"base_url": an.base_url(), "op": "create", "request": {"model": "c1", "max_tokens": 0,
            "messages": user("hi")}}),
    )?;
    ensure!(
        r["error"]["status"] == 400
            && r["error"]["body"]["error"]["type"] == "invalid_request_error",
        "max_tokens 0: {r:#}"
    );
    an.fail_with(529);
    let r = sdk(
        None,
        ANTHROPIC_PY,
        &json!({"base_url": an.base_url(), "op": "create", "request": {"model": "c1", "max_tokens": 5,
            "messages": user("hi")}}),
    )?;
    ensure!(
        r["error"]["status"] == 529 && r["error"]["body"]["error"]["type"] == "overloaded_error",
        "{r:#}"
    );
    let seen = an.requests();
    ensure!(
        seen[0].path == "/v1/messages"
            // Recent SDKs send the key as a Bearer token, older ones as x-api-key.
            && (seen[0].header("x-api-key") == Some("sk-pod-key")
                || seen[0].header("authorization") == Some("Bearer sk-pod-key"))
            && seen[0].body["max_tokens"] == 10,
        "{seen:#?}"
    );
    ensure!(oa.count() == 3, "{:#?}", oa.requests());
    Ok(())
}

// -------------------------------------------------------------- scenarios

/// (a) OpenAI SDK → Anthropic provider and back, plain, streamed and with a
/// tool call; `report_model: requested` on one model, `served` (default)
/// on the other; tokens, cost and the access log.
#[test]
fn openai_clients_are_served_by_an_anthropic_provider() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::anthropic(pod.host_ip.into())?;
    fake.usage(21, 9);
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-anthropic", &fake)],
            "models": [
                {"name": "gpt-4o", "report_model": "requested",
                 "targets": [{"provider": "fake-anthropic", "model": "claude-3-5-sonnet-latest"}]},
                {"name": "gpt-4o-mini",
                 "targets": [{"provider": "fake-anthropic", "model": "claude-3-5-haiku-latest"}]},
            ],
            "prices": [{"model": "claude-3-5-sonnet*", "input_per_mtok": 3.0, "output_per_mtok": 15.0}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."}
    ]);

    // Plain.
    let r = no_error(
        "chat",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": messages, "max_tokens": 100}),
        )?,
    )?;
    let c = &r["completion"];
    ensure!(
        c["object"] == "chat.completion"
            && c["choices"][0]["message"]["content"] == "hello from fake-anthropic"
            && c["choices"][0]["message"]["role"] == "assistant"
            && c["choices"][0]["finish_reason"] == "stop",
        "completion: {r:#}"
    );
    ensure!(
        c["model"] == "gpt-4o",
        "report_model requested: {}",
        c["model"]
    );
    ensure!(
        c["usage"]["prompt_tokens"] == 21
            && c["usage"]["completion_tokens"] == 9
            && c["usage"]["total_tokens"] == 30,
        "usage: {}",
        c["usage"]
    );
    let seen = fake.requests();
    ensure!(seen.len() == 1, "{seen:#?}");
    let up = &seen[0];
    ensure!(
        up.method == "POST" && up.path == "/v1/messages",
        "{} {}",
        up.method,
        up.path
    );
    ensure!(
        up.body["model"] == "claude-3-5-sonnet-latest"
            && up.body["max_tokens"] == 100
            && up.body["messages"][0]["role"] == "user"
            && up.body.get("stream").is_none_or(|s| s == false),
        "the provider got: {:#}",
        up.body
    );
    ensure!(
        up.body["system"].to_string().contains("You are terse."),
        "the system message must become `system`: {:#}",
        up.body
    );
    ensure!(
        up.header("anthropic-version").is_some(),
        "no anthropic-version header: {:?}",
        up.headers
    );

    // Streamed, usage asked for.
    let r = no_error(
        "stream",
        openai(
            &pod,
            &base,
            "stream",
            json!({"model": "gpt-4o", "messages": messages, "stream_options": {"include_usage": true}}),
        )?,
    )?;
    let chunks = r["chunks"].as_array().context("chunks")?;
    ensure!(r["text"] == "hello from fake-anthropic", "stream: {r:#}");
    ensure!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-4o"),
        "chunks must be chat.completion.chunk naming gpt-4o: {r:#}"
    );
    ensure!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop"),
        "no finish_reason stop: {r:#}"
    );
    let last = chunks.last().context("no chunks")?;
    ensure!(
        last["choices"] == json!([])
            && last["usage"]["prompt_tokens"] == 21
            && last["usage"]["completion_tokens"] == 9,
        "the last chunk must carry the usage: {last:#}"
    );
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.body["stream"] == true && up.body["model"] == "claude-3-5-sonnet-latest",
        "{:#}",
        up.body
    );
    ensure!(
        up.body["max_tokens"].as_u64().is_some_and(|n| n > 0),
        "Anthropic needs max_tokens even when the client sent none: {:#}",
        up.body
    );

    // A tool call, there and back.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let r = no_error(
        "tool",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user("Please use the tool for Paris"), "tools": tools}),
        )?,
    )?;
    let choice = &r["completion"]["choices"][0];
    let call = &choice["message"]["tool_calls"][0];
    ensure!(
        choice["finish_reason"] == "tool_calls"
            && call["type"] == "function"
            && call["function"]["name"] == "get_weather"
            && call["id"].as_str().is_some_and(|s| !s.is_empty()),
        "tool call: {r:#}"
    );
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))?;
    ensure!(args == json!({"city": "Paris"}), "arguments: {args}");
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.body["tools"][0]["name"] == "get_weather"
            && up.body["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string",
        "tools must reach Anthropic as name + input_schema: {:#}",
        up.body
    );

    // report_model served (the default): the provider's model.
    let r = no_error(
        "served",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )?,
    )?;
    ensure!(
        r["completion"]["model"] == "claude-3-5-haiku-latest",
        "report_model served: {r:#}"
    );

    // Access log: one line per request.
    let logs = wait_llm_logs(&d, 4)?;
    let first = &logs[0];
    ensure!(
        log_str(first, "model_requested") == Some("gpt-4o")
            && log_str(first, "model_served") == Some("claude-3-5-sonnet-latest")
            && log_str(first, "provider") == Some("fake-anthropic")
            && log_u64(first, "input_tokens") == Some(21)
            && log_u64(first, "output_tokens") == Some(9)
            && log_str(first, "finish_reason") == Some("stop")
            && log_u64(first, "status") == Some(200)
            && log_str(first, "workload") == Some("pod-a"),
        "access line: {first:#}"
    );
    let cost = log_f64(first, "cost_usd").context("no cost_usd")?;
    let want = (21.0 * 3.0 + 9.0 * 15.0) / 1e6;
    ensure!(close(cost, want), "cost_usd {cost}, expected {want}");
    ensure!(
        log_field(first, "stream") == Some(&json!(false))
            && log_field(&logs[1], "stream") == Some(&json!(true)),
        "stream field: {:#} / {:#}",
        first,
        logs[1]
    );
    ensure!(
        log_str(&logs[2], "finish_reason") == Some("tool_calls"),
        "{:#}",
        logs[2]
    );

    // Metrics.
    let m = d.metrics()?;
    let sonnet = [
        ("gen_ai_request_model", "gpt-4o"),
        ("gen_ai_response_model", "claude-3-5-sonnet-latest"),
        ("gen_ai_operation_name", "chat"),
        ("workload", "pod-a"),
    ];
    let (sum, count) = token_usage(&m, "input", &sonnet);
    ensure!(
        sum == 63.0 && count == 3.0,
        "input tokens of gpt-4o: sum {sum} count {count}\n{}",
        m.text
    );
    let (sum, count) = token_usage(&m, "output", &sonnet);
    ensure!(sum == 27.0 && count == 3.0, "output tokens: {sum} {count}");
    let providers: Vec<&str> = m
        .find("gen_ai_client_token_usage_count", &sonnet)
        .filter_map(|s| s.labels.get("gen_ai_provider_name").map(String::as_str))
        .collect();
    ensure!(
        !providers.is_empty()
            && providers
                .iter()
                .all(|p| *p == "anthropic" || *p == "fake-anthropic"),
        "gen_ai_provider_name: {providers:?}"
    );
    let (sum, _) = token_usage(
        &m,
        "input",
        &[("gen_ai_response_model", "claude-3-5-haiku-latest")],
    );
    ensure!(sum == 21.0, "haiku input tokens {sum}");
    let spent = m.sum(
        "trigate_llm_cost_usd_total",
        &[
            ("workload", "pod-a"),
            ("gen_ai_response_model", "claude-3-5-sonnet-latest"),
        ],
    );
    ensure!(close(spent, 3.0 * want), "cost total {spent}");
    ensure!(
        m.sum(
            "gen_ai_server_request_duration_seconds_count",
            &[("gen_ai_request_model", "gpt-4o")]
        ) == 3.0,
        "request duration histogram: {}",
        m.text
    );
    ensure!(
        m.sum(
            "gen_ai_server_time_to_first_token_seconds_count",
            &[("gen_ai_request_model", "gpt-4o")]
        ) >= 1.0,
        "time to first token of the stream"
    );
    Ok(())
}

/// (b) Anthropic SDK → an OpenAI-compatible provider: plain and streamed.
#[test]
fn anthropic_clients_are_served_by_an_openai_compatible_provider() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::openai(pod.host_ip.into())?;
    fake.usage(13, 5);
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-openai", &fake)],
            "models": [{"name": "claude-3-5-sonnet-latest",
                        "targets": [{"provider": "fake-openai", "model": "llama-3.1-8b"}]}],
            "prices": [{"model": "llama-3.1*", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = anthropic_base(addr);
    let request = json!({"model": "claude-3-5-sonnet-latest", "max_tokens": 100,
        "system": "Be brief.", "messages": user("Say hello.")});

    let r = no_error("create", anthropic(&pod, &base, "create", request.clone())?)?;
    let msg = &r["message"];
    ensure!(
        msg["type"] == "message"
            && msg["role"] == "assistant"
            && msg["content"][0]["type"] == "text"
            && msg["content"][0]["text"] == "hello from fake-openai"
            && msg["stop_reason"] == "end_turn",
        "message: {r:#}"
    );
    ensure!(
        msg["model"] == "llama-3.1-8b",
        "report_model served: {}",
        msg["model"]
    );
    ensure!(
        msg["usage"]["input_tokens"] == 13 && msg["usage"]["output_tokens"] == 5,
        "usage: {}",
        msg["usage"]
    );
    let up = fake.requests().pop().context("the provider got nothing")?;
    ensure!(up.path == "/v1/chat/completions", "{}", up.path);
    ensure!(
        up.body["model"] == "llama-3.1-8b"
            && up.body["messages"][0]["role"] == "system"
            && up.body["messages"][0]["content"]
                .to_string()
                .contains("Be brief.")
            && up.body["messages"][1]["role"] == "user",
        "the provider got: {:#}",
        up.body
    );
    ensure!(
        up.body["max_tokens"] == 100 || up.body["max_completion_tokens"] == 100,
        "max_tokens lost: {:#}",
        up.body
    );

    let r = no_error("stream", anthropic(&pod, &base, "stream", request)?)?;
    ensure!(r["text"] == "hello from fake-openai", "stream: {r:#}");
    let msg = &r["message"];
    ensure!(
        msg["stop_reason"] == "end_turn"
            && msg["usage"]["input_tokens"] == 13
            && msg["usage"]["output_tokens"] == 5,
        "final message of the stream: {msg:#}"
    );
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.body["stream"] == true && up.body["stream_options"]["include_usage"] == true,
        "a translated stream must ask for usage: {:#}",
        up.body
    );

    let logs = wait_llm_logs(&d, 2)?;
    for (l, stream) in logs.iter().zip([false, true]) {
        ensure!(
            log_str(l, "model_requested") == Some("claude-3-5-sonnet-latest")
                && log_str(l, "model_served") == Some("llama-3.1-8b")
                && log_str(l, "provider") == Some("fake-openai")
                && log_u64(l, "input_tokens") == Some(13)
                && log_u64(l, "output_tokens") == Some(5)
                && log_field(l, "stream") == Some(&json!(stream))
                && log_f64(l, "cost_usd").is_some_and(|c| close(c, (13.0 * 1.0 + 5.0 * 2.0) / 1e6))
                && log_field(l, "finish_reason").is_some(),
            "access line: {l:#}"
        );
    }
    let m = d.metrics()?;
    let labels = [
        ("gen_ai_request_model", "claude-3-5-sonnet-latest"),
        ("gen_ai_response_model", "llama-3.1-8b"),
        ("gen_ai_operation_name", "chat"),
    ];
    ensure!(
        token_usage(&m, "input", &labels) == (26.0, 2.0)
            && token_usage(&m, "output", &labels) == (10.0, 2.0),
        "token usage: {}",
        m.text
    );
    Ok(())
}

/// (c) The first-priority provider answers 500: the next one serves.
#[test]
fn a_failing_provider_fails_over_to_the_next_priority() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let bad = FakeLlm::anthropic(pod.host_ip.into())?;
    bad.fail_with(500);
    let good = FakeLlm::openai(pod.host_ip.into())?;
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "max_attempts": 3,
            "providers": [provider("fake-bad", &bad), provider("fake-good", &good)],
            "models": [{"name": "gpt-4o", "targets": [
                {"provider": "fake-bad", "model": "claude-3-5-sonnet-latest", "priority": 0},
                {"provider": "fake-good", "model": "gpt-4o-2024-08-06", "priority": 1},
            ]}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let r = no_error(
        "failover",
        openai(
            &pod,
            &openai_base(addr),
            "chat",
            json!({"model": "gpt-4o", "messages": user("hi")}),
        )?,
    )?;
    ensure!(
        r["completion"]["choices"][0]["message"]["content"] == "hello from fake-openai",
        "the healthy provider must answer: {r:#}"
    );
    ensure!(bad.count() >= 1, "the priority-0 provider was never tried");
    ensure!(good.count() == 1, "{:#?}", good.requests());
    let m = d.metrics()?;
    let failovers = m.sum("trigate_llm_failovers_total", &[]);
    ensure!(
        failovers >= 1.0,
        "trigate_llm_failovers_total {failovers}: {}",
        m.text
    );
    ensure!(
        m.find("trigate_llm_failovers_total", &[]).any(|s| s
            .labels
            .get("provider")
            .map(String::as_str)
            == Some("fake-bad")),
        "the failover must name the failed provider: {}",
        m.text
    );
    let logs = wait_llm_logs(&d, 1)?;
    ensure!(
        log_str(&logs[0], "provider") == Some("fake-good")
            && log_str(&logs[0], "model_served") == Some("gpt-4o-2024-08-06")
            && log_u64(&logs[0], "failovers").is_some_and(|n| n >= 1)
            && log_u64(&logs[0], "status") == Some(200),
        "access line: {:#}",
        logs[0]
    );
    Ok(())
}

/// (d) An input-token limit for pod-a only: pod-a is refused once spent,
/// pod-b is not.
#[test]
fn token_limits_refuse_one_workload_and_not_another() -> Result<()> {
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    // The daemon reaches the fake from pod-b's namespace too.
    pod_b.route_to(pod_a.host_ip.into())?;
    let fake = FakeLlm::anthropic(pod_a.host_ip.into())?;
    // Each answer reports more input tokens than the minute allows, so
    // the first request spends the budget whatever the estimate was.
    fake.usage(60, 5);
    let addr = llm_address(&pod_a)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-anthropic", &fake)],
            "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-anthropic", "model": "claude-3-5-sonnet-latest"}]}],
            "limits": [{"name": "tpm", "workloads": ["pod-a"], "input_tokens_per_minute": 50}],
        }),
    )
    .workload(pod_a.workload())
    .workload(pod_b.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let req = json!({"model": "gpt-4o", "messages": user("hi")});

    no_error("pod-a first", openai(&pod_a, &base, "chat", req.clone())?)?;
    let r = openai(&pod_a, &base, "chat", req.clone())?;
    let err = &r["error"];
    ensure!(
        err["class"] == "RateLimitError" && err["status"] == 429,
        "pod-a's second request must be refused: {r:#}"
    );
    ensure!(
        err["body"]["code"] == "rate_limit_exceeded"
            || err["body"]["error"]["code"] == "rate_limit_exceeded",
        "OpenAI error code: {r:#}"
    );
    ensure!(
        err["headers"].get("retry-after").is_some(),
        "429 without Retry-After: {r:#}"
    );
    for i in 0..2 {
        no_error(
            &format!("pod-b request {i}"),
            openai(&pod_b, &base, "chat", req.clone())?,
        )?;
    }
    ensure!(
        fake.count() == 3,
        "the refused request must not reach the provider: {:#?}",
        fake.requests()
    );
    let m = d.metrics()?;
    ensure!(
        m.sum(
            "trigate_llm_limit_refusals_total",
            &[("limit", "tpm"), ("workload", "pod-a")]
        ) == 1.0
            && m.sum("trigate_llm_limit_refusals_total", &[("workload", "pod-b")]) == 0.0,
        "limit refusals: {}",
        m.text
    );
    let logs = wait_llm_logs(&d, 4)?;
    ensure!(
        logs.iter()
            .filter(|l| log_u64(l, "status") == Some(429))
            .all(|l| log_str(l, "workload") == Some("pod-a"))
            && logs.iter().any(|l| log_u64(l, "status") == Some(429)),
        "access lines: {logs:#?}"
    );
    Ok(())
}

/// (e) A daily cost budget: the first request passes and spends it, the
/// next is refused (Anthropic client, Anthropic error shape).
#[test]
fn a_cost_budget_runs_out() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::anthropic(pod.host_ip.into())?;
    // 1000 × $3/M + 1000 × $15/M = $0.018 a request; the day allows $0.01.
    fake.usage(1000, 1000);
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-anthropic", &fake)],
            "models": [{"name": "claude-3-5-sonnet-latest", "targets": [{"provider": "fake-anthropic"}]}],
            // A request limit before the budget: requests the budget
            // refuses must not spend it.
            "limits": [
                {"name": "rpm", "workloads": ["pod-a"], "requests_per_minute": 3},
                {"name": "budget", "workloads": ["pod-a"], "cost_per_day_usd": 0.01},
            ],
            "prices": [{"model": "claude-3-5-sonnet*", "input_per_mtok": 3.0, "output_per_mtok": 15.0}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = anthropic_base(addr);
    let req =
        json!({"model": "claude-3-5-sonnet-latest", "max_tokens": 50, "messages": user("hi")});
    no_error("first", anthropic(&pod, &base, "create", req.clone())?)?;
    let r = anthropic(&pod, &base, "create", req.clone())?;
    let err = &r["error"];
    ensure!(
        err["class"] == "RateLimitError"
            && err["status"] == 429
            && err["body"]["type"] == "error"
            && err["body"]["error"]["type"] == "rate_limit_error",
        "the budget is spent: {r:#}"
    );
    ensure!(
        err["headers"].get("retry-after").is_some(),
        "429 without Retry-After: {r:#}"
    );
    // Three more: each still refused by the budget, none by `rpm` (which
    // would have run out if refused requests spent it).
    for i in 0..3 {
        let r = anthropic(&pod, &base, "create", req.clone())?;
        let message = r["error"]["body"]["error"]["message"]
            .as_str()
            .unwrap_or("");
        ensure!(
            r["error"]["status"] == 429 && message.contains("spend budget"),
            "refusal {i} after the budget ran out: {r:#}"
        );
    }
    ensure!(fake.count() == 1, "{:#?}", fake.requests());
    let logs = wait_llm_logs(&d, 5)?;
    let cost = log_f64(&logs[0], "cost_usd").context("no cost_usd")?;
    ensure!(close(cost, 0.018), "cost_usd {cost}: {:#}", logs[0]);
    let m = d.metrics()?;
    let spent = m.sum("trigate_llm_cost_usd_total", &[("workload", "pod-a")]);
    ensure!(close(spent, 0.018), "trigate_llm_cost_usd_total {spent}");
    ensure!(
        m.sum(
            "trigate_llm_limit_refusals_total",
            &[("limit", "budget"), ("workload", "pod-a")]
        ) == 4.0
            && m.sum("trigate_llm_limit_refusals_total", &[("limit", "rpm")]) == 0.0,
        "{}",
        m.text
    );
    Ok(())
}

/// (f) The gateway sends its own provider keys; the pod's key never
/// leaves the node and the gateway's key is never logged.
#[test]
fn provider_keys_are_injected_and_pod_keys_never_forwarded() -> Result<()> {
    const GATEWAY_KEY: &str = "sk-gateway-key";
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let an = FakeLlm::anthropic(pod.host_ip.into())?;
    an.usage(17, 3);
    let oa = FakeLlm::openai(pod.host_ip.into())?;
    let key = TempFile::new("provider-key", GATEWAY_KEY)?;
    let key_ref = json!({"file": key.path()});
    let mut p_an = provider("fake-anthropic", &an);
    p_an["api_key"] = key_ref.clone();
    let mut p_oa = provider("fake-openai", &oa);
    p_oa["kind"] = json!("openai");
    p_oa["api_key"] = key_ref;
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [p_an, p_oa],
            "models": [
                {"name": "claude-3-5-sonnet-latest", "targets": [{"provider": "fake-anthropic"}]},
                {"name": "gpt-4o", "targets": [{"provider": "fake-openai"}]},
            ],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;

    let ab = anthropic_base(addr);
    no_error(
        "anthropic",
        anthropic(
            &pod,
            &ab,
            "create",
            json!({"model": "claude-3-5-sonnet-latest", "max_tokens": 20, "messages": user("hi")}),
        )?,
    )?;
    let r = no_error(
        "count_tokens",
        anthropic(
            &pod,
            &ab,
            "count",
            json!({"model": "claude-3-5-sonnet-latest", "messages": user("hi")}),
        )?,
    )?;
    ensure!(
        r["input_tokens"] == 17,
        "count_tokens from the provider: {r:#}"
    );
    no_error(
        "openai",
        openai(
            &pod,
            &openai_base(addr),
            "chat",
            json!({"model": "gpt-4o", "messages": user("hi")}),
        )?,
    )?;

    let an_seen = an.requests();
    ensure!(
        an_seen.len() == 2
            && an_seen
                .iter()
                .any(|r| r.path == "/v1/messages/count_tokens"),
        "{an_seen:#?}"
    );
    for r in &an_seen {
        // The API takes `x-api-key` (and, as recent SDKs send it, a Bearer
        // token); either carries the gateway's key, never the pod's.
        ensure!(
            r.header("x-api-key") == Some(GATEWAY_KEY)
                || r.header("authorization") == Some(&format!("Bearer {GATEWAY_KEY}")),
            "Anthropic must get the gateway's key: {:?}",
            r.headers
        );
    }
    // An HTTP/2 client (h2c prior knowledge: served by hyper, the
    // providers called as for HTTP/1.1 clients) with a key of its own.
    let pod_auth = format!("authorization: Bearer {POD_KEY}");
    let (status, head, body) = curl(
        &pod,
        &[
            "--http2-prior-knowledge",
            "-H",
            &pod_auth,
            "-H",
            "content-type: application/json",
            "--data-raw",
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#,
            &format!("{}/chat/completions", openai_base(addr)),
        ],
    )?;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 200 && head.starts_with("http/2") && v["object"] == "chat.completion",
        "an HTTP/2 client: {status} {head} {body}"
    );
    let oa_seen = oa.requests();
    ensure!(oa_seen.len() == 2, "{oa_seen:#?}");
    for r in &oa_seen {
        ensure!(
            r.header("authorization") == Some(&format!("Bearer {GATEWAY_KEY}")),
            "OpenAI must get the gateway's key: {:?}",
            r.headers
        );
    }
    for r in an_seen.iter().chain(&oa_seen) {
        ensure!(
            !r.headers.values().any(|v| v.contains(POD_KEY)) && !r.raw_body.contains(POD_KEY),
            "the pod's key reached a provider: {r:#?}"
        );
    }
    wait_llm_logs(&d, 3)?;
    let dump = d.dump();
    ensure!(
        !dump.contains(GATEWAY_KEY),
        "the daemon logged the provider key"
    );
    ensure!(!dump.contains(POD_KEY), "the daemon logged the pod's key");
    Ok(())
}

/// (g) A client that stops reading mid-stream and closes: the gateway
/// drops the provider's stream long before it would have ended.
#[test]
fn a_client_leaving_mid_stream_cancels_the_provider_stream() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::anthropic(pod.host_ip.into())?;
    // 40 events 150 ms apart: 6 s if nobody leaves.
    let events = 40;
    fake.slow_stream(events, Duration::from_millis(150));
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-anthropic", &fake)],
            "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-anthropic", "model": "claude-3-5-sonnet-latest"}]}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let started = Instant::now();
    let r = no_error(
        "disconnect",
        sdk(
            Some(&pod),
            OPENAI_PY,
            &json!({"base_url": openai_base(addr), "api_key": POD_KEY, "op": "disconnect", "read": 4,
                "request": {"model": "gpt-4o", "messages": user("count slowly")}}),
        )?,
    )?;
    ensure!(r["read"] == 4, "{r:#}");
    let stream = poll_until(Duration::from_secs(15), "the fake's stream to end", || {
        Ok(fake.streams().pop())
    })?;
    ensure!(
        stream.client_gone && !stream.completed,
        "the provider stream ran to its end although the client left: {stream:?}"
    );
    ensure!(
        stream.written < events,
        "all {events} events were sent: {stream:?}"
    );
    let lasted = stream.ended - stream.started;
    ensure!(
        lasted < Duration::from_millis(150 * events as u64 / 2),
        "the provider stream lasted {lasted:?} (client run {:?}): {stream:?}",
        started.elapsed()
    );
    let logs = wait_llm_logs(&d, 1)?;
    ensure!(
        log_field(&logs[0], "stream") == Some(&json!(true)),
        "{:#}",
        logs[0]
    );
    Ok(())
}

/// (h) Bad input is refused in the caller's protocol; a provider's broken
/// stream ends the client's stream with an error; the daemon keeps serving.
#[test]
fn bad_input_and_broken_streams_are_errors_in_the_callers_protocol() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let good = FakeLlm::anthropic(pod.host_ip.into())?;
    let broken = FakeLlm::anthropic(pod.host_ip.into())?;
    broken.malformed_stream();
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-good", &good), provider("fake-broken", &broken)],
            "models": [
                {"name": "gpt-4o", "targets": [{"provider": "fake-good", "model": "claude-3-5-sonnet-latest"}]},
                {"name": "broken", "targets": [{"provider": "fake-broken", "model": "claude-3-5-sonnet-latest"}]},
            ],
        }),
    )
    // The routes' policy runs first on an LLM destination too; its
    // refusals are said in the caller's protocol.
    .set(
        "/routes",
        json!([{"name": "closed", "match": {"path": {"prefix": "/closed"}}, "allow": [{"workloads": ["nobody"]}]}]),
    )
    .set("/http", json!({"max_request_body_bytes": 4096}))
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);

    // Oversized prompts: 413 in the caller's shape, whether the length is
    // declared (refused before the body is read) or the body is chunked
    // (refused where it crosses the cap).
    let big = json!({"model": "gpt-4o", "messages": user(&"x".repeat(10_000))}).to_string();
    let (status, _, body) = curl(
        &pod,
        &[
            "-X",
            "POST",
            "--data-raw",
            &big,
            &format!("{base}/chat/completions"),
        ],
    )?;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 413
            && v["error"]["type"] == "invalid_request_error"
            && v["error"]["message"].is_string(),
        "an oversized OpenAI request: {status} {body}"
    );
    let (status, _, body) = curl(
        &pod,
        &[
            "-X",
            "POST",
            "-H",
            "transfer-encoding: chunked",
            "-H",
            "anthropic-version: 2023-06-01",
            "--data-raw",
            &big,
            &format!("http://{addr}/v1/messages"),
        ],
    )?;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 413 && v["type"] == "error" && v["error"]["type"] == "request_too_large",
        "an oversized chunked Anthropic request: {status} {body}"
    );

    let closed = format!("http://{addr}/closed/v1/messages");
    let (status, _, body) = curl(
        &pod,
        &[
            "-X",
            "POST",
            "-H",
            "anthropic-version: 2023-06-01",
            "--data-raw",
            "{}",
            &closed,
        ],
    )?;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 403 && v["type"] == "error" && v["error"]["type"] == "permission_error",
        "a route refusal to an Anthropic client: {status} {body}"
    );
    let closed = format!("http://{addr}/closed/v1/chat/completions");
    let (status, _, body) = curl(&pod, &["-X", "POST", "--data-raw", "{}", &closed])?;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 403
            && v["error"]["type"] == "permission_error"
            && v["error"]["code"] == "forbidden"
            && v["error"]["message"].is_string(),
        "a route refusal to an OpenAI client: {status} {body}"
    );

    // Not JSON, OpenAI path: OpenAI error object.
    let url = format!("{base}/chat/completions");
    let (status, head, body) = curl(
        &pod,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer sk-pod-key",
            "--data-raw",
            "{\"model\": \"gpt-4o\", \"messages\": [",
            &url,
        ],
    )?;
    ensure!(status == 400, "invalid JSON: {status} {body}");
    ensure!(head.contains("application/json"), "{head}");
    let v: Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    let e = &v["error"];
    ensure!(
        e["type"] == "invalid_request_error"
            && e["message"].is_string()
            && e.get("param").is_some()
            && e.get("code").is_some(),
        "OpenAI error shape: {body}"
    );

    // Not JSON, Anthropic path: Anthropic error object.
    let url = format!("{}/v1/messages", anthropic_base(addr));
    let (status, _, body) = curl(
        &pod,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "x-api-key: sk-pod-key",
            "-H",
            "anthropic-version: 2023-06-01",
            "--data-raw",
            "{oops",
            &url,
        ],
    )?;
    ensure!(status == 400, "invalid JSON: {status} {body}");
    let v: Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    ensure!(
        v["type"] == "error"
            && v["error"]["type"] == "invalid_request_error"
            && v["error"]["message"].is_string(),
        "Anthropic error shape: {body}"
    );

    // A model nobody serves.
    let r = openai(
        &pod,
        &base,
        "chat",
        json!({"model": "no-such-model", "messages": user("hi")}),
    )?;
    let err = &r["error"];
    ensure!(
        err["class"] == "NotFoundError"
            && err["status"] == 404
            && (err["body"]["code"] == "model_not_found"
                || err["body"]["error"]["code"] == "model_not_found"),
        "unknown model: {r:#}"
    );
    ensure!(
        good.count() == 0 && broken.count() == 0,
        "refused requests reached a provider"
    );

    // The provider's stream breaks: the client's stream ends in an error
    // event (the SDK raises APIError with the error object), not a clean end.
    let r = openai(
        &pod,
        &base,
        "stream",
        json!({"model": "broken", "messages": user("hi")}),
    )?;
    ensure!(broken.count() == 1, "{:#?}", broken.requests());
    let err = &r["error"];
    ensure!(
        err["class"] == "APIError" && err["body"].is_object(),
        "a broken provider stream must end the client's stream with an error event: {r:#}"
    );
    ensure!(
        !r["chunks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["choices"][0]["finish_reason"] == "stop")),
        "a broken stream must not look finished: {r:#}"
    );

    // Still serving.
    let r = no_error(
        "after",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user("hi")}),
        )?,
    )?;
    ensure!(
        r["completion"]["choices"][0]["message"]["content"] == "hello from fake-anthropic",
        "{r:#}"
    );
    let logs = wait_llm_logs(&d, 5)?;
    ensure!(
        logs.iter().any(|l| log_u64(l, "status") == Some(404)
            && log_str(l, "model_requested") == Some("no-such-model")),
        "{logs:#?}"
    );
    Ok(())
}

/// (i) `GET /v1/models` lists exactly the models the workload may use.
#[test]
fn the_model_list_follows_access_rules() -> Result<()> {
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    pod_b.route_to(pod_a.host_ip.into())?;
    let fake = FakeLlm::openai(pod_a.host_ip.into())?;
    let addr = llm_address(&pod_a)?;
    let target = json!([{"provider": "fake-openai"}]);
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-openai", &fake)],
            "models": [
                {"name": "gpt-4o", "targets": target},
                {"name": "gpt-4o-mini", "targets": target},
                {"name": "claude-3-5-haiku", "targets": target},
                {"name": "llama-3", "targets": target},
            ],
            "access": [
                {"workloads": ["pod-a"], "models": ["gpt-4o*"]},
                {"workloads": ["pod-b"], "models": ["claude-3-5-haiku"]},
            ],
        }),
    )
    .workload(pod_a.workload())
    .workload(pod_b.workload());
    let _d = node.start(&cfg)?;
    let base = openai_base(addr);
    let r = no_error("pod-a models", openai(&pod_a, &base, "models", json!({}))?)?;
    ensure!(
        r["models"] == json!(["gpt-4o", "gpt-4o-mini"]),
        "pod-a: {r:#}"
    );
    let r = no_error("pod-b models", openai(&pod_b, &base, "models", json!({}))?)?;
    ensure!(r["models"] == json!(["claude-3-5-haiku"]), "pod-b: {r:#}");

    // A model outside the workload's list is refused before any provider.
    let r = openai(
        &pod_b,
        &base,
        "chat",
        json!({"model": "gpt-4o", "messages": user("hi")}),
    )?;
    let status = r["error"]["status"].as_u64().unwrap_or(0);
    ensure!(
        status == 403 || status == 404,
        "pod-b may not use gpt-4o: {r:#}"
    );
    ensure!(fake.count() == 0, "{:#?}", fake.requests());
    no_error(
        "pod-a gpt-4o",
        openai(
            &pod_a,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user("hi")}),
        )?,
    )?;
    ensure!(fake.count() == 1, "{:#?}", fake.requests());
    Ok(())
}

#[test]
fn an_sdk_over_tls_is_terminated_with_the_node_ca() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::anthropic(pod.host_ip.into())?;
    let addr = llm_address(&pod)?;
    let name = "api.openai.e2e.test";
    let ca_dir = TempFile::new("README", "node CA of one e2e test\n")?;
    let ca_cert = ca_dir.path().parent().context("temp dir")?.join("ca.crt");
    let ca_key = ca_dir.path().parent().context("temp dir")?.join("ca.key");
    let cfg = node
        .config()
        .set("/tls", json!({"ca_cert": ca_cert, "ca_key": ca_key}))
        .dns_host(name, &[addr.ip()])
        .destination(
            Destination::redirect("openai")
                .host(name)
                .port(addr.port())
                .tls(json!({"mode": "terminate"}))
                .gate("llm"),
        )
        .set(
            "/llm",
            json!({
                "providers": [provider("fake-anthropic", &fake)],
                "models": [{"name": "gpt-4o",
                            "targets": [{"provider": "fake-anthropic", "model": "claude-sonnet-4-5"}]}],
            }),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    let arg = |op: &str| {
        json!({
            "base_url": format!("https://{name}:{}/v1", addr.port()),
            "ca": ca_cert,
            "resolve": {name: addr.ip().to_string()},
            "op": op,
            "request": {"model": "gpt-4o", "messages": user("Say hello."), "max_tokens": 50},
        })
    };
    // The SDK trusts only the node CA: the gateway answered with its leaf.
    let r = no_error("chat over tls", sdk(Some(&pod), OPENAI_PY, &arg("chat"))?)?;
    ensure!(
        r["completion"]["choices"][0]["message"]["content"] == "hello from fake-anthropic"
            && r["completion"]["model"] == "claude-sonnet-4-5",
        "completion over tls: {r:#}"
    );
    let r = no_error(
        "stream over tls",
        sdk(Some(&pod), OPENAI_PY, &arg("stream"))?,
    )?;
    ensure!(
        r["text"] == "hello from fake-anthropic",
        "stream over tls: {r:#}"
    );
    ensure!(fake.requests().len() == 2, "{:#?}", fake.requests());
    let logs = wait_llm_logs(&d, 2)?;
    ensure!(
        logs.iter()
            .all(|l| log_str(l, "model_served") == Some("claude-sonnet-4-5")
                && log_str(l, "destination") == Some("openai")),
        "{logs:#?}"
    );
    Ok(())
}

// ------------------------------------------- Gemini and Bedrock providers

/// (k) OpenAI SDK → a Gemini provider: plain, streamed and a tool call.
/// The gateway writes `generateContent` / `streamGenerateContent?alt=sse`
/// bodies (no `model`, the system message as `systemInstruction`), sends
/// the key from its file as `x-goog-api-key`, and reads the answers back
/// as OpenAI's.
#[test]
fn openai_clients_are_served_by_a_gemini_provider() -> Result<()> {
    const GEMINI_KEY: &str = "AIza-fake-gemini-key";
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::gemini(pod.host_ip.into())?;
    fake.usage(19, 8);
    let key = TempFile::new("gemini-key", &format!("{GEMINI_KEY}\n"))?;
    let mut p = provider("fake-gemini", &fake);
    p["api_key"] = json!({"file": key.path()});
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [p],
            "models": [{"name": "gpt-4o",
                        "targets": [{"provider": "fake-gemini", "model": "gemini-2.0-flash"}]}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."}
    ]);

    // Plain.
    let r = no_error(
        "chat",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": messages, "max_tokens": 50}),
        )?,
    )?;
    let c = &r["completion"];
    ensure!(
        c["object"] == "chat.completion"
            && c["choices"][0]["message"]["role"] == "assistant"
            && c["choices"][0]["message"]["content"] == "hello from fake-gemini"
            && c["choices"][0]["finish_reason"] == "stop",
        "completion: {r:#}"
    );
    ensure!(
        c["usage"]["prompt_tokens"] == 19
            && c["usage"]["completion_tokens"] == 8
            && c["usage"]["total_tokens"] == 27,
        "usage: {}",
        c["usage"]
    );
    let seen = fake.requests();
    ensure!(seen.len() == 1, "{seen:#?}");
    let up = &seen[0];
    ensure!(
        up.method == "POST" && up.path == "/v1beta/models/gemini-2.0-flash:generateContent",
        "{} {}",
        up.method,
        up.path
    );
    ensure!(
        up.header("x-goog-api-key") == Some(GEMINI_KEY),
        "Gemini must get the key from the file: {:?}",
        up.headers
    );
    ensure!(
        up.body.get("model").is_none()
            && up.body["contents"][0]["role"] == "user"
            && up.body["contents"][0]["parts"][0]["text"] == "Say hello."
            && up.body["contents"].as_array().is_some_and(|c| c.len() == 1)
            && up.body["systemInstruction"]
                .to_string()
                .contains("You are terse.")
            && up.body["generationConfig"]["maxOutputTokens"] == 50,
        "the provider got: {:#}",
        up.body
    );

    // Streamed, usage asked for.
    let r = no_error(
        "stream",
        openai(
            &pod,
            &base,
            "stream",
            json!({"model": "gpt-4o", "messages": messages, "stream_options": {"include_usage": true}}),
        )?,
    )?;
    let chunks = r["chunks"].as_array().context("chunks")?;
    ensure!(r["text"] == "hello from fake-gemini", "stream: {r:#}");
    ensure!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
            && chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"),
        "chunks: {r:#}"
    );
    let last = chunks.last().context("no chunks")?;
    ensure!(
        last["usage"]["prompt_tokens"] == 19 && last["usage"]["completion_tokens"] == 8,
        "the last chunk must carry the usage: {last:#}"
    );
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
            && up.header("x-goog-api-key") == Some(GEMINI_KEY)
            && up.body.get("model").is_none()
            && up.body.get("stream").is_none()
            && up.body["contents"][0]["parts"][0]["text"] == "Say hello.",
        "{} {:#}",
        up.path,
        up.body
    );
    let streams = fake.streams();
    ensure!(
        streams.len() == 1 && streams[0].completed,
        "the provider's stream: {streams:#?}"
    );

    // A tool call: functionDeclarations there, functionCall back.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let r = no_error(
        "tool",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user("Please use the tool for Paris"), "tools": tools}),
        )?,
    )?;
    let choice = &r["completion"]["choices"][0];
    let call = &choice["message"]["tool_calls"][0];
    ensure!(
        choice["finish_reason"] == "tool_calls" && call["function"]["name"] == "get_weather",
        "tool call: {r:#}"
    );
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))?;
    ensure!(args == json!({"city": "Paris"}), "arguments: {args}");
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather",
        "tools must reach Gemini as functionDeclarations: {:#}",
        up.body
    );

    for r in fake.requests() {
        ensure!(
            !r.headers.values().any(|v| v.contains(POD_KEY)) && !r.raw_body.contains(POD_KEY),
            "the pod's key reached Gemini: {r:#?}"
        );
    }
    let logs = wait_llm_logs(&d, 3)?;
    for (l, stream) in logs.iter().zip([false, true, false]) {
        ensure!(
            log_str(l, "provider") == Some("fake-gemini")
                && log_str(l, "model_requested") == Some("gpt-4o")
                && log_str(l, "model_served") == Some("gemini-2.0-flash")
                && log_u64(l, "input_tokens") == Some(19)
                && log_u64(l, "output_tokens") == Some(8)
                && log_u64(l, "status") == Some(200)
                && log_field(l, "stream") == Some(&json!(stream)),
            "access line: {l:#}"
        );
    }
    ensure!(
        !d.dump().contains(GEMINI_KEY),
        "the daemon logged the Gemini key"
    );
    Ok(())
}

/// (l) Anthropic SDK → a Bedrock provider: plain and streamed. The
/// gateway writes Converse bodies to `/model/<id>/converse(-stream)` with
/// the id's `:` percent-encoded, signs them with SigV4 from credentials
/// in files (the fake recomputes the signature), and reads the JSON and
/// the event-stream frames back as Anthropic's.
#[test]
fn anthropic_clients_are_served_by_a_bedrock_provider() -> Result<()> {
    const KEY_ID: &str = "AKIDFAKEBEDROCK01";
    const SECRET: &str = "fake/Bedrock+Secret0123456789abcdefghij";
    const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
    const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0";
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::bedrock(pod.host_ip.into())?;
    fake.usage(23, 6);
    fake.expect_aws(KEY_ID, SECRET, "us-east-1");
    let key_id = TempFile::new("aws-access-key-id", &format!("{KEY_ID}\n"))?;
    let secret = TempFile::new("aws-secret-access-key", &format!("{SECRET}\n"))?;
    let mut p = provider("fake-bedrock", &fake);
    p["aws"] = json!({
        "region": "us-east-1",
        "access_key_id": {"file": key_id.path()},
        "secret_access_key": {"file": secret.path()},
    });
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [p],
            "models": [{"name": "claude-3-haiku",
                        "targets": [{"provider": "fake-bedrock", "model": MODEL_ID}]}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = anthropic_base(addr);
    let request = json!({"model": "claude-3-haiku", "max_tokens": 100,
        "system": "Be brief.", "messages": user("Say hello.")});

    let signed = |up: &trigate_e2e::RecordedRequest| -> Result<()> {
        ensure!(
            up.sigv4 == Some(SigV4Check::Verified),
            "the SigV4 signature must verify: {:?}\nheaders: {:#?}",
            up.sigv4,
            up.headers
        );
        let auth = up.header("authorization").unwrap_or_default();
        ensure!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/"))
                && auth.contains("/us-east-1/bedrock/aws4_request, SignedHeaders=")
                && auth.contains("host")
                && auth.contains("x-amz-date"),
            "authorization: {auth}"
        );
        Ok(())
    };

    // Plain.
    let r = no_error("create", anthropic(&pod, &base, "create", request.clone())?)?;
    let msg = &r["message"];
    ensure!(
        msg["type"] == "message"
            && msg["role"] == "assistant"
            && msg["content"][0]["type"] == "text"
            && msg["content"][0]["text"] == "hello from fake-bedrock"
            && msg["stop_reason"] == "end_turn",
        "message: {r:#}"
    );
    ensure!(
        msg["usage"]["input_tokens"] == 23 && msg["usage"]["output_tokens"] == 6,
        "usage: {}",
        msg["usage"]
    );
    let seen = fake.requests();
    ensure!(seen.len() == 1, "{seen:#?}");
    let up = &seen[0];
    ensure!(
        up.method == "POST" && up.path == format!("{MODEL_PATH}/converse"),
        "{} {}",
        up.method,
        up.path
    );
    signed(up)?;
    ensure!(
        up.body.get("model").is_none()
            && up.body["messages"][0]["role"] == "user"
            && up.body["messages"][0]["content"][0]["text"] == "Say hello."
            && up.body["system"][0]["text"] == "Be brief."
            && up.body["inferenceConfig"]["maxTokens"] == 100,
        "the provider got: {:#}",
        up.body
    );

    // Streamed.
    let r = no_error("stream", anthropic(&pod, &base, "stream", request)?)?;
    ensure!(r["text"] == "hello from fake-bedrock", "stream: {r:#}");
    let msg = &r["message"];
    ensure!(
        msg["stop_reason"] == "end_turn"
            && msg["usage"]["input_tokens"] == 23
            && msg["usage"]["output_tokens"] == 6,
        "final message of the stream: {msg:#}"
    );
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.path == format!("{MODEL_PATH}/converse-stream"),
        "{}",
        up.path
    );
    signed(&up)?;
    ensure!(
        up.body.get("model").is_none() && up.body.get("stream").is_none(),
        "{:#}",
        up.body
    );
    let streams = fake.streams();
    ensure!(
        streams.len() == 1 && streams[0].completed,
        "the provider's stream: {streams:#?}"
    );

    for r in fake.requests() {
        ensure!(
            !r.headers.values().any(|v| v.contains(POD_KEY)) && !r.raw_body.contains(POD_KEY),
            "the pod's key reached Bedrock: {r:#?}"
        );
    }
    let logs = wait_llm_logs(&d, 2)?;
    for (l, stream) in logs.iter().zip([false, true]) {
        ensure!(
            log_str(l, "provider") == Some("fake-bedrock")
                && log_str(l, "model_requested") == Some("claude-3-haiku")
                && log_str(l, "model_served") == Some(MODEL_ID)
                && log_u64(l, "input_tokens") == Some(23)
                && log_u64(l, "output_tokens") == Some(6)
                && log_u64(l, "status") == Some(200)
                && log_field(l, "stream") == Some(&json!(stream)),
            "access line: {l:#}"
        );
    }
    ensure!(
        !d.dump().contains(SECRET),
        "the daemon logged the AWS secret"
    );
    Ok(())
}

#[test]
fn responses_api_clients_are_served_through_chat_by_an_anthropic_provider() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::anthropic(pod.host_ip.into())?;
    fake.usage(17, 4);
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-anthropic", &fake)],
            "models": [{"name": "gpt-4o", "report_model": "requested",
                        "targets": [{"provider": "fake-anthropic", "model": "claude-sonnet-4-5"}]}],
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let request = json!({"model": "gpt-4o", "instructions": "Be brief.", "input": "Say hello.",
                         "max_output_tokens": 60});
    let r = no_error(
        "responses",
        openai(&pod, &base, "responses", request.clone())?,
    )?;
    let resp = &r["response"];
    ensure!(
        resp["object"] == "response"
            && resp["status"] == "completed"
            && resp["model"] == "gpt-4o"
            && resp["output"][0]["content"][0]["text"] == "hello from fake-anthropic"
            && resp["usage"]["input_tokens"] == 17
            && resp["usage"]["output_tokens"] == 4,
        "response: {r:#}"
    );
    let up = fake.requests().pop().context("no request")?;
    ensure!(
        up.path == "/v1/messages"
            && up.body["model"] == "claude-sonnet-4-5"
            && up.body["max_tokens"] == 60
            && up.body["system"].to_string().contains("Be brief."),
        "the provider got: {:#}",
        up.body
    );
    let r = no_error(
        "responses stream",
        openai(&pod, &base, "responses_stream", request)?,
    )?;
    let resp = &r["response"];
    ensure!(
        resp["output"][0]["content"][0]["text"] == "hello from fake-anthropic"
            && resp["usage"]["output_tokens"] == 4
            && r["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|t| t == "response.output_text.delta")),
        "streamed response: {r:#}"
    );
    let logs = wait_llm_logs(&d, 2)?;
    ensure!(
        logs.iter().all(|l| log_u64(l, "input_tokens") == Some(17)
            && log_str(l, "provider") == Some("fake-anthropic")),
        "{logs:#?}"
    );
    Ok(())
}

/// Guardrails through the SDKs: an e-mail is redacted before the provider
/// sees it and restored in the answer (whole and streamed, the placeholder
/// cut over two events), a card number is refused with a clear error
/// before any provider is asked, and a key the model writes is redacted
/// in the stream although it arrives cut over two SSE events (OpenAI and
/// Anthropic clients).
#[test]
fn guardrails_redact_restore_and_block_for_the_sdks() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::openai(pod.host_ip.into())?;
    let judge = Webhook::start()?;
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-openai", &fake)],
            "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-openai"}]}],
        }),
    )
    .set(
        "/guardrails",
        json!({
            "topics": [{
                "name": "legal-advice",
                "keywords": ["legal advice", "lawyer", "attorney", "lawsuit"],
                "examples": [
                    "Can I sue my landlord for keeping my deposit?",
                    "Do I need a lawyer for this dispute?",
                    "Is this clause in my employment contract enforceable?",
                    "Is it legal for my employer to do this?",
                    "Who is liable if someone gets hurt on my property?",
                    "How do I write a will and avoid probate?",
                    "Can I use a trademarked logo or copyrighted image without permission?",
                    "What should I expect at my court hearing for a criminal charge?",
                    "How does child custody work in a divorce?",
                    "What are my rights as a consumer when a product is defective?",
                ],
            }],
            "policies": [{
                "name": "customer-data",
                "request": [
                    {"detect": ["email"], "action": "redact", "restore": true},
                    {"detect": ["credit_card"], "action": "block"},
                ],
                "response": [{"detect": ["secret"], "action": "redact"}],
            }, {
                "name": "finance-agent",
                "workloads": ["pod-a"],
                "deny_topics": ["legal-advice"],
                "judges": ["compliance"],
            }],
            "judges": [{"name": "compliance", "kind": "webhook", "url": judge.url(), "fail": "closed"}],
            "max_scan_bytes": 65536,
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let email = "jane.doe@example.com";

    fake.reply("I will write to <EMAIL_1> today.");
    let ask = json!({"model": "gpt-4o",
                     "messages": user(&format!("Draft a note to {email} about the invoice."))});
    let r = no_error("chat", openai(&pod, &base, "chat", ask.clone())?)?;
    ensure!(
        r["completion"]["choices"][0]["message"]["content"]
            == format!("I will write to {email} today.").as_str(),
        "the placeholder was not restored: {r:#}"
    );
    let up = fake.requests().pop().context("no provider request")?;
    ensure!(
        up.raw_body.contains("Draft a note to <EMAIL_1> about")
            && !up.raw_body.contains("jane.doe"),
        "the provider saw: {}",
        up.raw_body
    );

    fake.reply_in_pieces(&["Sent to <EMA", "IL_1>", "."]);
    let r = no_error("stream", openai(&pod, &base, "stream", ask.clone())?)?;
    ensure!(
        r["text"] == format!("Sent to {email}.").as_str(),
        "stream: {r:#}"
    );

    let asked = fake.count();
    let card = "4111 1111 1111 1111";
    let r = openai(
        &pod,
        &base,
        "chat",
        json!({"model": "gpt-4o", "messages": user(&format!("Charge my card {card} please."))}),
    )?;
    let message = r["error"]["body"]["message"].as_str().unwrap_or_default();
    ensure!(
        r["error"]["class"] == "BadRequestError"
            && r["error"]["status"] == 400
            && r["error"]["body"]["code"] == "guardrail_blocked"
            && message.contains("\"customer-data\"")
            && message.contains("credit_card")
            && message.contains("messages[0].content")
            && !r.to_string().contains("4111"),
        "the card was not refused as it should be: {r:#}"
    );
    ensure!(
        fake.count() == asked,
        "a refused prompt reached the provider"
    );

    let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh";
    fake.reply_in_pieces(&["Here is the key: ", &key[..14], &key[14..], " - rotate it."]);
    let r = no_error(
        "stream",
        openai(
            &pod,
            &base,
            "stream",
            json!({"model": "gpt-4o", "messages": user("key?")}),
        )?,
    )?;
    ensure!(
        r["text"] == "Here is the key: <OPENAI_KEY_1> - rotate it."
            && !r.to_string().contains(&key[8..20]),
        "the key cut over two events went through: {r:#}"
    );
    let r = no_error(
        "anthropic stream",
        anthropic(
            &pod,
            &anthropic_base(addr),
            "stream",
            json!({"model": "gpt-4o", "max_tokens": 50, "messages": user("key?")}),
        )?,
    )?;
    ensure!(
        r["text"] == "Here is the key: <OPENAI_KEY_1> - rotate it."
            && r["message"]["content"][0]["text"] == "Here is the key: <OPENAI_KEY_1> - rotate it.",
        "anthropic stream: {r:#}"
    );

    // Topics: the finance agent may not ask for legal advice (a question
    // that is none of the examples and has none of the keywords); a
    // finance question passes.
    fake.reply("Noted.");
    let asked = fake.count();
    let legal = openai(
        &pod,
        &base,
        "chat",
        json!({"model": "gpt-4o", "messages": user(
            "My landlord wants to evict me next week; is that allowed under tenancy law?")}),
    )?;
    ensure!(
        legal["error"]["status"] == 400
            && legal["error"]["body"]["code"] == "guardrail_blocked"
            && legal["error"]["body"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"finance-agent\"") && m.contains("legal-advice")),
        "a legal question reached the finance agent's model: {legal:#}"
    );
    ensure!(
        fake.count() == asked,
        "the legal question reached the provider"
    );
    no_error(
        "finance question",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user(
                "How should we forecast quarterly cash flow for the budget review?")}),
        )?,
    )?;
    ensure!(
        fake.count() == asked + 1,
        "the finance question was not served"
    );

    // The webhook judge: it saw every question, after the detectors
    // (never the e-mail), blocks one and redacts another.
    ensure!(
        judge.texts().iter().any(|t| t.contains("<EMAIL_1>"))
            && !judge.texts().iter().any(|t| t.contains("jane.doe")),
        "the judge saw: {:?}",
        judge.texts()
    );
    let insider = openai(
        &pod,
        &base,
        "chat",
        json!({"model": "gpt-4o", "messages": user("Should we buy shares before the insider announcement?")}),
    )?;
    ensure!(
        insider["error"]["status"] == 400
            && insider["error"]["body"]["message"]
                .as_str()
                .is_some_and(
                    |m| m.contains("judge \"compliance\"") && m.contains("insider trading")
                ),
        "the judge's block: {insider:#}"
    );
    ensure!(
        fake.count() == asked + 1,
        "the judged question reached the provider"
    );
    no_error(
        "judge redaction",
        openai(
            &pod,
            &base,
            "chat",
            json!({"model": "gpt-4o", "messages": user("Draft a memo to Acme Corp about the merger.")}),
        )?,
    )?;
    let up = fake.requests().pop().context("no provider request")?;
    ensure!(
        up.raw_body
            .contains("Draft a memo to [CLIENT] about the merger.")
            && !up.raw_body.contains("Acme"),
        "the judge's redaction did not reach the provider: {}",
        up.raw_body
    );

    // Bad input: bounded and refused with a clear error, never passed
    // unscanned. A prompt over guardrails.max_scan_bytes:
    let url = format!("{base}/chat/completions");
    let post = |body: &[u8]| -> Result<(u16, Value)> {
        let file = TempFile::new("body.json", "")?;
        std::fs::write(file.path(), body)?;
        let data = format!("@{}", file.path().display());
        let (status, _, body) = curl(
            &pod,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                &data,
                &url,
            ],
        )?;
        Ok((status, serde_json::from_str(&body).unwrap_or_default()))
    };
    let huge = json!({"model": "gpt-4o", "messages": user(&"word ".repeat(14_000))}).to_string();
    let (status, v) = post(huge.as_bytes())?;
    ensure!(
        status == 400
            && v["error"]["code"] == "guardrail_blocked"
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_scan_bytes")),
        "a prompt over max_scan_bytes: {status} {v}"
    );
    // Deeply nested JSON and invalid UTF-8: 400 in OpenAI's shape.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut bad_utf8 = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"caf"#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}]}");
    for (what, body) in [
        ("nested", nested.as_bytes()),
        ("invalid UTF-8", &bad_utf8[..]),
    ] {
        let (status, v) = post(body)?;
        ensure!(
            status == 400 && v["error"]["type"] == "invalid_request_error",
            "{what}: {status} {v}"
        );
    }
    // Inputs shaped to make detectors work hard (anchors everywhere) are
    // scanned in bounded time and pass.
    let noisy = format!("{}{}", "1-2.3@4 ".repeat(3_000), "a@".repeat(8_000));
    let (status, v) = post(
        json!({"model": "gpt-4o", "messages": user(&noisy)})
            .to_string()
            .as_bytes(),
    )?;
    ensure!(status == 200, "a noisy prompt: {status} {v}");

    let logs = wait_llm_logs(&d, 13)?;
    ensure!(
        logs.iter()
            .filter(|l| log_str(l, "outcome") == Some("guardrail_blocked"))
            .count()
            == 3
            && logs
                .iter()
                .filter(|l| log_str(l, "outcome") == Some("guardrail_too_large"))
                .count()
                == 1,
        "three requests are logged as blocked, one as too large to scan: {logs:#?}"
    );
    let m = d.metrics()?;
    let findings = |phase, detector, action| {
        m.sum(
            "trigate_guardrail_findings_total",
            &[
                ("policy", "customer-data"),
                ("phase", phase),
                ("detector", detector),
                ("action", action),
                ("workload", "pod-a"),
            ],
        )
    };
    ensure!(
        findings("request", "email", "redact") == 2.0
            && findings("request", "credit_card", "block") == 1.0
            && findings("response", "openai_key", "redact") == 2.0,
        "guardrail metrics: email {} card {} key {}",
        findings("request", "email", "redact"),
        findings("request", "credit_card", "block"),
        findings("response", "openai_key", "redact")
    );
    Ok(())
}

/// The exact answer cache through the OpenAI SDK: a repeated question is
/// answered without the provider (whole and streamed, the stream replayed
/// as SSE), marked `x-trigate-cache: hit`, with tokens saved counted; the
/// same question from another workload is not answered from the first
/// one's cache; a high temperature or `Cache-Control: no-cache` bypasses.
#[test]
fn repeated_questions_are_answered_from_the_cache_per_tenant() -> Result<()> {
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    pod_b.route_to(pod_a.host_ip.into())?;
    let fake = FakeLlm::openai(pod_a.host_ip.into())?;
    fake.usage(30, 9);
    let addr = llm_address(&pod_a)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-openai", &fake)],
            "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-openai"}]}],
            "cache": {"enabled": true, "max_temperature": 0.5, "semantic": {"enabled": true}},
        }),
    )
    .workload(pod_a.workload())
    .workload(pod_b.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let ask = json!({"model": "gpt-4o", "messages": user("What is the VAT rate in France?")});

    let first = no_error("first", openai(&pod_a, &base, "chat", ask.clone())?)?;
    ensure!(first["headers"]["x-trigate-cache"] == "miss", "{first:#}");
    let asked = fake.count();
    let again = no_error("again", openai(&pod_a, &base, "chat", ask.clone())?)?;
    ensure!(
        again["headers"]["x-trigate-cache"] == "hit"
            && again["completion"] == first["completion"]
            && fake.count() == asked,
        "the repeated question was not served from the cache: {again:#}"
    );

    let s1 = no_error("stream", openai(&pod_a, &base, "stream", ask.clone())?)?;
    ensure!(
        fake.count() == asked + 1,
        "a stream is kept apart from a whole answer"
    );
    let s2 = no_error(
        "stream again",
        openai(&pod_a, &base, "stream", ask.clone())?,
    )?;
    ensure!(
        fake.count() == asked + 1 && s2["text"] == s1["text"] && s2["chunks"] == s1["chunks"],
        "the stream was not replayed from the cache: {s2:#}"
    );

    let other = no_error("pod-b", openai(&pod_b, &base, "chat", ask.clone())?)?;
    ensure!(
        other["headers"]["x-trigate-cache"] == "miss" && fake.count() == asked + 2,
        "another workload got the first one's answer: {other:#}"
    );

    let mut hot = ask.clone();
    hot["temperature"] = json!(0.9);
    let r = no_error("hot", openai(&pod_a, &base, "chat", hot)?)?;
    ensure!(r["headers"]["x-trigate-cache"] == "bypass", "{r:#}");
    let r = sdk(
        Some(&pod_a),
        OPENAI_PY,
        &json!({"base_url": base, "op": "chat",
                "request": {"model": "gpt-4o", "messages": user("What is the VAT rate in France?"),
                            "extra_headers": {"Cache-Control": "no-cache"}}}),
    )?;
    ensure!(
        r["headers"]["x-trigate-cache"] == "bypass" && fake.count() == asked + 4,
        "no-cache must reach the provider: {r:#}"
    );

    // The semantic cache: the same question worded differently.
    let ask_as = |pod, text: &str| {
        no_error(
            text,
            openai(
                pod,
                &base,
                "chat",
                json!({"model": "gpt-4o", "messages": user(text)}),
            )?,
        )
    };
    let para = ask_as(&pod_a, "what's the France VAT rate")?;
    ensure!(
        para["headers"]["x-trigate-cache"] == "hit"
            && para["completion"] == first["completion"]
            && fake.count() == asked + 4,
        "a paraphrase was not answered from the semantic cache: {para:#}"
    );
    let unrelated = ask_as(&pod_a, "What is the capital of Peru?")?;
    ensure!(
        unrelated["headers"]["x-trigate-cache"] == "miss" && fake.count() == asked + 5,
        "an unrelated question was answered from the cache: {unrelated:#}"
    );
    ask_as(&pod_a, "How many days of annual leave do employees get?")?;
    let other_tenant = ask_as(&pod_b, "how many annual leave days do employees get")?;
    ensure!(
        other_tenant["headers"]["x-trigate-cache"] == "miss" && fake.count() == asked + 7,
        "another workload's paraphrase got the first one's answer: {other_tenant:#}"
    );

    let logs = wait_llm_logs(&d, 7)?;
    let hits = logs
        .iter()
        .filter(|l| log_str(l, "cache") == Some("hit"))
        .count();
    ensure!(hits == 2, "two exact hits in the access log: {logs:#?}");
    ensure!(
        logs.iter()
            .filter(|l| log_str(l, "cache") == Some("semantic_hit"))
            .count()
            == 1,
        "one semantic hit in the access log: {logs:#?}"
    );
    let m = d.metrics()?;
    let saved = m.sum(
        "trigate_llm_cache_tokens_saved_total",
        &[("workload", "pod-a"), ("gen_ai_token_type", "input")],
    );
    ensure!(
        m.sum(
            "trigate_llm_cache_requests_total",
            &[("workload", "pod-a"), ("result", "hit")]
        ) == 2.0
            && saved == 90.0,
        "cache metrics: hits {}, input tokens saved {saved}",
        m.sum(
            "trigate_llm_cache_requests_total",
            &[("workload", "pod-a"), ("result", "hit")]
        )
    );
    Ok(())
}

/// `llm.cache.semantic.embeddings`: questions are embedded by a
/// configured OpenAI-compatible endpoint (with the gateway's key), so two
/// wordings that share no words but that model calls the same meaning
/// are answered once; when the endpoint fails, the question goes to its
/// provider without the semantic cache.
#[test]
fn semantic_cache_embeds_questions_with_the_configured_endpoint() -> Result<()> {
    const EMBED_KEY: &str = "sk-embeddings-key";
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let fake = FakeLlm::openai(pod.host_ip.into())?;
    let embedder = FakeLlm::openai(pod.host_ip.into())?;
    // The fake model's idea of synonyms: none of these words are shared
    // between the two wordings below.
    embedder.meanings(&[("password", 0), ("credentials", 0), ("sign-in", 0)]);
    let key = TempFile::new("embeddings-key", EMBED_KEY)?;
    let mut emb = provider("embedder", &embedder);
    emb["api_key"] = json!({"file": key.path()});
    let addr = llm_address(&pod)?;
    let cfg = llm_config(
        &node,
        addr,
        json!({
            "providers": [provider("fake-openai", &fake), emb],
            "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-openai"}]}],
            "cache": {"enabled": true, "semantic": {"enabled": true, "threshold": 0.9,
                "embeddings": {"provider": "embedder", "model": "text-embedding-3-small",
                               "dimensions": 32}}},
        }),
    )
    .workload(pod.workload());
    let d = node.start(&cfg)?;
    let base = openai_base(addr);
    let ask = |text: &str| {
        no_error(
            text,
            openai(
                &pod,
                &base,
                "chat",
                json!({"model": "gpt-4o", "messages": user(text)}),
            )?,
        )
    };

    let first = ask("How do I reset my password?")?;
    ensure!(first["headers"]["x-trigate-cache"] == "miss", "{first:#}");
    ensure!(
        fake.count() == 1 && embedder.count() == 1,
        "one answer, one embedding"
    );
    let seen = &embedder.requests()[0];
    ensure!(
        seen.path == "/v1/embeddings"
            && seen.body["model"] == "text-embedding-3-small"
            && seen.body["dimensions"] == 32
            && seen.body["input"] == "How do I reset my password?"
            && seen.header("authorization") == Some(&format!("Bearer {EMBED_KEY}")),
        "the embeddings request: {seen:#?}"
    );
    let para = ask("Where can I recover my sign-in credentials?")?;
    ensure!(
        para["headers"]["x-trigate-cache"] == "hit"
            && para["completion"] == first["completion"]
            && fake.count() == 1
            && embedder.count() == 2,
        "the model's synonym was not answered from the semantic cache: {para:#}"
    );
    let other = ask("What is the capital of Peru?")?;
    ensure!(
        other["headers"]["x-trigate-cache"] == "miss" && fake.count() == 2,
        "an unrelated question was answered from the cache: {other:#}"
    );

    // The embeddings endpoint fails: questions still get answers.
    embedder.fail_with(500);
    let failed = ask("Why was my password rejected?")?;
    ensure!(
        failed["headers"]["x-trigate-cache"] == "miss" && fake.count() == 3,
        "with the embeddings endpoint down the question goes to its provider: {failed:#}"
    );
    d.wait_for_log(LOG_WAIT, "the embedding failure is logged", |l| {
        log_str(l, "message").is_some_and(|m| m.starts_with("embedding a question"))
            && log_str(l, "provider") == Some("embedder")
    })?;
    let m = d.metrics()?;
    let count = |result| {
        m.sum(
            "trigate_llm_cache_embeddings_total",
            &[("provider", "embedder"), ("result", result)],
        )
    };
    ensure!(
        count("ok") == 3.0 && count("error") == 1.0,
        "embedding metrics: ok {}, error {}",
        count("ok"),
        count("error")
    );
    let logs = wait_llm_logs(&d, 4)?;
    ensure!(
        logs.iter()
            .filter(|l| log_str(l, "cache") == Some("semantic_hit"))
            .count()
            == 1,
        "one semantic hit in the access log: {logs:#?}"
    );
    Ok(())
}

/// `llm.cache.shared`: what one node's gateway kept is served by another
/// node's through a real redis-server, to the workloads of the same
/// tenant (here: the same `team` label), without asking the provider.
#[test]
fn cached_answers_are_shared_across_nodes_through_redis() -> Result<()> {
    let redis = trigate_e2e::RedisServer::start()?;
    let node_a = Node::new()?;
    let node_b = Node::new()?;
    let pod_a = node_a.pod("pod-a")?;
    let pod_b = node_b.pod("pod-b")?;
    let pod_c = node_b.pod("pod-c")?;
    for pod in [&pod_b, &pod_c] {
        pod.route_to(pod_a.host_ip.into())?;
    }
    let fake = FakeLlm::openai(pod_a.host_ip.into())?;
    let addr = llm_address(&pod_a)?;
    let config = |node: &Node| {
        llm_config(
            node,
            addr,
            json!({
                "providers": [provider("fake-openai", &fake)],
                "models": [{"name": "gpt-4o", "targets": [{"provider": "fake-openai"}]}],
                "cache": {"enabled": true, "shared": true, "scope": "label:team"},
            }),
        )
        .set("/rate_limits", json!({"redis_url": redis.url()}))
    };
    let _d_a =
        node_a.start(&config(&node_a).workload(pod_a.workload().label("team", "finance")))?;
    let _d_b = node_b.start(
        &config(&node_b)
            .workload(pod_b.workload().label("team", "finance"))
            .workload(pod_c.workload().label("team", "legal")),
    )?;
    let base = openai_base(addr);
    let ask = json!({"model": "gpt-4o", "messages": user("Summarise the Q3 budget.")});
    let first = no_error("node a", openai(&pod_a, &base, "chat", ask.clone())?)?;
    ensure!(first["headers"]["x-trigate-cache"] == "miss", "{first:#}");
    let asked = fake.count();
    // The first node stores in the background, within milliseconds; the
    // SDK in the other pod takes far longer to start.
    let shared = no_error("node b", openai(&pod_b, &base, "chat", ask.clone())?)?;
    ensure!(
        shared["headers"]["x-trigate-cache"] == "hit"
            && shared["completion"] == first["completion"]
            && fake.count() == asked,
        "the second node did not serve the first node's answer: {shared:#}"
    );
    let other = no_error("other team", openai(&pod_c, &base, "chat", ask.clone())?)?;
    ensure!(
        other["headers"]["x-trigate-cache"] == "miss" && fake.count() == asked + 1,
        "another tenant on the second node got the shared answer: {other:#}"
    );
    Ok(())
}

/// A guardrail judge webhook speaking trigate's contract (see
/// gateway/src/policy/judge.rs): blocks questions about insider
/// announcements, redacts "Acme Corp", allows the rest; keeps every text
/// it was sent.
struct Webhook {
    addr: SocketAddr,
    texts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Result<Webhook> {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let texts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&texts);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                let text = request["text"].as_str().unwrap_or_default().to_string();
                seen.lock().unwrap().push(text.clone());
                let answer = if text.contains("insider") {
                    json!({"action": "block", "reason": "insider trading"})
                } else if text.contains("Acme Corp") {
                    json!({"action": "redact", "text": text.replace("Acme Corp", "[CLIENT]")})
                } else {
                    json!({"action": "allow"})
                }
                .to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Ok(Webhook { addr, texts })
    }

    fn url(&self) -> String {
        format!("http://{}/judge", self.addr)
    }

    fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }
}
