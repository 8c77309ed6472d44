//! Route selection and the request/response rewrites a route asks for.
//! Pure functions of the request's facts; unit-tested here.
use hyper::{
    header::{HeaderName, HeaderValue},
    HeaderMap, Method,
};
use regex::Regex;

use crate::config::{HeaderRewrite, Route};
use crate::gate::tls::sni_matches;

/// What route matching looks at.
pub struct RequestFacts<'a> {
    pub destination: &'a str,
    /// Host header or :authority, without the port.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

pub struct CompiledRoute {
    pub route: Route,
    regex: Option<Regex>,
}

/// Routes in config order; the first match wins.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
}

impl RouteTable {
    /// Validation already checked the regexes; an error here names the route.
    pub fn compile(routes: &[Route]) -> Result<Self, String> {
        let routes = routes
            .iter()
            .map(|r| {
                let regex = match r.matches.path.as_ref().and_then(|p| p.regex.as_deref()) {
                    Some(re) => Some(
                        Regex::new(re)
                            .map_err(|e| format!("routes {:?}: bad path regex: {e}", r.name))?,
                    ),
                    None => None,
                };
                Ok(CompiledRoute {
                    route: r.clone(),
                    regex,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(RouteTable { routes })
    }

    pub fn find(&self, f: &RequestFacts<'_>) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches(f))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl CompiledRoute {
    fn matches(&self, f: &RequestFacts<'_>) -> bool {
        let m = &self.route.matches;
        if !m.destinations.is_empty() && !m.destinations.iter().any(|d| d == f.destination) {
            return false;
        }
        if !m.hosts.is_empty() {
            match f.host {
                Some(h) if m.hosts.iter().any(|p| sni_matches(p, h)) => {}
                _ => return false,
            }
        }
        if !m.methods.is_empty() && !m.methods.iter().any(|x| x == f.method.as_str()) {
            return false;
        }
        for (name, want) in &m.headers {
            let got = f.headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            if got != Some(want.as_str()) {
                return false;
            }
        }
        match &m.path {
            None => true,
            Some(p) => {
                if let Some(prefix) = &p.prefix {
                    prefix_matches(prefix, f.path)
                } else if let Some(exact) = &p.exact {
                    f.path == exact
                } else {
                    self.regex.as_ref().is_some_and(|r| r.is_match(f.path))
                }
            }
        }
    }
}

/// Segment-aware: `/v1` matches `/v1`, `/v1/` and `/v1/x`, not `/v10`; a
/// prefix ending in `/` matches anything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Replaces the matched `from` prefix of the path with `to`, keeping the
/// rest and the query.
pub fn rewrite_prefix(path_and_query: &str, from: &str, to: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let rest = path.strip_prefix(from).unwrap_or(path);
    let mut out = String::with_capacity(to.len() + rest.len() + 1);
    out.push_str(to.trim_end_matches('/'));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if out.len() > 1 && out.ends_with('/') && !path.ends_with('/') {
        out.pop();
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Applies removals, then sets, then additions (so `set` can replace
/// what the client sent and `add` appends to the result).
pub fn apply_headers(rw: &HeaderRewrite, headers: &mut HeaderMap) {
    for name in &rw.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in &rw.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &rw.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// The host part of a Host header or :authority (port and brackets off).
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    // By bytes: `rsplit_once` searches for a char, which showed per request.
    match authority.bytes().rposition(|b| b == b':') {
        Some(i) if authority.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PathMatch, RouteMatch};

    fn route(name: &str, m: RouteMatch) -> Route {
        serde_json::from_value::<Route>(serde_json::json!({"name": name}))
            .map(|mut r| {
                r.matches = m;
                r
            })
            .unwrap()
    }

    fn facts<'a>(
        dest: &'a str,
        host: Option<&'a str>,
        path: &'a str,
        method: &'a Method,
        headers: &'a HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            destination: dest,
            host,
            path,
            method,
            headers,
        }
    }

    #[test]
    fn first_matching_route_wins_and_every_condition_counts() {
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("prod"));
        let table = RouteTable::compile(&[
            route(
                "by-header",
                RouteMatch {
                    headers: [("x-env".into(), "prod".into())].into(),
                    methods: vec!["POST".into()],
                    ..Default::default()
                },
            ),
            route(
                "by-prefix",
                RouteMatch {
                    path: Some(PathMatch {
                        prefix: Some("/v1".into()),
                        ..Default::default()
                    }),
                    hosts: vec!["*.example.com".into()],
                    ..Default::default()
                },
            ),
            route(
                "by-regex",
                RouteMatch {
                    path: Some(PathMatch {
                        regex: Some("^/items/[0-9]+$".into()),
                        ..Default::default()
                    }),
                    destinations: vec!["api".into()],
                    ..Default::default()
                },
            ),
            route(
                "exact",
                RouteMatch {
                    path: Some(PathMatch {
                        exact: Some("/health".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ])
        .unwrap();
        let none = HeaderMap::new();
        let name = |f: RequestFacts<'_>| table.find(&f).map(|r| r.route.name.clone());
        assert_eq!(
            name(facts("api", None, "/x", &Method::POST, &h)),
            Some("by-header".into())
        );
        assert_eq!(
            name(facts("api", None, "/x", &Method::GET, &h)),
            None,
            "method must match too"
        );
        assert_eq!(
            name(facts(
                "api",
                Some("a.example.com"),
                "/v1/chat",
                &Method::GET,
                &none
            )),
            Some("by-prefix".into())
        );
        assert_eq!(
            name(facts(
                "api",
                Some("example.com"),
                "/v1/chat",
                &Method::GET,
                &none
            )),
            None
        );
        assert_eq!(
            name(facts("api", None, "/v1", &Method::GET, &none)),
            None,
            "no host, host required"
        );
        assert_eq!(
            name(facts("api", None, "/items/42", &Method::GET, &none)),
            Some("by-regex".into())
        );
        assert_eq!(
            name(facts("other", None, "/items/42", &Method::GET, &none)),
            None
        );
        assert_eq!(
            name(facts("other", None, "/health", &Method::GET, &none)),
            Some("exact".into())
        );
        assert_eq!(
            name(facts("other", None, "/health/x", &Method::GET, &none)),
            None
        );
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn prefixes_respect_segments() {
        assert!(prefix_matches("/v1", "/v1"));
        assert!(prefix_matches("/v1", "/v1/"));
        assert!(prefix_matches("/v1", "/v1/chat"));
        assert!(!prefix_matches("/v1", "/v10"));
        assert!(prefix_matches("/v1/", "/v1/x"));
        assert!(!prefix_matches("/v1/", "/v1"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn rewrites_keep_the_rest_and_the_query() {
        assert_eq!(rewrite_prefix("/v1/chat?x=1", "/v1", "/v2"), "/v2/chat?x=1");
        assert_eq!(rewrite_prefix("/v1", "/v1", "/v2"), "/v2");
        assert_eq!(rewrite_prefix("/v1/", "/v1", "/v2"), "/v2/");
        assert_eq!(rewrite_prefix("/v1/a", "/v1", "/"), "/a");
        assert_eq!(rewrite_prefix("/v1", "/v1", "/"), "/");
        assert_eq!(
            rewrite_prefix("/api/v1/x", "/api", "/internal/api"),
            "/internal/api/v1/x"
        );
    }

    #[test]
    fn header_rewrites_remove_set_then_add() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("secret"));
        h.insert("x-team", HeaderValue::from_static("client"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        let rw = HeaderRewrite {
            set: [("x-team".into(), "gateway".into())].into(),
            add: [("x-tag".into(), "b".into())].into(),
            remove: vec!["cookie".into()],
        };
        apply_headers(&rw, &mut h);
        assert!(h.get("cookie").is_none());
        assert_eq!(h.get("x-team").unwrap(), "gateway");
        let tags: Vec<_> = h
            .get_all("x-tag")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn host_drops_port_and_brackets() {
        assert_eq!(host_of("api.example.com:8443"), "api.example.com");
        assert_eq!(host_of("api.example.com"), "api.example.com");
        assert_eq!(host_of("[fd00::1]:80"), "fd00::1");
        assert_eq!(host_of("10.0.0.1:80"), "10.0.0.1");
        // Only a last `:` followed by digits (or nothing) ends the host.
        assert_eq!(host_of("h:"), "h");
        assert_eq!(host_of("a:b:c"), "a:b:c");
        assert_eq!(host_of("a:1:2"), "a:1");
        assert_eq!(host_of("grüße.example:80"), "grüße.example");
        assert_eq!(host_of(""), "");
    }
}
