//! The daemon's YAML config, built in code. Keys follow
//! gateway/src/config (see tests/README.md for the defaults used here).

use crate::node::Node;
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Open,
    Closed,
}

/// A daemon config. Starts from the node's defaults: admin on
/// 127.0.0.1:0, JSON logs at `info,trigate=debug`, attach cgroup and
/// instance from the node, fail-open, 100 ms heartbeat / 2 s timeout,
/// in-pod listener on 15001 without IPv6, no destinations, no workloads.
#[derive(Debug, Clone)]
pub struct Config {
    value: Value,
}

impl Config {
    pub fn new(node: &Node) -> Self {
        Self {
            value: json!({
                "instance": node.instance,
                "admin": { "address": "127.0.0.1:0" },
                "log": { "level": "info,trigate=debug", "format": "json" },
                "intercept": {
                    "cgroup": node.cgroup.to_string_lossy(),
                    "create_cgroup": true,
                    "fail_mode": "open",
                    "heartbeat_interval_ms": 100,
                    // Short enough for the fail-mode tests, long enough
                    // that a debug daemon on a loaded 2-core CI machine is
                    // never taken for dead (500 ms once let a call of the
                    // MCP tests go around the gateway, fail-open).
                    "heartbeat_timeout_ms": 2000,
                    "mark": 0x7467,
                    "bpffs": node.env.bpffs.to_string_lossy(),
                },
                "listener": { "mode": "in-pod", "port": 15001, "ipv6": false },
                "proxy": { "connect_timeout_ms": 2000, "idle_timeout_secs": 60 },
                "dns": { "hosts": {} },
                "destinations": [],
                "workloads": [],
            }),
        }
    }

    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.value["intercept"]["fail_mode"] = json!(match mode {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        });
        self
    }

    /// In-pod listeners (every workload needs a netns).
    pub fn listener_in_pod(mut self) -> Self {
        self.value["listener"]["mode"] = json!("in-pod");
        self
    }

    /// A listener in the daemon's own netns on `port` (pick it with
    /// [`crate::free_port`]: tests share the host netns).
    pub fn listener_host(mut self, port: u16) -> Self {
        self.value["listener"]["mode"] = json!("host");
        self.value["listener"]["port"] = json!(port);
        self
    }

    pub fn listener_ipv6(mut self, on: bool) -> Self {
        self.value["listener"]["ipv6"] = json!(on);
        self
    }

    pub fn destination(mut self, d: Destination) -> Self {
        push(&mut self.value["destinations"], d.to_json());
        self
    }

    pub fn workload(mut self, w: Workload) -> Self {
        push(&mut self.value["workloads"], w.to_json());
        self
    }

    /// `dns.hosts`: a static answer for `name`.
    pub fn dns_host(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        let list: Vec<Value> = addrs.iter().map(|a| json!(a.to_string())).collect();
        self.value["dns"]["hosts"][name] = Value::Array(list);
        self
    }

    /// Escape hatch: set any key by JSON pointer (`/proxy/connect_timeout_ms`);
    /// the last segment may be new (`/dns/servers`), its parent must exist.
    pub fn set(mut self, pointer: &str, v: Value) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        match self
            .value
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
        {
            Some(object) => {
                object.insert(key.to_string(), v);
            }
            None => panic!("config has no object at {parent:?} (setting {pointer})"),
        }
        self
    }

    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.value.pointer(pointer)
    }

    /// Every destination so far served by `gate` (`api`, `llm`, `mcp`).
    pub fn gate_all(self, gate: &str) -> Self {
        let mut dests = self
            .get("/destinations")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        if let Some(list) = dests.as_array_mut() {
            for d in list {
                d["gate"] = Value::String(gate.to_owned());
            }
        }
        self.set("/destinations", dests)
    }

    pub fn as_json(&self) -> &Value {
        &self.value
    }

    pub fn to_yaml(&self) -> String {
        crate::yaml::to_yaml(&self.value)
    }
}

fn push(list: &mut Value, v: Value) {
    list.as_array_mut().expect("config list").push(v);
}

/// `destinations[]`.
#[derive(Debug, Clone)]
pub struct Destination {
    name: String,
    action: &'static str,
    hosts: Vec<String>,
    cidrs: Vec<String>,
    ports: Vec<u16>,
    tls: Option<Value>,
    gate: Option<String>,
}

impl Destination {
    fn new(name: &str, action: &'static str) -> Self {
        Self {
            name: name.to_string(),
            action,
            hosts: vec![],
            cidrs: vec![],
            ports: vec![],
            tls: None,
            gate: None,
        }
    }
    pub fn redirect(name: &str) -> Self {
        Self::new(name, "redirect")
    }
    pub fn deny(name: &str) -> Self {
        Self::new(name, "deny")
    }
    pub fn observe(name: &str) -> Self {
        Self::new(name, "observe")
    }
    pub fn host(mut self, h: &str) -> Self {
        self.hosts.push(h.to_string());
        self
    }
    /// One address as a host route (`/32` or `/128`).
    pub fn addr(mut self, a: IpAddr) -> Self {
        let bits = if a.is_ipv4() { 32 } else { 128 };
        self.cidrs.push(format!("{a}/{bits}"));
        self
    }
    pub fn cidr(mut self, c: &str) -> Self {
        self.cidrs.push(c.to_string());
        self
    }
    pub fn port(mut self, p: u16) -> Self {
        self.ports.push(p);
        self
    }
    /// `tls:` as given, e.g. `json!({"mode": "terminate"})`.
    pub fn tls(mut self, tls: Value) -> Self {
        self.tls = Some(tls);
        self
    }
    /// `gate:` (`l4`, `api`, `llm`).
    pub fn gate(mut self, gate: &str) -> Self {
        self.gate = Some(gate.to_string());
        self
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if !self.hosts.is_empty() {
            m.insert("hosts".into(), json!(self.hosts));
        }
        if !self.cidrs.is_empty() {
            m.insert("cidrs".into(), json!(self.cidrs));
        }
        m.insert("ports".into(), json!(self.ports));
        m.insert("action".into(), json!(self.action));
        if let Some(tls) = &self.tls {
            m.insert("tls".into(), tls.clone());
        }
        if let Some(gate) = &self.gate {
            m.insert("gate".into(), json!(gate));
        }
        Value::Object(m)
    }
}

/// `workloads[]`, also the body of `POST /workloads`.
#[derive(Debug, Clone)]
pub struct Workload {
    name: String,
    cgroup: Option<String>,
    netns: Option<String>,
    labels: Map<String, Value>,
}

impl Workload {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            cgroup: None,
            netns: None,
            labels: Map::new(),
        }
    }
    pub fn cgroup(mut self, p: &Path) -> Self {
        self.cgroup = Some(p.to_string_lossy().into_owned());
        self
    }
    pub fn netns(mut self, p: impl AsRef<Path>) -> Self {
        self.netns = Some(p.as_ref().to_string_lossy().into_owned());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.to_string(), json!(v));
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if let Some(c) = &self.cgroup {
            m.insert("cgroup".into(), json!(c));
        }
        if let Some(n) = &self.netns {
            m.insert("netns".into(), json!(n));
        }
        if !self.labels.is_empty() {
            m.insert("labels".into(), Value::Object(self.labels.clone()));
        }
        Value::Object(m)
    }
}
