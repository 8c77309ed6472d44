//! MCP servers and clients built with the official `mcp` Python SDK
//! (tests/src/mcp_server.py, tests/src/mcp_client.py) for the MCP gate's
//! tests: a server on a test-made address, killed by PID when dropped, and
//! a client run in a pod.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{env::workspace_root, sdk_python, Pod, Runner};

/// How long a server may take to start (Python imports are slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A client run: every op has 10 s in the script.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The MCP transports the scripts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTransport {
    StreamableHttp,
    Sse,
}

impl McpTransport {
    fn arg(self) -> &'static str {
        match self {
            McpTransport::StreamableHttp => "streamable-http",
            McpTransport::Sse => "sse",
        }
    }
}

/// An MCP server (tools echo, read_file, get_config, delete_all,
/// count_slowly, pick_color; `poison`: also weather, whose description carries an
/// injected instruction).
pub struct McpServer {
    child: Child,
    url: String,
    port: u16,
}

impl McpServer {
    pub fn start(ip: IpAddr, transport: McpTransport, name: &str, poison: bool) -> Result<Self> {
        let port = crate::free_port(ip)?;
        let script = workspace_root().join("tests/src/mcp_server.py");
        let mut cmd = Command::new(sdk_python()?);
        cmd.arg(&script).args([
            "--host",
            &ip.to_string(),
            "--port",
            &port.to_string(),
            "--transport",
            transport.arg(),
            "--name",
            name,
        ]);
        if poison {
            cmd.arg("--poison");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the MCP server {name} did not say `listening` within {START_TIMEOUT:?}");
            }
        };
        Ok(McpServer { child, url, port })
    }

    /// The URL clients connect to (`…/mcp` or `…/sse`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the SDK client in `pod` against `url` over streamable HTTP: `ops`
/// in one session (see tests/src/mcp_client.py). Returns its JSON:
/// `results[i]` per op.
pub fn mcp_client(pod: &Pod, url: &str, headers: &[&str], ops: &Value) -> Result<Value> {
    mcp_client_over(pod, url, McpTransport::StreamableHttp, headers, ops)
}

/// [`mcp_client`] over `transport`.
pub fn mcp_client_over(
    pod: &Pod,
    url: &str,
    transport: McpTransport,
    headers: &[&str],
    ops: &Value,
) -> Result<Value> {
    let py = sdk_python()?;
    let script = workspace_root().join("tests/src/mcp_client.py");
    let script = script.to_string_lossy().to_string();
    let ops = ops.to_string();
    let mut args: Vec<&str> = vec![
        &script,
        "--url",
        url,
        "--transport",
        transport.arg(),
        "--ops",
        &ops,
    ];
    for h in headers {
        args.extend(["--header", h]);
    }
    let out = pod.run(py, &args, CLIENT_TIMEOUT)?;
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "mcp_client printed no JSON (status {:?}): stdout {:?} stderr {:?}",
            out.status, out.stdout, out.stderr
        )
    })
}
