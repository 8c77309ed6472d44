//! Federation decisions, pure: which server a client's message goes to,
//! how the servers' `initialize` answers and listings become one, and how
//! the ids of the servers' own requests are told apart. The exchanges are
//! in [`super::federation`].
use serde_json::{json, Map, Value};

/// The listings a federation merges, with the key of their items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl Listing {
    pub fn of(method: &str) -> Option<Listing> {
        match method {
            "tools/list" => Some(Listing::Tools),
            "prompts/list" => Some(Listing::Prompts),
            "resources/list" => Some(Listing::Resources),
            "resources/templates/list" => Some(Listing::Templates),
            _ => None,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources => "resources",
            Listing::Templates => "resourceTemplates",
        }
    }

    /// The capability a server must announce to be asked.
    pub fn capability(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources | Listing::Templates => "resources",
        }
    }
}

/// Where a client's message goes.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `initialize`: every server.
    Initialize,
    /// A listing, merged from every server that has the capability.
    List(Listing),
    /// To every live server; the client gets `{}` (a request) or nothing
    /// (a notification).
    Everyone,
    /// To the server with this prefix, the message rewritten for it.
    One(String),
    /// To the server with a resource of this URI (learned from listings).
    Resource(String),
    /// A request that names an in-flight request (`notifications/cancelled`).
    InFlight(String),
    /// Answered by the gateway itself.
    Local(Value),
    /// Refused: a JSON-RPC error code and message.
    Error(i64, String),
}

pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// Splits `prefix{sep}name` when `prefix` is one of `prefixes`.
pub fn split<'a>(name: &'a str, sep: &str, prefixes: &[&str]) -> Option<(String, &'a str)> {
    let (prefix, rest) = name.split_once(sep)?;
    prefixes
        .contains(&prefix)
        .then(|| (prefix.to_owned(), rest))
}

/// Where `msg` goes; names it carries (`params.name`, a completion's
/// `params.ref.name`) are stripped of their prefix in place.
pub fn route(msg: &mut Value, sep: &str, prefixes: &[&str]) -> Route {
    let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) else {
        // A client's answer to a server's request: its id says whose.
        return match msg.get("id").and_then(untag_id_target(sep, prefixes)) {
            Some((prefix, id)) => {
                msg["id"] = id;
                Route::One(prefix)
            }
            None => Route::Error(
                INVALID_PARAMS,
                "an answer to a request no server of this federation sent".into(),
            ),
        };
    };
    if let Some(l) = Listing::of(&method) {
        return Route::List(l);
    }
    let params = msg.get_mut("params");
    match method.as_str() {
        "initialize" => Route::Initialize,
        "ping" => Route::Local(json!({})),
        "logging/setLevel" | "notifications/initialized" | "notifications/roots/list_changed" => {
            Route::Everyone
        }
        "notifications/cancelled" => match params
            .and_then(|p| p.get("requestId"))
            .map(Value::to_string)
        {
            Some(id) => Route::InFlight(id),
            None => Route::Error(
                INVALID_PARAMS,
                "notifications/cancelled without requestId".into(),
            ),
        },
        "tools/call" | "prompts/get" => strip(
            params.and_then(|p| p.get_mut("name")),
            sep,
            prefixes,
            &method,
        ),
        "completion/complete" => {
            let r = params.and_then(|p| p.get_mut("ref"));
            match r {
                Some(r) if r.get("type").and_then(Value::as_str) == Some("ref/resource") => {
                    match r.get("uri").and_then(Value::as_str) {
                        Some(uri) => Route::Resource(uri.to_owned()),
                        None => Route::Error(INVALID_PARAMS, "completion ref without uri".into()),
                    }
                }
                Some(r) => strip(r.get_mut("name"), sep, prefixes, &method),
                None => Route::Error(INVALID_PARAMS, "completion/complete without ref".into()),
            }
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            match params.and_then(|p| p.get("uri")).and_then(Value::as_str) {
                Some(uri) => Route::Resource(uri.to_owned()),
                None => Route::Error(INVALID_PARAMS, format!("{method} without params.uri")),
            }
        }
        m if m.starts_with("notifications/") => Route::Everyone,
        _ => Route::Error(
            METHOD_NOT_FOUND,
            format!("method {method:?} is not supported by this MCP federation"),
        ),
    }
}

fn strip(name: Option<&mut Value>, sep: &str, prefixes: &[&str], method: &str) -> Route {
    let Some(v) = name else {
        return Route::Error(INVALID_PARAMS, format!("{method} without a name"));
    };
    if let [""] = prefixes {
        // One server without a prefix (a bridge): names are its own.
        return Route::One(String::new());
    }
    let Some(full) = v.as_str() else {
        return Route::Error(
            INVALID_PARAMS,
            format!("{method}: the name is not a string"),
        );
    };
    match split(full, sep, prefixes) {
        Some((prefix, bare)) => {
            *v = Value::String(bare.to_owned());
            Route::One(prefix)
        }
        None => Route::Error(
            INVALID_PARAMS,
            format!(
                "{full:?} names no server of this federation: names are <server>{sep}<name> ({})",
                prefixes.join(", ")
            ),
        ),
    }
}

/// A listing of several servers as one: tool, prompt and resource names
/// get their server's prefix; resources keep their URIs. Also returns the
/// URIs (and URI-template stems, up to the first `{`) each server owns, for
/// routing reads.
pub fn merge_listing(
    kind: Listing,
    parts: &[(&str, Value)],
    sep: &str,
) -> (Value, Vec<(String, String)>) {
    let key = kind.key();
    let mut items = Vec::new();
    let mut owned = Vec::new();
    for (prefix, result) in parts {
        let Some(list) = result.get(key).and_then(Value::as_array) else {
            continue;
        };
        for item in list {
            let mut item = item.clone();
            if let (Some(name), false) =
                (item.get("name").and_then(Value::as_str), prefix.is_empty())
            {
                item["name"] = Value::String(format!("{prefix}{sep}{name}"));
            }
            let uri = match kind {
                Listing::Resources => item.get("uri").and_then(Value::as_str),
                Listing::Templates => item
                    .get("uriTemplate")
                    .and_then(Value::as_str)
                    .map(|t| t.split('{').next().unwrap_or(t)),
                _ => None,
            };
            if let Some(uri) = uri {
                owned.push((uri.to_owned(), (*prefix).to_owned()));
            }
            items.push(item);
        }
    }
    let mut result = Map::new();
    result.insert(key.into(), Value::Array(items));
    (Value::Object(result), owned)
}

/// The server owning `uri`: an exact resource, else the longest template
/// stem it starts with.
pub fn resource_owner<'a>(uri: &str, owned: &'a [(String, String)]) -> Option<&'a str> {
    if let Some((_, p)) = owned.iter().find(|(u, _)| u == uri) {
        return Some(p);
    }
    owned
        .iter()
        .filter(|(stem, _)| !stem.is_empty() && uri.starts_with(stem.as_str()))
        .max_by_key(|(stem, _)| stem.len())
        .map(|(_, p)| p.as_str())
}

/// The servers' `initialize` answers as one: capabilities merged (a
/// capability any server has, with its flags or-ed), the protocol version
/// the client asked for when a server agreed to it (else the first
/// server's), instructions joined under their prefixes.
pub fn merge_initialize(
    client_version: Option<&str>,
    answers: &[(&str, Value)],
    name: &str,
) -> Value {
    let mut caps = Map::new();
    for (_, a) in answers {
        let Some(c) = a.get("capabilities").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in c {
            let entry = caps.entry(k.clone()).or_insert_with(|| json!({}));
            if let (Some(into), Some(from)) = (entry.as_object_mut(), v.as_object()) {
                for (flag, on) in from {
                    let was = into.get(flag).and_then(Value::as_bool).unwrap_or(false);
                    let set = match on {
                        Value::Bool(b) => Value::Bool(was || *b),
                        other => other.clone(),
                    };
                    into.insert(flag.clone(), set);
                }
            }
        }
    }
    let versions: Vec<&str> = answers
        .iter()
        .filter_map(|(_, a)| a.get("protocolVersion").and_then(Value::as_str))
        .collect();
    let version = match client_version {
        Some(v) if versions.contains(&v) => Some(v),
        _ => versions.first().copied(),
    };
    let instructions: Vec<String> = answers
        .iter()
        .filter_map(|(p, a)| {
            a.get("instructions")
                .and_then(Value::as_str)
                .map(|i| format!("[{p}] {i}"))
        })
        .collect();
    let mut out = json!({
        "protocolVersion": version.or(client_version).unwrap_or("2025-06-18"),
        "capabilities": caps,
        "serverInfo": {"name": name, "version": env!("CARGO_PKG_VERSION")},
    });
    if !instructions.is_empty() {
        out["instructions"] = Value::String(instructions.join("\n"));
    }
    out
}

/// A server's own request (`sampling/createMessage`, `elicitation/create`,
/// `roots/list`, `ping`) gets an id naming the server, so the client's
/// answer can be sent back to it: `"{prefix}{sep}{original id as JSON}"`.
/// `true` when `msg` was such a request.
pub fn tag_server_request(msg: &mut Value, prefix: &str, sep: &str) -> bool {
    let is_request = msg.get("method").is_some() && msg.get("id").is_some_and(|i| !i.is_null());
    if is_request {
        let id = msg["id"].to_string();
        msg["id"] = Value::String(format!("{prefix}{sep}{id}"));
    }
    is_request
}

fn untag_id_target<'a>(
    sep: &'a str,
    prefixes: &'a [&'a str],
) -> impl Fn(&Value) -> Option<(String, Value)> + 'a {
    move |id| {
        let (prefix, raw) = split(id.as_str()?, sep, prefixes)?;
        Some((prefix, serde_json::from_str(raw).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: [&str; 2] = ["files", "search"];

    #[test]
    fn names_route_by_prefix_and_lose_it() {
        let mut m = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files__read","arguments":{}}});
        assert_eq!(route(&mut m, "__", &P), Route::One("files".into()));
        assert_eq!(m["params"]["name"], "read");
        // Only the first separator splits: the rest is the server's name.
        let mut m = json!({"id":1,"method":"prompts/get","params":{"name":"search__a__b"}});
        assert_eq!(route(&mut m, "__", &P), Route::One("search".into()));
        assert_eq!(m["params"]["name"], "a__b");
        let mut m = json!({"id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"files__p"}}});
        assert_eq!(route(&mut m, "__", &P), Route::One("files".into()));
        assert_eq!(m["params"]["ref"]["name"], "p");
    }

    #[test]
    fn unknown_prefixes_and_missing_names_are_errors() {
        for params in [
            json!({"name":"nobody__read"}),
            json!({"name":"read"}),
            json!({"name": 3}),
            json!({}),
        ] {
            let mut m = json!({"id":1,"method":"tools/call","params":params});
            let r = route(&mut m, "__", &P);
            assert!(
                matches!(r, Route::Error(INVALID_PARAMS, _)),
                "{params}: {r:?}"
            );
        }
        let mut m = json!({"id":1,"method":"tools/call","params":{"name":"nobody__x"}});
        let Route::Error(_, why) = route(&mut m, "__", &P) else {
            panic!()
        };
        assert!(why.contains("files, search"), "{why}");
    }

    #[test]
    fn methods_route_where_they_belong() {
        let cases = [
            (
                json!({"id":1,"method":"initialize","params":{}}),
                Route::Initialize,
            ),
            (
                json!({"id":1,"method":"tools/list"}),
                Route::List(Listing::Tools),
            ),
            (
                json!({"id":1,"method":"resources/templates/list"}),
                Route::List(Listing::Templates),
            ),
            (json!({"id":1,"method":"ping"}), Route::Local(json!({}))),
            (
                json!({"method":"notifications/initialized"}),
                Route::Everyone,
            ),
            (
                json!({"method":"notifications/roots/list_changed"}),
                Route::Everyone,
            ),
            (
                json!({"id":2,"method":"logging/setLevel","params":{"level":"info"}}),
                Route::Everyone,
            ),
            (
                json!({"method":"notifications/cancelled","params":{"requestId":7}}),
                Route::InFlight("7".into()),
            ),
            (
                json!({"method":"notifications/cancelled","params":{"requestId":"a"}}),
                Route::InFlight("\"a\"".into()),
            ),
            (
                json!({"id":1,"method":"resources/read","params":{"uri":"file:///x"}}),
                Route::Resource("file:///x".into()),
            ),
            (
                json!({"id":1,"method":"resources/subscribe","params":{"uri":"file:///x"}}),
                Route::Resource("file:///x".into()),
            ),
            (
                json!({"id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"db://t/{id}"}}}),
                Route::Resource("db://t/{id}".into()),
            ),
        ];
        for (mut m, want) in cases {
            assert_eq!(route(&mut m, "__", &P), want, "{m}");
        }
        let mut m = json!({"id":1,"method":"tasks/get"});
        assert!(matches!(
            route(&mut m, "__", &P),
            Route::Error(METHOD_NOT_FOUND, _)
        ));
        let mut m = json!({"id":1,"method":"resources/read","params":{}});
        assert!(matches!(
            route(&mut m, "__", &P),
            Route::Error(INVALID_PARAMS, _)
        ));
    }

    #[test]
    fn server_request_ids_round_trip() {
        for id in [json!(0), json!(42), json!("abc"), json!("files__x")] {
            let mut req =
                json!({"jsonrpc":"2.0","id":id,"method":"elicitation/create","params":{}});
            assert!(tag_server_request(&mut req, "search", "__"));
            let tagged = req["id"].clone();
            assert!(tagged.as_str().unwrap().starts_with("search__"));
            let mut answer = json!({"jsonrpc":"2.0","id":tagged,"result":{"action":"accept"}});
            assert_eq!(route(&mut answer, "__", &P), Route::One("search".into()));
            assert_eq!(answer["id"], id);
        }
        // Answers and notifications are not requests.
        let mut n = json!({"method":"notifications/progress","params":{}});
        assert!(!tag_server_request(&mut n, "files", "__"));
        assert!(n.get("id").is_none());
        let mut a = json!({"id":3,"result":{}});
        assert!(!tag_server_request(&mut a, "files", "__"));
        assert_eq!(a["id"], 3);
        // An answer whose id no server gave.
        let mut a = json!({"id":3,"result":{}});
        assert!(matches!(
            route(&mut a, "__", &P),
            Route::Error(INVALID_PARAMS, _)
        ));
        let mut a = json!({"id":"files__not json","result":{}});
        assert!(matches!(
            route(&mut a, "__", &P),
            Route::Error(INVALID_PARAMS, _)
        ));
    }

    #[test]
    fn one_server_without_a_prefix_keeps_its_names() {
        let mut m = json!({"id":1,"method":"tools/call","params":{"name":"read","arguments":{}}});
        assert_eq!(route(&mut m, "__", &[""]), Route::One(String::new()));
        assert_eq!(m["params"]["name"], "read");
        let (merged, _) = merge_listing(
            Listing::Tools,
            &[("", json!({"tools":[{"name":"read"}]}))],
            "__",
        );
        assert_eq!(merged["tools"][0]["name"], "read");
        // Its own requests' ids still come back to it.
        let mut req = json!({"id":5,"method":"elicitation/create"});
        assert!(tag_server_request(&mut req, "", "__"));
        let mut answer = json!({"id":req["id"].clone(),"result":{}});
        assert_eq!(route(&mut answer, "__", &[""]), Route::One(String::new()));
        assert_eq!(answer["id"], 5);
    }

    #[test]
    fn listings_merge_with_prefixes_and_owners() {
        let files = json!({"tools":[{"name":"read","description":"d","inputSchema":{}}], "nextCursor": "x"});
        let search = json!({"tools":[{"name":"read"},{"name":"find"}]});
        let (merged, owned) = merge_listing(
            Listing::Tools,
            &[("files", files), ("search", search)],
            "__",
        );
        let names: Vec<&str> = merged["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["files__read", "search__read", "search__find"]);
        assert_eq!(merged["tools"][0]["description"], "d");
        // The gateway gathered every page: no cursor goes to the client.
        assert!(merged.get("nextCursor").is_none());
        assert!(owned.is_empty());

        let r = json!({"resources":[{"uri":"file:///a","name":"a"}]});
        let t = json!({"resourceTemplates":[{"uriTemplate":"db://tables/{t}","name":"t"}]});
        let (merged, owned) = merge_listing(Listing::Resources, &[("files", r)], "__");
        assert_eq!(merged["resources"][0]["uri"], "file:///a");
        assert_eq!(merged["resources"][0]["name"], "files__a");
        let (_, owned_t) = merge_listing(Listing::Templates, &[("search", t)], "__");
        let all: Vec<_> = owned.into_iter().chain(owned_t).collect();
        assert_eq!(resource_owner("file:///a", &all), Some("files"));
        assert_eq!(resource_owner("db://tables/users", &all), Some("search"));
        assert_eq!(resource_owner("file:///b", &all), None);
        // A server's answer without the listing adds nothing.
        let (merged, _) = merge_listing(Listing::Prompts, &[("files", json!({}))], "__");
        assert_eq!(merged, json!({"prompts": []}));
    }

    #[test]
    fn initialize_answers_merge() {
        let a = json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false},"logging":{}},"serverInfo":{"name":"a"},"instructions":"use a"});
        let b = json!({"protocolVersion":"2025-03-26","capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}},"serverInfo":{"name":"b"}});
        let m = merge_initialize(
            Some("2025-03-26"),
            &[("files", a.clone()), ("search", b.clone())],
            "hub",
        );
        assert_eq!(m["protocolVersion"], "2025-03-26");
        assert_eq!(m["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(m["capabilities"]["resources"]["subscribe"], true);
        assert_eq!(m["capabilities"]["logging"], json!({}));
        assert!(m["capabilities"].get("prompts").is_none());
        assert_eq!(m["serverInfo"]["name"], "hub");
        assert_eq!(m["instructions"], "[files] use a");
        // A version no server took: the first server's.
        let m = merge_initialize(Some("2099-01-01"), &[("files", a), ("search", b)], "hub");
        assert_eq!(m["protocolVersion"], "2025-06-18");
        // No server answered: the client's version, no capabilities.
        let m = merge_initialize(Some("2025-06-18"), &[], "hub");
        assert_eq!(m["protocolVersion"], "2025-06-18");
        assert_eq!(m["capabilities"], json!({}));
    }
}
