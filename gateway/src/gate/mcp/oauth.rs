//! The MCP destinations as an OAuth 2.1 protected resource: the
//! resource's metadata (RFC 9728) and the `WWW-Authenticate` challenge
//! that points clients to it, and the headers the server gets instead of
//! the client's. Pure; `decide` (the policy chain) calls it.
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use crate::config::{McpOauth, McpUpstream};

/// The well-known path of protected-resource metadata.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The resource URL split into origin and path (no trailing `/`).
fn split(resource: &str) -> (String, String) {
    match resource.parse::<hyper::Uri>() {
        Ok(u) => {
            let origin = format!(
                "{}://{}",
                u.scheme_str().unwrap_or("https"),
                u.authority().map_or("", |a| a.as_str())
            );
            (origin, u.path().trim_end_matches('/').to_owned())
        }
        Err(_) => (resource.trim_end_matches('/').to_owned(), String::new()),
    }
}

/// Where the metadata is published: the well-known path inserted between
/// the resource's origin and its path (RFC 9728 §3.1).
pub fn metadata_url(o: &McpOauth) -> String {
    let (origin, path) = split(&o.resource);
    format!("{origin}{WELL_KNOWN}{path}")
}

/// Whether a request path asks for the metadata (with or without the
/// resource's path after the well-known one).
pub fn is_metadata_path(o: &McpOauth, path: &str) -> bool {
    let (_, resource_path) = split(&o.resource);
    path == WELL_KNOWN || path == format!("{WELL_KNOWN}{resource_path}")
}

/// The protected-resource metadata document.
pub fn metadata(o: &McpOauth) -> Value {
    let mut m = json!({
        "resource": o.resource,
        "authorization_servers": o.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if !o.scopes.is_empty() {
        m["scopes_supported"] = json!(o.scopes);
    }
    m
}

/// A 401's challenge: the authenticator's, with the metadata's URL.
pub fn challenge(o: &McpOauth, base: &str) -> String {
    format!("{base}, resource_metadata=\"{}\"", metadata_url(o))
}

/// The headers the server gets: the client's `Authorization` removed
/// unless the upstream's config forwards it, then the configured ones set.
pub fn upstream_headers(u: Option<&McpUpstream>, headers: &mut HeaderMap) {
    if !u.is_some_and(|u| u.forward_authorization) {
        headers.remove(AUTHORIZATION);
    }
    for (name, value) in u.map(|u| &u.headers).into_iter().flatten() {
        // Validation checked the names; a value that is not a valid
        // header value is skipped (and was refused by validation too).
        if let (Ok(n), Ok(mut v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            v.set_sensitive(true);
            headers.insert(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn oauth(resource: &str) -> McpOauth {
        McpOauth {
            resource: resource.into(),
            authorization_servers: vec!["https://auth.example.com".into()],
            jwt: "idp".into(),
            scopes: vec!["mcp:tools".into()],
        }
    }

    #[test]
    fn metadata_lives_at_the_well_known_path_of_the_resource() {
        let o = oauth("https://mcp.example.com/mcp");
        assert_eq!(
            metadata_url(&o),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert!(is_metadata_path(
            &o,
            "/.well-known/oauth-protected-resource"
        ));
        assert!(is_metadata_path(
            &o,
            "/.well-known/oauth-protected-resource/mcp"
        ));
        assert!(!is_metadata_path(&o, "/mcp"));
        let root = oauth("http://10.0.0.1:8080/");
        assert_eq!(
            metadata_url(&root),
            "http://10.0.0.1:8080/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata(&o),
            json!({"resource": "https://mcp.example.com/mcp",
                   "authorization_servers": ["https://auth.example.com"],
                   "bearer_methods_supported": ["header"],
                   "scopes_supported": ["mcp:tools"]})
        );
        assert_eq!(
            challenge(&o, "Bearer realm=\"trigate\""),
            "Bearer realm=\"trigate\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
    }

    #[test]
    fn the_clients_authorization_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer client"));
        upstream_headers(None, &mut h);
        assert!(h.get(AUTHORIZATION).is_none());

        let mut u = McpUpstream {
            destination: "tools".into(),
            headers: BTreeMap::from([("authorization".into(), "Bearer server".into())]),
            forward_authorization: false,
        };
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer client"));
        upstream_headers(Some(&u), &mut h);
        assert_eq!(h[AUTHORIZATION], "Bearer server");

        u.headers.clear();
        u.forward_authorization = true;
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer client"));
        upstream_headers(Some(&u), &mut h);
        assert_eq!(h[AUTHORIZATION], "Bearer client");
    }
}
