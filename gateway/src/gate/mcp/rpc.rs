//! The MCP gate's decisions on JSON-RPC messages, pure: which client
//! messages go upstream and which are refused here, and what of the
//! server's answers the workload may see.
use std::collections::HashMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::policy::mcp::{ArgViolation, Denied, Item, McpPlan};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request (or a batch the gateway refuses whole).
pub const INVALID_REQUEST: i64 = -32600;
/// The gateway's own code (in JSON-RPC's server-error range) for a call a
/// policy refuses.
pub const DENIED: i64 = -32001;
/// The gateway's own code for a call over a per-tool limit.
pub const LIMITED: i64 = -32029;

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

/// A POST body's messages.
#[derive(Debug)]
pub struct Batch {
    pub messages: Vec<Value>,
    /// Sent as an array (answers go back as one).
    pub batch: bool,
}

/// Parses a POST body; `Err` is the error response for the whole body.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Batch, Value> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            Value::Null,
            PARSE_ERROR,
            &format!("the body is not JSON: {e}"),
            None,
        )
    })?;
    let (messages, batch) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if messages.is_empty() {
        return Err(error(Value::Null, INVALID_REQUEST, "empty batch", None));
    }
    if messages.len() > max_batch {
        return Err(error(
            Value::Null,
            INVALID_REQUEST,
            &format!(
                "a batch of {} messages is more than the {max_batch} this gateway accepts (mcp.max_batch)",
                messages.len()
            ),
            None,
        ));
    }
    for m in &messages {
        let valid = m.get("jsonrpc") == Some(&json!("2.0"))
            && (m.get("method").is_some_and(Value::is_string)
                || (m.get("id").is_some()
                    && (m.get("result").is_some() || m.get("error").is_some())));
        if !valid {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            return Err(error(
                id,
                INVALID_REQUEST,
                "not a JSON-RPC 2.0 request, notification or response",
                None,
            ));
        }
    }
    Ok(Batch { messages, batch })
}

/// One client request the gateway followed: for the audit line and to
/// filter its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: Value,
    pub method: String,
    /// The tool, resource or prompt it names.
    pub target: Option<(Item, String)>,
    /// SHA-256 (first 16 hex digits) of the arguments, so calls can be
    /// correlated without logging what they carried.
    pub args_hash: Option<String>,
    /// A listing whose items are filtered (`tools/list` → tools).
    pub lists: Option<Item>,
}

impl Call {
    fn of(msg: &Value) -> Option<Call> {
        let method = msg.get("method")?.as_str()?.to_owned();
        let id = msg.get("id")?.clone();
        let params = msg.get("params");
        let param = |k: &str| params.and_then(|p| p.get(k)).and_then(Value::as_str);
        let (target, lists) = Call::names(&method, param("name"), param("uri"));
        let args_hash = params.and_then(|p| p.get("arguments")).map(args_hash);
        Some(Call {
            id,
            method,
            target,
            args_hash,
            lists,
        })
    }

    /// What a call of `method` names (from its `params.name` or
    /// `params.uri`), and the items it lists.
    fn names(
        method: &str,
        name: Option<&str>,
        uri: Option<&str>,
    ) -> (Option<(Item, String)>, Option<Item>) {
        let owned = |s: Option<&str>| s.unwrap_or_default().to_owned();
        let target = match method {
            "tools/call" => Some((Item::Tool, owned(name))),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some((Item::Resource, owned(uri)))
            }
            "prompts/get" => Some((Item::Prompt, owned(name))),
            _ => None,
        };
        let lists = match method {
            "tools/list" => Some(Item::Tool),
            "resources/list" => Some(Item::Resource),
            "prompts/list" => Some(Item::Prompt),
            _ => None,
        };
        (target, lists)
    }

    /// The key answers are matched by (the id's JSON text: `1` and `"1"`
    /// are different ids).
    pub fn key(&self) -> String {
        self.id.to_string()
    }
}

/// SHA-256 (first 16 hex digits) of arguments in their compact JSON
/// form (object keys sorted), however the client spaced them.
fn args_hash(args: &Value) -> String {
    crate::upstream::sigv4::hex(&Sha256::digest(args.to_string().as_bytes())[..8])
}

/// What the gateway does with one POST's messages.
#[derive(Debug, Default)]
pub struct Planned {
    /// Messages that go upstream, in order.
    pub forward: Vec<Value>,
    /// The body goes upstream as sent: its one request was read by
    /// [`peek_request`] and never parsed into `forward`.
    pub as_sent: bool,
    /// Requests among them, by [`Call::key`].
    pub calls: HashMap<String, Call>,
    /// Requests refused here, with the error response each gets.
    pub refused: Vec<(Call, Refusal, Value)>,
}

/// Why a call was refused here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its tool, resource or prompt.
    Denied(Denied),
    /// Its arguments.
    Arguments(ArgViolation),
}

impl Refusal {
    pub fn policy(&self) -> &str {
        match self {
            Refusal::Denied(d) => &d.policy,
            Refusal::Arguments(v) => &v.policy,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(d) => d.fmt(f),
            Refusal::Arguments(v) => v.fmt(f),
        }
    }
}

impl Planned {
    /// Whether nothing is left to send upstream.
    pub fn nothing_to_forward(&self) -> bool {
        self.forward.is_empty() && !self.as_sent
    }

    /// Takes a forwarded call out (a later step refused it).
    pub fn take(&mut self, key: &str) -> Option<Call> {
        let call = self.calls.remove(key)?;
        // The body as sent holds this one request only.
        self.as_sent = false;
        self.forward.retain(|m| {
            m.get("method").is_none() || m.get("id").map(Value::to_string).as_deref() != Some(key)
        });
        Some(call)
    }
}

/// Splits a POST's messages into what goes upstream and what a policy
/// refuses. Notifications and responses (to the server's own requests)
/// always go: they name no tool.
pub fn plan(messages: Vec<Value>, authz: Option<&McpPlan>) -> Planned {
    let mut out = Planned::default();
    for msg in messages {
        let Some(call) = Call::of(&msg) else {
            out.forward.push(msg);
            continue;
        };
        let args = || msg.get("params").and_then(|p| p.get("arguments"));
        match refusal(&call, authz, |_| args().cloned()) {
            Some((r, resp)) => out.refused.push((call, r, resp)),
            None => {
                out.calls.insert(call.key(), call);
                out.forward.push(msg);
            }
        }
    }
    out
}

/// Why a policy refuses a call, with the error response it gets; `args`
/// gives the call's arguments, asked for only when a policy has
/// conditions on them.
fn refusal(
    call: &Call,
    authz: Option<&McpPlan>,
    args: impl FnOnce(&str) -> Option<Value>,
) -> Option<(Refusal, Value)> {
    let (Some((item, name)), Some(plan)) = (&call.target, authz) else {
        return None;
    };
    let r = match plan.check(*item, name) {
        Err(d) => Refusal::Denied(d),
        Ok(()) if *item == Item::Tool && plan.constrains(name) => {
            Refusal::Arguments(plan.check_arguments(name, args(name).as_ref()).err()?)
        }
        Ok(()) => return None,
    };
    let data = match &r {
        Refusal::Denied(d) => json!({"policy": &*d.policy, d.item.as_str(): d.name}),
        Refusal::Arguments(v) => {
            json!({"policy": &*v.policy, "tool": v.tool, "argument": v.argument})
        }
    };
    let resp = error(call.id.clone(), DENIED, &r.to_string(), Some(data));
    Some((r, resp))
}

/// One request read without building a tree of the whole message.
#[derive(serde::Deserialize)]
struct PeekRequest<'a> {
    #[serde(borrow)]
    jsonrpc: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    params: Option<PeekParams<'a>>,
    result: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<&'a serde_json::value::RawValue>,
}

/// The raw text of an id, if `Value::to_string` spells it the same way
/// (plain integers, strings without escapes): then it is the call's key.
fn plain_id(raw: &str) -> bool {
    if let Some(s) = raw.strip_prefix('"') {
        !s.contains('\\')
    } else {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && raw.parse::<i64>().is_ok()
    }
}

/// The plan of a body holding one request (the common POST: one
/// `tools/call`), read without building a tree of it; what [`parse`] and
/// [`plan`] give for it. `None` when the body is anything else (a batch,
/// a notification, a response, invalid JSON-RPC, an id spelled unusually,
/// `params` that are not an object): the caller then takes the full way,
/// which also answers the errors.
pub fn plan_one(body: &[u8], authz: Option<&McpPlan>) -> Option<Planned> {
    let start = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *start != b'{' {
        return None;
    }
    let p: PeekRequest<'_> = serde_json::from_slice(body).ok()?;
    if p.jsonrpc != "2.0" || p.result.is_some() || p.error.is_some() || !plain_id(p.id.get()) {
        return None;
    }
    let params = p.params.as_ref();
    let method = p.method.into_owned();
    let (target, lists) = Call::names(
        &method,
        params.and_then(|p| p.name.as_deref()),
        params.and_then(|p| p.uri.as_deref()),
    );
    let raw_args = params.and_then(|p| p.arguments);
    // Parsed once, for the hash and any argument conditions.
    let args: Option<Value> = match raw_args {
        Some(raw) => Some(serde_json::from_str(raw.get()).ok()?),
        None => None,
    };
    let call = Call {
        id: serde_json::from_str(p.id.get()).ok()?,
        method,
        target,
        args_hash: args.as_ref().map(args_hash),
        lists,
    };
    let mut out = Planned::default();
    match refusal(&call, authz, |_| args) {
        Some((r, resp)) => out.refused.push((call, r, resp)),
        None => {
            out.calls.insert(p.id.get().to_owned(), call);
            out.as_sent = true;
        }
    }
    Some(out)
}

/// How a server's answer to a call came out, for the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// A result with `isError: true` (a tool that failed).
    ToolError,
    /// A JSON-RPC error, with its code.
    Error(i64),
}

impl Status {
    pub fn label(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Status::Ok => "ok".into(),
            Status::ToolError => "tool_error".into(),
            Status::Error(code) => format!("error {code}").into(),
        }
    }
}

/// Looks at one message from the server: an answer to a followed call is
/// taken from `calls` (with its listing filtered in place) and returned
/// with its status and how many items were hidden. Other messages
/// (notifications, the server's own requests) give `None`.
pub fn answer(
    msg: &mut Value,
    calls: &mut HashMap<String, Call>,
    authz: Option<&McpPlan>,
) -> Option<(Call, Status, usize)> {
    if msg.get("method").is_some() {
        return None;
    }
    let call = calls.remove(&msg.get("id")?.to_string())?;
    if let Some(code) = msg.pointer("/error/code") {
        return Some((call, Status::Error(code.as_i64().unwrap_or(0)), 0));
    }
    let mut hidden = 0;
    if let (Some(item), Some(plan)) = (call.lists, authz) {
        hidden = filter_listing(msg, item, plan);
    }
    let status = if msg.pointer("/result/isError") == Some(&Value::Bool(true)) {
        Status::ToolError
    } else {
        Status::Ok
    };
    Some((call, status, hidden))
}

/// A listing answer on a stream of the server's (the older HTTP+SSE
/// transport answers every POST there) whose call the gateway did not
/// follow: filtered by what it holds (`tools`, `resources` or `prompts`).
/// Returns the item kind and how many items went.
pub fn stray_listing(msg: &mut Value, authz: Option<&McpPlan>) -> Option<(Item, usize)> {
    let plan = authz?;
    if msg.get("method").is_some() || msg.get("id").is_none() {
        return None;
    }
    let result = msg.get("result")?;
    let item = [
        ("tools", Item::Tool),
        ("resources", Item::Resource),
        ("prompts", Item::Prompt),
    ]
    .into_iter()
    .find(|(k, _)| result.get(*k).is_some_and(Value::is_array))?
    .1;
    Some((item, filter_listing(msg, item, plan)))
}

/// Removes the items the workload may not use from a listing result;
/// returns how many went.
fn filter_listing(msg: &mut Value, item: Item, plan: &McpPlan) -> usize {
    let (list, key) = match item {
        Item::Tool => ("tools", "name"),
        Item::Resource => ("resources", "uri"),
        Item::Prompt => ("prompts", "name"),
    };
    let Some(items) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut(list))
        .and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = items.len();
    items.retain(|it| {
        it.get(key)
            .and_then(Value::as_str)
            .is_some_and(|name| plan.allows(item, name))
    });
    before - items.len()
}

/// What the audit needs of one answer, read without building a tree.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    method: Option<serde::de::IgnoredAny>,
    error: Option<PeekError>,
    result: Option<PeekResult>,
}

#[derive(serde::Deserialize)]
struct PeekError {
    code: i64,
}

#[derive(serde::Deserialize)]
struct PeekResult {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

/// The answers in a JSON body (one message or a batch) as (key, status),
/// read without building a tree: what [`answer`] gives when nothing is to
/// be filtered. `None` when the body holds anything else (a request, a
/// notification, an id whose key would need the tree to be spelled like
/// [`Call::key`]): the caller then takes the full way.
pub fn peek_answers(body: &[u8]) -> Option<Vec<(String, Status)>> {
    let one = |p: Peek<'_>| -> Option<(String, Status)> {
        if p.method.is_some() {
            return None;
        }
        let raw = p.id?.get();
        if !plain_id(raw) {
            return None;
        }
        let status = match (p.error, p.result) {
            (Some(e), _) => Status::Error(e.code),
            (
                None,
                Some(PeekResult {
                    is_error: Some(true),
                }),
            ) => Status::ToolError,
            (None, Some(_)) => Status::Ok,
            (None, None) => return None,
        };
        Some((raw.to_owned(), status))
    };
    let start = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *start == b'[' {
        let items: Vec<Peek<'_>> = serde_json::from_slice(body).ok()?;
        items.into_iter().map(one).collect()
    } else {
        one(serde_json::from_slice(body).ok()?).map(|a| vec![a])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllowDeny, McpConfig, McpPolicy};
    use crate::policy::mcp::McpAuthz;

    #[test]
    fn peeked_answers_agree_with_the_full_reading() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#,
            r#"{"jsonrpc":"2.0","id":"a-1","result":{"content":[],"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":-7,"error":{"code":-32602,"message":"bad"}}"#,
            r#" [{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":"2","result":{"isError":false}}]"#,
        ];
        for body in bodies {
            let peeked = peek_answers(body.as_bytes()).expect(body);
            let value: Value = serde_json::from_str(body).unwrap();
            let msgs = match value {
                Value::Array(items) => items,
                one => vec![one],
            };
            assert_eq!(peeked.len(), msgs.len(), "{body}");
            for ((key, status), mut msg) in peeked.into_iter().zip(msgs) {
                let id = msg["id"].clone();
                let mut calls = HashMap::from([(
                    id.to_string(),
                    Call::of(&call(id, "tools/call", json!({"name": "echo"}))).unwrap(),
                )]);
                let (_, full, _) = answer(&mut msg, &mut calls, None).expect(body);
                assert_eq!(key, msg["id"].to_string(), "{body}");
                assert_eq!(status, full, "{body}");
            }
        }
        // What only the full reading spells right, or what is not an
        // answer: the caller takes the full way.
        for body in [
            r#"{"jsonrpc":"2.0","id":1.5,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"\u0041","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1e2,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":3}"#,
            r#"{"jsonrpc":"2.0","id":3,"error":{"message":"no code"}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"x"}]"#,
            "not json",
            "",
        ] {
            assert_eq!(peek_answers(body.as_bytes()), None, "{body}");
        }
    }

    fn authz() -> McpPlan {
        McpAuthz::build(&McpConfig {
            policies: vec![McpPolicy {
                name: "agents".into(),
                tools: AllowDeny {
                    allow: vec!["echo".into(), "read_*".into()],
                    deny: vec![],
                },
                resources: AllowDeny {
                    allow: vec![],
                    deny: vec!["file:///secret/**".into()],
                },
                ..McpPolicy::default()
            }],
            ..McpConfig::default()
        })
        .unwrap()
        .plan(None, None)
        .unwrap()
    }

    fn call(id: Value, method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    #[test]
    fn bodies_parse_as_one_message_or_a_batch() {
        let one = parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, 4).unwrap();
        assert!(!one.batch && one.messages.len() == 1);
        let two = parse(
            br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#,
            4,
        )
        .unwrap();
        assert!(two.batch && two.messages.len() == 2);
        let code = |body: &[u8], max| parse(body, max).unwrap_err()["error"]["code"].clone();
        assert_eq!(code(b"{nope", 4), PARSE_ERROR);
        assert_eq!(code(b"[]", 4), INVALID_REQUEST);
        assert_eq!(code(br#"{"id":1,"method":"ping"}"#, 4), INVALID_REQUEST);
        assert_eq!(code(br#"{"jsonrpc":"2.0","id":1}"#, 4), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":7}"#, 4),
            INVALID_REQUEST
        );
        let five = format!("[{}]", [r#"{"jsonrpc":"2.0","method":"x"}"#; 5].join(","));
        let e = parse(five.as_bytes(), 4).unwrap_err();
        assert_eq!(e["error"]["code"], INVALID_REQUEST);
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mcp.max_batch"));
        // The id of an invalid message is kept for its error.
        assert_eq!(parse(br#"{"id":9}"#, 4).unwrap_err()["id"], 9);
    }

    #[test]
    fn denied_calls_are_answered_here_and_the_rest_goes_upstream() {
        let plan = authz();
        let planned = super::plan(
            vec![
                call(
                    json!(1),
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": "hi"}}),
                ),
                call(
                    json!(2),
                    "tools/call",
                    json!({"name": "delete_all", "arguments": {}}),
                ),
                call(
                    json!(3),
                    "resources/read",
                    json!({"uri": "file:///secret/key"}),
                ),
                call(json!(4), "tools/list", json!({})),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            ],
            Some(&plan),
        );
        assert_eq!(planned.forward.len(), 3);
        assert_eq!(planned.calls.len(), 2);
        assert_eq!(planned.calls["4"].lists, Some(Item::Tool));
        let echo = &planned.calls["1"];
        assert_eq!(echo.target, Some((Item::Tool, "echo".into())));
        assert_eq!(echo.args_hash.as_deref().map(str::len), Some(16));
        let refused: Vec<(Value, i64, String)> = planned
            .refused
            .iter()
            .map(|(_, _, r)| {
                (
                    r["id"].clone(),
                    r["error"]["code"].as_i64().unwrap(),
                    r["error"]["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            refused,
            [
                (
                    json!(2),
                    DENIED,
                    r#"tool "delete_all" is not among the allowed ones by mcp policy "agents""#
                        .to_owned()
                ),
                (
                    json!(3),
                    DENIED,
                    r#"resource "file:///secret/key" is denied by mcp policy "agents""#.to_owned()
                ),
            ]
        );
        assert_eq!(planned.refused[0].2["error"]["data"]["tool"], "delete_all");

        // No policy: everything goes.
        let all = super::plan(
            vec![call(json!(2), "tools/call", json!({"name": "delete_all"}))],
            None,
        );
        assert!(all.refused.is_empty() && all.forward.len() == 1);
    }

    /// [`authz`] plus a condition on `read_*` tools' `path`.
    fn authz_with_arguments() -> McpPlan {
        let rule: crate::config::ArgumentRule = serde_json::from_value(json!({
            "tool": "read_*",
            "arguments": {"path": {"required": true, "glob": "/data/**"}}
        }))
        .unwrap();
        McpAuthz::build(&McpConfig {
            policies: vec![McpPolicy {
                name: "agents".into(),
                tools: AllowDeny {
                    allow: vec!["echo".into(), "read_*".into()],
                    deny: vec![],
                },
                arguments: vec![rule],
                ..McpPolicy::default()
            }],
            ..McpConfig::default()
        })
        .unwrap()
        .plan(None, None)
        .unwrap()
    }

    #[test]
    fn one_request_is_planned_without_a_tree_as_the_full_reading_plans_it() {
        let plain = authz();
        let with_args = authz_with_arguments();
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            // Spacing and key order do not change the arguments' hash.
            r#" { "params" : { "arguments" : { "b" : 2, "a" : [1, {"y":1,"x":0}] }, "name" : "echo" }, "method" : "tools/call", "id" : "abc", "jsonrpc" : "2.0" }"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///secret/key"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"file:///open"}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{},"extra":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"p","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":-7,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/passwd"}}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/data/q3"}}}"#,
            r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"read_file"}}"#,
            r#"{"jsonrpc":"2.0","id":"aé","method":"tools/call","params":{"name":"echo"}}"#,
        ];
        for plan in [None, Some(&plain), Some(&with_args)] {
            for body in bodies {
                let one = plan_one(body.as_bytes(), plan).expect(body);
                let full = super::plan(parse(body.as_bytes(), 4).unwrap().messages, plan);
                assert_eq!(one.calls, full.calls, "{body}");
                let refusals = |p: &Planned| -> Vec<(Call, Refusal, Value)> { p.refused.clone() };
                assert_eq!(refusals(&one), refusals(&full), "{body}");
                // Sent as it came exactly when the full reading forwards it.
                assert_eq!(one.as_sent, full.forward.len() == 1, "{body}");
                assert!(one.forward.is_empty());
                assert_eq!(
                    one.nothing_to_forward(),
                    full.nothing_to_forward(),
                    "{body}"
                );
            }
        }
        // The arguments' condition applies on this path too.
        let r = plan_one(bodies[8].as_bytes(), Some(&with_args)).unwrap();
        assert!(
            matches!(r.refused[0].1, Refusal::Arguments(_)),
            "{:?}",
            r.refused
        );
        // A limit that takes the call leaves nothing to send.
        let mut taken = plan_one(bodies[0].as_bytes(), Some(&plain)).unwrap();
        assert!(taken.take("1").is_some() && taken.nothing_to_forward());
    }

    #[test]
    fn bodies_one_request_does_not_take_go_the_full_way() {
        for body in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
            "{nope",
        ] {
            assert!(plan_one(body.as_bytes(), None).is_none(), "{body}");
        }
    }

    #[test]
    fn stray_listings_are_filtered_by_what_they_hold() {
        let plan = authz();
        let mut tools = json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": [{"name": "echo"}, {"name": "delete_all"}]}});
        assert_eq!(
            stray_listing(&mut tools, Some(&plan)),
            Some((Item::Tool, 1))
        );
        assert_eq!(tools["result"]["tools"], json!([{"name": "echo"}]));
        let mut resources = json!({"jsonrpc": "2.0", "id": 9, "result": {"resources": [{"uri": "file:///secret/a"}]}});
        assert_eq!(
            stray_listing(&mut resources, Some(&plan)),
            Some((Item::Resource, 1))
        );
        let mut other = json!({"jsonrpc": "2.0", "id": 9, "result": {"content": []}});
        assert_eq!(stray_listing(&mut other, Some(&plan)), None);
        let mut note = json!({"jsonrpc": "2.0", "method": "x", "params": {"tools": []}});
        assert_eq!(stray_listing(&mut note, Some(&plan)), None);
        assert_eq!(stray_listing(&mut tools, None), None);
    }

    #[test]
    fn answers_are_matched_filtered_and_classified() {
        let plan = authz();
        let mut planned = super::plan(
            vec![
                call(json!("l"), "tools/list", json!({})),
                call(json!(1), "tools/call", json!({"name": "echo"})),
                call(json!(2), "tools/call", json!({"name": "read_file"})),
            ],
            Some(&plan),
        );
        let mut listing = json!({"jsonrpc": "2.0", "id": "l", "result": {"tools": [
            {"name": "echo"}, {"name": "delete_all"}, {"name": "read_file"}, {"noname": true}
        ]}});
        let (call, status, hidden) = answer(&mut listing, &mut planned.calls, Some(&plan)).unwrap();
        assert_eq!(
            (call.method.as_str(), status, hidden),
            ("tools/list", Status::Ok, 2)
        );
        let names: Vec<&str> = listing["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "read_file"]);

        let mut failed =
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": true}});
        assert_eq!(
            answer(&mut failed, &mut planned.calls, Some(&plan))
                .unwrap()
                .1,
            Status::ToolError
        );
        let mut err =
            json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "bad"}});
        assert_eq!(
            answer(&mut err, &mut planned.calls, Some(&plan)).unwrap().1,
            Status::Error(-32602)
        );
        // Already answered, unknown, or not an answer.
        assert!(answer(&mut err, &mut planned.calls, Some(&plan)).is_none());
        let mut note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}});
        assert!(answer(&mut note, &mut planned.calls, Some(&plan)).is_none());
        assert_eq!(Status::Error(-32602).label(), "error -32602");
    }
}
