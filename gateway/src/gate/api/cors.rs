//! CORS at the api gate, after the Fetch standard's "CORS protocol": the gate
//! answers preflights itself and adds the headers browsers check to actual
//! cross-origin responses. [`decide`] is pure (a route's policy and the
//! request's method and headers in, an action out); [`apply`] merges its
//! headers into the upstream's response.
//!
//! Choices worth knowing:
//! - Origins match ASCII case-insensitively (scheme and host are
//!   case-insensitive), and the request's own value is echoed: the browser
//!   compares it byte for byte with its serialization.
//! - `*` in `allow_origins` answers `*`. Credentials are only ever granted to
//!   origins listed by name: echoing any origin together with
//!   `Allow-Credentials: true` would let every site read credentialed
//!   responses (the config documents credentials as "not with `*`").
//! - Methods match case-sensitively (RFC 9110 §9.1; browsers send the
//!   normalized upper-case name for the standard methods), header names
//!   case-insensitively. An empty list, or one containing `*`, allows what was
//!   asked for and reflects it (`*` itself is never sent for methods or
//!   headers, so the answer works for credentialed requests too).
//! - No "simple method / safelisted header" rules: what a preflight asks for
//!   is checked against the lists as is.
use hyper::{
    header::{self, HeaderValue},
    HeaderMap, Method, StatusCode,
};

use crate::config::Cors;

/// What to do with a request under a route's CORS policy.
#[derive(Debug, Clone, PartialEq)]
pub enum CorsAction {
    /// Not a CORS request (no Origin header): nothing to do.
    ///
    /// The Fetch standard advises `Vary: Origin` on every response whose
    /// CORS headers depend on the origin, non-CORS ones included, so that a
    /// browser cache does not hand a same-origin copy (without CORS headers)
    /// to a cross-origin fetch. [`vary_origin_always`] says when the caller
    /// should add it here.
    None,
    /// A preflight (OPTIONS with Origin and Access-Control-Request-Method):
    /// answer it here, don't forward. Carries the response headers (status
    /// 204 when allowed; 403 with no CORS headers when the origin, method or
    /// headers are not allowed).
    Preflight {
        status: StatusCode,
        headers: HeaderMap,
    },
    /// An actual cross-origin request: forward it, then add these headers to
    /// the response with [`apply`]. Without `Access-Control-Allow-Origin` when
    /// the origin is not allowed (the browser then blocks the response); that
    /// answer still carries `Vary: Origin`, since another origin would get a
    /// different one.
    Actual { response_headers: HeaderMap },
}

/// Decides how the gate handles a request under `cors`.
pub fn decide(cors: &Cors, method: &Method, request_headers: &HeaderMap) -> CorsAction {
    let mut origins = request_headers.get_all(header::ORIGIN).iter();
    let Some(first) = origins.next() else {
        return CorsAction::None;
    };
    // Browsers send one Origin; with two there is no telling which to check.
    let grant = match origins.next() {
        None => grant(cors, first),
        Some(_) => None,
    };
    if method == Method::OPTIONS
        && request_headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        preflight(cors, grant, request_headers)
    } else {
        actual(cors, grant)
    }
}

/// Whether the route's CORS answers depend on the origin, so every response
/// of the route (non-CORS ones too, see [`CorsAction::None`]) should carry
/// `Vary: Origin`. False only when every origin gets `*`.
pub fn vary_origin_always(cors: &Cors) -> bool {
    !answers_star_to_all(cors)
}

/// Adds the headers of a [`CorsAction::Actual`] to the upstream's response.
/// The route's policy owns CORS: whatever Access-Control-* headers the
/// upstream sent are dropped first. `Vary` is merged, not replaced, so the
/// upstream's own Vary (which a cache keys on) survives.
pub fn apply(response_headers: &mut HeaderMap, cors_headers: &HeaderMap) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        response_headers.remove(name);
    }
    for (name, value) in cors_headers {
        if name == header::VARY {
            add_vary(response_headers, value);
        } else {
            response_headers.append(name.clone(), value.clone());
        }
    }
}

/// What an allowed origin is granted.
struct Grant {
    allow_origin: HeaderValue,
    credentials: bool,
    /// The answer depends on the origin: responses carry `Vary: Origin`.
    vary_origin: bool,
}

fn is_star(s: &str) -> bool {
    s.trim() == "*"
}

/// `*` is configured and no origin is treated differently from another.
fn answers_star_to_all(cors: &Cors) -> bool {
    let star = cors.allow_origins.iter().any(|o| is_star(o));
    let named = cors.allow_origins.iter().any(|o| !is_star(o));
    star && (!cors.allow_credentials || !named)
}

fn grant(cors: &Cors, origin: &HeaderValue) -> Option<Grant> {
    let star = cors.allow_origins.iter().any(|o| is_star(o));
    if star && !cors.allow_credentials {
        return Some(Grant {
            allow_origin: HeaderValue::from_static("*"),
            credentials: false,
            vary_origin: false,
        });
    }
    let named = cors
        .allow_origins
        .iter()
        .filter(|o| !is_star(o))
        .any(|o| o.trim().as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
    if named {
        return Some(Grant {
            allow_origin: origin.clone(),
            credentials: cors.allow_credentials,
            vary_origin: true,
        });
    }
    // `*` with credentials on: any origin may read, none with credentials.
    star.then(|| Grant {
        allow_origin: HeaderValue::from_static("*"),
        credentials: false,
        vary_origin: !answers_star_to_all(cors),
    })
}

fn actual(cors: &Cors, grant: Option<Grant>) -> CorsAction {
    let mut h = HeaderMap::new();
    match grant {
        None => {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        Some(g) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, g.allow_origin);
            if g.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = token_list(cors.expose_headers.iter().map(String::as_str)) {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
            }
            if g.vary_origin {
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
    CorsAction::Actual {
        response_headers: h,
    }
}

fn preflight(cors: &Cors, grant: Option<Grant>, request_headers: &HeaderMap) -> CorsAction {
    let denied = CorsAction::Preflight {
        status: StatusCode::FORBIDDEN,
        headers: HeaderMap::new(),
    };
    let Some(grant) = grant else {
        return denied;
    };
    let Some(method) = requested_method(request_headers) else {
        return denied;
    };
    let Some(requested) = requested_headers(request_headers) else {
        return denied;
    };

    let reflect_methods = reflects(&cors.allow_methods);
    if !reflect_methods && !cors.allow_methods.iter().any(|m| m.trim() == method) {
        return denied;
    }
    let reflect_headers = reflects(&cors.allow_headers);
    if !reflect_headers
        && !requested.iter().all(|r| {
            cors.allow_headers
                .iter()
                .any(|a| a.trim().eq_ignore_ascii_case(r))
        })
    {
        return denied;
    }

    let mut h = HeaderMap::new();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, grant.allow_origin);
    if grant.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let methods = if reflect_methods {
        token_list([method])
    } else {
        token_list(cors.allow_methods.iter().map(String::as_str))
    };
    if let Some(v) = methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let headers = if reflect_headers {
        token_list(requested.iter().map(String::as_str))
    } else {
        token_list(cors.allow_headers.iter().map(String::as_str))
    };
    if let Some(v) = headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(secs) = cors.max_age_secs {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(secs));
    }
    // Preflight answers are cached by the browser; say what they depend on.
    let vary: Vec<&str> = [
        (grant.vary_origin, "Origin"),
        (reflect_methods, "Access-Control-Request-Method"),
        (reflect_headers, "Access-Control-Request-Headers"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if !vary.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&vary.join(", ")) {
            h.insert(header::VARY, v);
        }
    }
    CorsAction::Preflight {
        status: StatusCode::NO_CONTENT,
        headers: h,
    }
}

/// An empty list or one with `*`: allow what was requested, and say so.
fn reflects(list: &[String]) -> bool {
    list.is_empty() || list.iter().any(|s| is_star(s))
}

/// The single Access-Control-Request-Method value, if it is a method token.
fn requested_method(request_headers: &HeaderMap) -> Option<&str> {
    let mut values = request_headers
        .get_all(header::ACCESS_CONTROL_REQUEST_METHOD)
        .iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let method = value.to_str().ok()?.trim();
    is_token(method).then_some(method)
}

/// The header names of Access-Control-Request-Headers (all its lines),
/// lower-cased; `None` when an element is not a header name.
fn requested_headers(request_headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in request_headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        for part in value.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if !is_token(part) {
                return None;
            }
            let lower = part.to_ascii_lowercase();
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
    }
    Some(names)
}

/// The valid tokens of `items` joined by ", "; `None` when there are none.
/// Entries that are not tokens (a config typo) are left out rather than
/// making the whole header invalid.
fn token_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Option<HeaderValue> {
    let tokens: Vec<&str> = items
        .into_iter()
        .map(str::trim)
        .filter(|t| is_token(t))
        .collect();
    if tokens.is_empty() {
        return None;
    }
    HeaderValue::from_str(&tokens.join(", ")).ok()
}

/// RFC 9110 §5.6.2 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Adds the names in `value` to the response's Vary unless already there
/// (or the response varies on everything).
fn add_vary(response_headers: &mut HeaderMap, value: &HeaderValue) {
    let present: Vec<String> = response_headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if present.iter().any(|n| n == "*") {
        return;
    }
    let Ok(value) = value.to_str() else {
        return;
    };
    let missing: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && !present.contains(&n.to_ascii_lowercase()))
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&missing.join(", ")) {
        response_headers.append(header::VARY, v);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderName;

    use super::*;

    const APP: &str = "https://app.example.com";

    fn policy(origins: &[&str]) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..Cors::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get(h: &HeaderMap, name: HeaderName) -> Option<&str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    fn actual_headers(cors: &Cors, origin: &str) -> HeaderMap {
        match decide(cors, &Method::GET, &headers(&[("origin", origin)])) {
            CorsAction::Actual { response_headers } => response_headers,
            other => panic!("expected Actual, got {other:?}"),
        }
    }

    fn preflight_of(cors: &Cors, req: &[(&str, &str)]) -> (StatusCode, HeaderMap) {
        match decide(cors, &Method::OPTIONS, &headers(req)) {
            CorsAction::Preflight { status, headers } => (status, headers),
            other => panic!("expected Preflight, got {other:?}"),
        }
    }

    fn assert_denied(cors: &Cors, req: &[(&str, &str)]) {
        let (status, h) = preflight_of(cors, req);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(h.is_empty(), "denied preflight carries no headers: {h:?}");
    }

    // --- classification ---

    #[test]
    fn no_origin_is_not_cors() {
        let cors = policy(&[APP]);
        for m in [Method::GET, Method::POST, Method::OPTIONS] {
            assert_eq!(decide(&cors, &m, &HeaderMap::new()), CorsAction::None);
        }
        // A preflight header without Origin is still not CORS.
        let req = headers(&[("access-control-request-method", "PUT")]);
        assert_eq!(decide(&cors, &Method::OPTIONS, &req), CorsAction::None);
    }

    #[test]
    fn options_without_request_method_is_an_actual_request() {
        let cors = policy(&[APP]);
        let action = decide(&cors, &Method::OPTIONS, &headers(&[("origin", APP)]));
        assert!(matches!(action, CorsAction::Actual { .. }), "{action:?}");
    }

    #[test]
    fn request_method_header_on_other_methods_is_an_actual_request() {
        let cors = policy(&[APP]);
        let req = headers(&[("origin", APP), ("access-control-request-method", "PUT")]);
        let action = decide(&cors, &Method::POST, &req);
        assert!(matches!(action, CorsAction::Actual { .. }), "{action:?}");
    }

    // --- origin matching, actual requests ---

    #[test]
    fn listed_origin_is_echoed_with_vary() {
        let h = actual_headers(&policy(&["https://other.example", APP]), APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(get(&h, header::VARY), Some("Origin"));
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(get(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
        // Preflight-only headers never go on actual responses.
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_METHODS), None);
        assert_eq!(get(&h, header::ACCESS_CONTROL_MAX_AGE), None);
    }

    #[test]
    fn origin_matches_case_insensitively_and_the_request_value_is_echoed() {
        let h = actual_headers(&policy(&["HTTPS://App.Example.com"]), APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
    }

    #[test]
    fn lookalike_origins_are_not_allowed() {
        let cors = policy(&[APP]);
        for evil in [
            "https://app.example.com.evil.test",
            "https://evilapp.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.co",
            "null",
            "",
        ] {
            let h = actual_headers(&cors, evil);
            assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), None, "{evil}");
        }
    }

    #[test]
    fn disallowed_origin_gets_only_vary() {
        let h = actual_headers(&policy(&[APP]), "https://evil.test");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(get(&h, header::VARY), Some("Origin"));
    }

    #[test]
    fn empty_origin_list_allows_nobody() {
        let h = actual_headers(&policy(&[]), APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_preflight_denied_for(&policy(&[]));
    }

    fn assert_preflight_denied_for(cors: &Cors) {
        assert_denied(
            cors,
            &[("origin", APP), ("access-control-request-method", "GET")],
        );
    }

    #[test]
    fn star_without_credentials_answers_star_without_vary() {
        let cors = policy(&["*"]);
        for origin in [APP, "https://anything.test", "null"] {
            let h = actual_headers(&cors, origin);
            assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
            assert_eq!(get(&h, header::VARY), None);
            assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        }
        assert!(!vary_origin_always(&cors));
    }

    #[test]
    fn star_beside_named_origins_without_credentials_is_star_for_all() {
        let h = actual_headers(&policy(&[APP, "*"]), APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&h, header::VARY), None);
    }

    #[test]
    fn credentials_go_only_to_named_origins() {
        let cors = Cors {
            allow_credentials: true,
            ..policy(&[APP, "*"])
        };
        let named = actual_headers(&cors, APP);
        assert_eq!(get(&named, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(
            get(&named, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(get(&named, header::VARY), Some("Origin"));

        // Any other origin may read, but never with credentials: `*` is not
        // turned into an echo.
        let other = actual_headers(&cors, "https://other.test");
        assert_eq!(get(&other, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&other, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(get(&other, header::VARY), Some("Origin"));
        assert!(vary_origin_always(&cors));
    }

    #[test]
    fn star_alone_with_credentials_never_grants_credentials() {
        let cors = Cors {
            allow_credentials: true,
            ..policy(&["*"])
        };
        let h = actual_headers(&cors, APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        // Every origin gets the same answer.
        assert_eq!(get(&h, header::VARY), None);
        assert!(!vary_origin_always(&cors));
    }

    #[test]
    fn named_origin_with_credentials() {
        let cors = Cors {
            allow_credentials: true,
            ..policy(&[APP])
        };
        let h = actual_headers(&cors, APP);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
    }

    #[test]
    fn null_origin_only_when_listed() {
        let h = actual_headers(&policy(&["null"]), "null");
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("null"));
        let h = actual_headers(&policy(&[APP]), "null");
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[test]
    fn two_origin_headers_are_not_allowed() {
        let req = headers(&[("origin", APP), ("origin", APP)]);
        match decide(&policy(&[APP]), &Method::GET, &req) {
            CorsAction::Actual { response_headers } => {
                assert_eq!(
                    get(&response_headers, header::ACCESS_CONTROL_ALLOW_ORIGIN),
                    None
                )
            }
            other => panic!("{other:?}"),
        }
        let pre = [
            ("origin", APP),
            ("origin", APP),
            ("access-control-request-method", "GET"),
        ];
        assert_denied(&policy(&[APP]), &pre);
    }

    #[test]
    fn expose_headers_are_listed_on_actual_responses() {
        let cors = Cors {
            expose_headers: strings(&["X-Request-Id", "x-ratelimit-remaining", "bad name"]),
            ..policy(&[APP])
        };
        let h = actual_headers(&cors, APP);
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("X-Request-Id, x-ratelimit-remaining")
        );
        // Not on a disallowed origin's response.
        let h = actual_headers(&cors, "https://evil.test");
        assert_eq!(get(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
    }

    #[test]
    fn vary_origin_always_follows_origin_dependence() {
        assert!(vary_origin_always(&policy(&[APP])));
        assert!(vary_origin_always(&policy(&[])));
        assert!(!vary_origin_always(&policy(&[APP, "*"])));
    }

    // --- preflights ---

    fn full_policy() -> Cors {
        Cors {
            allow_origins: strings(&[APP]),
            allow_methods: strings(&["GET", "PUT", "DELETE"]),
            allow_headers: strings(&["Content-Type", "X-Trace"]),
            expose_headers: strings(&["X-Request-Id"]),
            allow_credentials: true,
            max_age_secs: Some(600),
        }
    }

    #[test]
    fn allowed_preflight_answers_204_with_everything() {
        let (status, h) = preflight_of(
            &full_policy(),
            &[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type,x-trace"),
            ],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, PUT, DELETE")
        );
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("Content-Type, X-Trace")
        );
        assert_eq!(get(&h, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(&h, header::VARY), Some("Origin"));
        // Expose-Headers only matters on actual responses.
        assert_eq!(get(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
    }

    #[test]
    fn preflight_without_max_age_or_credentials() {
        let cors = Cors {
            allow_credentials: false,
            max_age_secs: None,
            ..full_policy()
        };
        let (status, h) = preflight_of(
            &cors,
            &[("origin", APP), ("access-control-request-method", "GET")],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, header::ACCESS_CONTROL_MAX_AGE), None);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[test]
    fn preflight_max_age_zero_is_sent() {
        let cors = Cors {
            max_age_secs: Some(0),
            ..full_policy()
        };
        let (_, h) = preflight_of(
            &cors,
            &[("origin", APP), ("access-control-request-method", "GET")],
        );
        assert_eq!(get(&h, header::ACCESS_CONTROL_MAX_AGE), Some("0"));
    }

    #[test]
    fn preflight_from_disallowed_origin_is_403_without_headers() {
        assert_denied(
            &full_policy(),
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "GET"),
            ],
        );
    }

    #[test]
    fn preflight_for_unlisted_method_is_403() {
        assert_denied(
            &full_policy(),
            &[("origin", APP), ("access-control-request-method", "PATCH")],
        );
    }

    #[test]
    fn methods_match_case_sensitively() {
        assert_denied(
            &full_policy(),
            &[("origin", APP), ("access-control-request-method", "put")],
        );
    }

    #[test]
    fn malformed_request_method_is_403() {
        for bad in ["", "GET POST", "GET,POST", "G\"ET"] {
            assert_denied(
                &policy(&[APP]),
                &[("origin", APP), ("access-control-request-method", bad)],
            );
        }
        assert_denied(
            &policy(&[APP]),
            &[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-method", "PUT"),
            ],
        );
    }

    #[test]
    fn empty_method_list_reflects_the_requested_method() {
        let (status, h) = preflight_of(
            &policy(&[APP]),
            &[("origin", APP), ("access-control-request-method", "PATCH")],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_METHODS), Some("PATCH"));
        assert_eq!(
            get(&h, header::VARY),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
    }

    #[test]
    fn star_in_method_list_reflects_too() {
        let cors = Cors {
            allow_methods: strings(&["*"]),
            allow_headers: strings(&["x-a"]),
            ..policy(&[APP])
        };
        let (status, h) = preflight_of(
            &cors,
            &[("origin", APP), ("access-control-request-method", "PURGE")],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_METHODS), Some("PURGE"));
        assert_eq!(
            get(&h, header::VARY),
            Some("Origin, Access-Control-Request-Method")
        );
    }

    #[test]
    fn requested_headers_match_case_insensitively() {
        let (status, _) = preflight_of(
            &full_policy(),
            &[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "X-TRACE , content-type"),
            ],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn unlisted_requested_header_is_403() {
        assert_denied(
            &full_policy(),
            &[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                (
                    "access-control-request-headers",
                    "content-type,authorization",
                ),
            ],
        );
    }

    #[test]
    fn requested_headers_over_several_lines_are_all_checked() {
        let req = [
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "content-type"),
            ("access-control-request-headers", "x-secret"),
        ];
        assert_denied(&full_policy(), &req);
        let req = [
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "content-type"),
            ("access-control-request-headers", "x-trace"),
        ];
        assert_eq!(preflight_of(&full_policy(), &req).0, StatusCode::NO_CONTENT);
    }

    #[test]
    fn malformed_requested_header_is_403() {
        for bad in ["x a", "x:y", "content-type, \"q\""] {
            assert_denied(
                &policy(&[APP]),
                &[
                    ("origin", APP),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", bad),
                ],
            );
        }
    }

    #[test]
    fn empty_header_list_reflects_requested_headers_lower_cased() {
        let (status, h) = preflight_of(
            &policy(&[APP]),
            &[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "X-A,, x-b ,x-a"),
            ],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("x-a, x-b")
        );
    }

    #[test]
    fn no_requested_headers_with_reflection_sends_no_allow_headers() {
        let (_, h) = preflight_of(
            &policy(&[APP]),
            &[("origin", APP), ("access-control-request-method", "GET")],
        );
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
    }

    #[test]
    fn star_in_header_list_reflects() {
        let cors = Cors {
            allow_methods: strings(&["GET"]),
            allow_headers: strings(&["*"]),
            ..policy(&[APP])
        };
        let (status, h) = preflight_of(
            &cors,
            &[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization,x-anything"),
            ],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("authorization, x-anything")
        );
        assert_eq!(
            get(&h, header::VARY),
            Some("Origin, Access-Control-Request-Headers")
        );
    }

    #[test]
    fn preflight_with_star_origin() {
        let cors = Cors {
            allow_methods: strings(&["GET"]),
            allow_headers: strings(&["x-a"]),
            ..policy(&["*"])
        };
        let (status, h) = preflight_of(
            &cors,
            &[("origin", "null"), ("access-control-request-method", "GET")],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        // Nothing in the answer depends on the request.
        assert_eq!(get(&h, header::VARY), None);
    }

    #[test]
    fn invalid_config_entries_are_left_out_of_lists() {
        let cors = Cors {
            allow_methods: strings(&["GET", "BAD METHOD", " PUT "]),
            allow_headers: strings(&["x-a", "x:b"]),
            ..policy(&[APP])
        };
        let (status, h) = preflight_of(
            &cors,
            &[("origin", APP), ("access-control-request-method", "PUT")],
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, PUT")
        );
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("x-a"));
    }

    // --- apply ---

    #[test]
    fn apply_replaces_upstream_cors_and_merges_vary() {
        let mut resp = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-upstream"),
            ("vary", "Accept-Encoding"),
            ("content-type", "text/plain"),
        ]);
        let ours = actual_headers(&full_policy(), APP);
        apply(&mut resp, &ours);
        assert_eq!(get(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(
            get(&resp, header::ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("X-Request-Id")
        );
        assert_eq!(
            resp.get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .iter()
                .count(),
            1
        );
        let vary: Vec<_> = resp.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert_eq!(get(&resp, header::CONTENT_TYPE), Some("text/plain"));
    }

    #[test]
    fn apply_for_disallowed_origin_strips_upstream_grants() {
        let mut resp = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
        ]);
        apply(
            &mut resp,
            &actual_headers(&policy(&[APP]), "https://evil.test"),
        );
        assert_eq!(get(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(get(&resp, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(get(&resp, header::VARY), Some("Origin"));
    }

    #[test]
    fn apply_does_not_duplicate_vary() {
        for existing in ["origin", "Accept, Origin", "*"] {
            let mut resp = headers(&[("vary", existing)]);
            apply(&mut resp, &actual_headers(&policy(&[APP]), APP));
            let vary: Vec<_> = resp.get_all(header::VARY).iter().collect();
            assert_eq!(vary, [existing], "{existing}");
        }
    }
}
