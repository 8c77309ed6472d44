//! Judges against small HTTP servers on 127.0.0.1 that speak the webhook
//! contract or OpenAI chat completions, and record what they were sent.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};

use super::*;

/// What a fake judge received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Value,
}

type Answer = Pin<Box<dyn Future<Output = (u16, String)> + Send>>;
type Answerer = Arc<dyn Fn(Seen) -> Answer + Send + Sync>;
type Log = Arc<Mutex<Vec<Seen>>>;

/// A fake judge over plain HTTP: every request is logged, then answered
/// with what `answer` returns for it.
async fn server<F, Fut>(answer: F) -> (SocketAddr, Log)
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (u16, String)> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: Log = Arc::default();
    let answerer: Answerer = Arc::new(move |seen| -> Answer { Box::pin(answer(seen)) });
    let served = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, Arc::clone(&answerer), Arc::clone(&served)));
        }
    });
    (addr, log)
}

async fn serve<I>(io: I, answerer: Answerer, log: Log)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let answerer = Arc::clone(&answerer);
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let seen = Seen {
                method: parts.method.to_string(),
                target: parts
                    .uri
                    .path_and_query()
                    .map_or("", |p| p.as_str())
                    .to_owned(),
                headers: parts.headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(seen.clone());
            let (status, text) = answerer(seen).await;
            Ok::<_, hyper::Error>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(text)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A fake that always answers `status` with `body`.
async fn fixed(status: u16, body: Value) -> (SocketAddr, Log) {
    let text = match body {
        Value::String(s) => s,
        other => other.to_string(),
    };
    server(move |_| {
        let text = text.clone();
        async move { (status, text) }
    })
    .await
}

fn webhook(name: &str, url: String, fail: FailMode) -> JudgeConfig {
    JudgeConfig {
        name: name.into(),
        kind: JudgeKind::Webhook,
        url,
        model: None,
        api_key: None,
        headers: BTreeMap::new(),
        prompt: None,
        timeout_ms: 10_000,
        fail,
    }
}

fn llm(name: &str, addr: SocketAddr) -> JudgeConfig {
    JudgeConfig {
        kind: JudgeKind::Llm,
        model: Some("guard-1b".into()),
        ..webhook(name, format!("http://{addr}/v1/"), FailMode::Open)
    }
}

fn judge(cfg: &JudgeConfig) -> Arc<Judge> {
    Arc::new(Judge::new(cfg).expect("valid judge"))
}

fn cx() -> JudgeContext {
    JudgeContext {
        workload: "billing".into(),
        phase: "request",
        policy: "pii".into(),
    }
}

fn chat(content: &str) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "guard-1b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
    })
    .to_string()
}

fn block(reason: &str) -> JudgeVerdict {
    JudgeVerdict::Block {
        reason: reason.into(),
    }
}

// --- webhook ---

#[tokio::test]
async fn webhook_allow_receives_the_contract_request() {
    let (addr, log) = fixed(200, json!({"action": "allow"})).await;
    let mut cfg = webhook(
        "hook",
        format!("http://{addr}/check?team=billing"),
        FailMode::Open,
    );
    cfg.headers.insert("x-team".into(), "billing".into());
    let verdict = judge(&cfg).judge("hello there", &cx()).await.unwrap();
    assert_eq!(verdict, JudgeVerdict::Allow);

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.target, "/check?team=billing");
    assert_eq!(
        s.body,
        json!({"text": "hello there", "phase": "request", "workload": "billing", "policy": "pii"})
    );
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["x-team"], "billing");
    assert_eq!(s.headers["host"], addr.to_string());
    assert!(s.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("trigate/"));
    assert!(!s.headers.contains_key("authorization"));
}

#[tokio::test]
async fn webhook_block_and_redact() {
    // The fake decides on the text it receives.
    let (addr, log) = server(|seen| async move {
        let answer = match seen.body["text"].as_str().unwrap_or_default() {
            "how do I sue my employer" => json!({"action": "block", "reason": "legal advice"}),
            "no reason" => json!({"action": "block"}),
            "call 555-0100" => json!({"action": "redact", "text": "call <PHONE>"}),
            "extra members" => json!({"action": "allow", "score": 0.1, "reason": "fine"}),
            _ => json!({"action": "nonsense"}),
        };
        (200, answer.to_string())
    })
    .await;
    let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
    let response = JudgeContext {
        phase: "response",
        ..cx()
    };
    assert_eq!(
        j.judge("how do I sue my employer", &cx()).await.unwrap(),
        block("legal advice")
    );
    assert_eq!(
        j.judge("no reason", &cx()).await.unwrap(),
        block("no reason given")
    );
    assert_eq!(
        j.judge("call 555-0100", &response).await.unwrap(),
        JudgeVerdict::Redact {
            text: "call <PHONE>".into()
        }
    );
    assert_eq!(
        j.judge("extra members", &cx()).await.unwrap(),
        JudgeVerdict::Allow
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].body["phase"], "response");
}

#[tokio::test]
async fn webhook_answers_outside_the_contract_are_bad_answers() {
    for answer in [
        json!("not json"),
        json!({"action": "maybe"}),
        json!({"action": "ALLOW"}),
        json!({"action": "redact"}),
        json!({"reason": "no action"}),
        json!(["allow"]),
    ] {
        let (addr, _) = fixed(200, answer.clone()).await;
        let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
        match j.judge("text", &cx()).await {
            Err(JudgeError::BadAnswer(m)) => assert!(!m.is_empty()),
            other => panic!("{answer}: expected BadAnswer, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn error_statuses_are_reported() {
    for status in [500, 404, 401, 201] {
        let (addr, _) = fixed(status, json!({"action": "allow"})).await;
        let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
        match j.judge("text", &cx()).await {
            Err(JudgeError::Status(s)) => assert_eq!(s, status),
            other => panic!("{status}: expected Status, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let reason = "x".repeat(MAX_ANSWER_BYTES + 1024);
    let (addr, _) = fixed(200, json!({"action": "block", "reason": reason})).await;
    let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
    match j.judge("short", &cx()).await {
        Err(e @ JudgeError::TooLarge(_)) => assert_eq!(e.label(), "too_large"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redacted_copy_of_a_long_text_fits() {
    // Larger than MAX_ANSWER_BYTES, but a redacted copy of the text it was sent.
    let text = "word ".repeat(MAX_ANSWER_BYTES / 4);
    let (addr, _) = server(|seen| async move {
        let text = seen.body["text"].as_str().unwrap_or_default().to_owned();
        (200, json!({"action": "redact", "text": text}).to_string())
    })
    .await;
    let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
    assert_eq!(
        j.judge(&text, &cx()).await.unwrap(),
        JudgeVerdict::Redact { text: text.clone() }
    );
}

#[tokio::test]
async fn reasons_are_cut_to_the_limit() {
    let (addr, _) = fixed(200, json!({"action": "block", "reason": "é".repeat(500)})).await;
    let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
    match j.judge("text", &cx()).await.unwrap() {
        JudgeVerdict::Block { reason } => {
            assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1, "{reason}");
            assert!(reason.ends_with('…'));
        }
        other => panic!("expected Block, got {other:?}"),
    }
}

#[tokio::test]
async fn api_key_is_sent_as_bearer() {
    let path = std::env::temp_dir().join(format!("trigate-judge-key-{}", std::process::id()));
    std::fs::write(&path, "sk-judge-test\n").unwrap();
    let (addr, log) = fixed(200, json!({"action": "allow"})).await;
    let mut cfg = webhook("hook", format!("http://{addr}/"), FailMode::Open);
    cfg.api_key = Some(SecretSource {
        file: Some(path.clone()),
        env: None,
    });
    let result = judge(&cfg).judge("text", &cx()).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(result.unwrap(), JudgeVerdict::Allow);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-judge-test");
}

#[tokio::test]
async fn an_unreadable_api_key_fails_before_asking() {
    let (addr, log) = fixed(200, json!({"action": "allow"})).await;
    let mut cfg = webhook("hook", format!("http://{addr}/"), FailMode::Closed);
    cfg.api_key = Some(SecretSource {
        file: None,
        env: Some("TRIGATE_JUDGE_TEST_KEY_THAT_IS_NEVER_SET".into()),
    });
    let out = run_all(&[judge(&cfg)], "text", &cx()).await;
    let outcome = &out[0].1;
    assert!(
        matches!(&outcome.error, Some(JudgeError::Key(m)) if m.contains("TRIGATE_JUDGE_TEST_KEY_THAT_IS_NEVER_SET")),
        "{outcome:?}"
    );
    assert!(
        matches!(&outcome.verdict, JudgeVerdict::Block { reason } if reason.starts_with("judge hook failed: "))
    );
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let j = judge(&webhook("hook", format!("http://{addr}/"), FailMode::Open));
    match j.judge("text", &cx()).await {
        Err(e @ JudgeError::Connect { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

// --- LLM judge ---

#[tokio::test]
async fn llm_judge_blocks_and_allows() {
    let (addr, log) = server(|seen| async move {
        let text = seen.body["messages"][1]["content"]
            .as_str()
            .unwrap_or_default();
        let reply = if text.contains("sue") {
            "BLOCK: legal advice"
        } else {
            "ALLOW"
        };
        (200, chat(reply))
    })
    .await;
    let j = judge(&llm("guard", addr));
    assert_eq!(
        j.judge("how do I sue my employer", &cx()).await.unwrap(),
        block("legal advice")
    );
    assert_eq!(
        j.judge("what is 2+2", &cx()).await.unwrap(),
        JudgeVerdict::Allow
    );

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    // The base URL's trailing slash is not doubled.
    assert_eq!(seen[0].target, "/v1/chat/completions");
    assert_eq!(
        seen[0].body,
        json!({
            "model": "guard-1b",
            "messages": [
                {"role": "system", "content": DEFAULT_PROMPT},
                {"role": "user", "content": "how do I sue my employer"},
            ],
            "temperature": 0,
            "max_tokens": 20,
        })
    );
}

#[tokio::test]
async fn llm_judge_sends_the_configured_prompt() {
    let (addr, log) = fixed(200, json!(chat("allow"))).await;
    let mut cfg = llm("guard", addr);
    cfg.prompt = Some("Answer BLOCK for legal questions, else ALLOW.".into());
    assert_eq!(
        judge(&cfg).judge("text", &cx()).await.unwrap(),
        JudgeVerdict::Allow
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen[0].body["messages"][0]["content"],
        "Answer BLOCK for legal questions, else ALLOW."
    );
}

#[tokio::test]
async fn llm_answers_outside_the_contract_are_bad_answers() {
    for answer in [
        json!(chat("I cannot decide")),
        json!(chat("")),
        json!({"choices": []}),
        json!({"choices": [{"message": {"role": "assistant", "content": null}}]}),
        json!({"action": "allow"}),
        json!("<html>not an API</html>"),
    ] {
        let (addr, _) = fixed(200, answer.clone()).await;
        match judge(&llm("guard", addr)).judge("text", &cx()).await {
            Err(JudgeError::BadAnswer(_)) => {}
            other => panic!("{answer}: expected BadAnswer, got {other:?}"),
        }
    }
}

#[test]
fn model_answers_are_read_leniently_about_decoration_only() {
    let cases: [(&str, Option<JudgeVerdict>); 14] = [
        ("ALLOW", Some(JudgeVerdict::Allow)),
        ("  allow\n", Some(JudgeVerdict::Allow)),
        ("Allowed.", Some(JudgeVerdict::Allow)),
        ("**ALLOW**", Some(JudgeVerdict::Allow)),
        ("BLOCK: legal advice", Some(block("legal advice"))),
        ("block - legal advice", Some(block("legal advice"))),
        ("**BLOCK**: malware request", Some(block("malware request"))),
        ("\"BLOCK\"", Some(block("no reason given"))),
        ("Blocked: weapons", Some(block("weapons"))),
        ("BLOCK", Some(block("no reason given"))),
        ("BLOCKING is what I would do", None),
        ("ALLOWANCE", None),
        ("I would ALLOW this", None),
        ("", None),
    ];
    for (answer, want) in cases {
        match (classify(answer), want) {
            (Ok(got), Some(want)) => assert_eq!(got, want, "{answer:?}"),
            (Err(JudgeError::BadAnswer(m)), None) => {
                // The message must not quote the answer (it may repeat the text).
                assert!(answer.is_empty() || !m.contains(answer), "{m}");
            }
            (got, want) => panic!("{answer:?}: got {got:?}, want {want:?}"),
        }
    }
}

// --- timeouts, fail modes, concurrency ---

#[tokio::test]
async fn a_judge_past_its_timeout_fails_open_or_closed() {
    // Never answers: only the judges' timeouts end the test.
    let (addr, log) = server(|_| async {
        std::future::pending::<()>().await;
        (200, String::new())
    })
    .await;
    let mut open = webhook("slow-open", format!("http://{addr}/"), FailMode::Open);
    open.timeout_ms = 200;
    let mut closed = webhook("slow-closed", format!("http://{addr}/"), FailMode::Closed);
    closed.timeout_ms = 200;
    let out = run_all(&[judge(&open), judge(&closed)], "text", &cx()).await;

    assert_eq!(out[0].0.name(), "slow-open");
    assert_eq!(out[0].1.verdict, JudgeVerdict::Allow);
    assert!(
        matches!(out[0].1.error, Some(JudgeError::Timeout(t)) if t == Duration::from_millis(200)),
        "{:?}",
        out[0].1
    );

    assert_eq!(out[1].0.name(), "slow-closed");
    match &out[1].1.verdict {
        JudgeVerdict::Block { reason } => assert!(
            reason.starts_with("judge slow-closed failed: no complete answer within 200ms"),
            "{reason}"
        ),
        other => panic!("expected Block, got {other:?}"),
    }
    assert!(matches!(out[1].1.error, Some(JudgeError::Timeout(_))));
    // Both requests did reach the judge.
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn failures_follow_each_judges_fail_mode() {
    let (broken, _) = fixed(500, json!({"error": "boom"})).await;
    let (garbage, _) = fixed(200, json!("garbage")).await;
    let (fine, _) = fixed(200, json!({"action": "block", "reason": "policy"})).await;
    let judges = [
        judge(&webhook(
            "broken-open",
            format!("http://{broken}/"),
            FailMode::Open,
        )),
        judge(&webhook(
            "broken-closed",
            format!("http://{broken}/"),
            FailMode::Closed,
        )),
        judge(&webhook(
            "garbage-open",
            format!("http://{garbage}/"),
            FailMode::Open,
        )),
        judge(&webhook(
            "garbage-closed",
            format!("http://{garbage}/"),
            FailMode::Closed,
        )),
        judge(&webhook(
            "fine-open",
            format!("http://{fine}/"),
            FailMode::Open,
        )),
    ];
    let out = run_all(&judges, "text", &cx()).await;
    let names: Vec<&str> = out.iter().map(|(j, _)| j.name()).collect();
    assert_eq!(
        names,
        [
            "broken-open",
            "broken-closed",
            "garbage-open",
            "garbage-closed",
            "fine-open"
        ]
    );

    let o = &out[0].1;
    assert_eq!(o.verdict, JudgeVerdict::Allow);
    assert!(matches!(o.error, Some(JudgeError::Status(500))), "{o:?}");

    let o = &out[1].1;
    assert!(
        matches!(&o.verdict, JudgeVerdict::Block { reason }
        if reason.starts_with("judge broken-closed failed: answered HTTP 500")),
        "{o:?}"
    );
    assert!(matches!(o.error, Some(JudgeError::Status(500))), "{o:?}");

    let o = &out[2].1;
    assert_eq!(o.verdict, JudgeVerdict::Allow);
    assert!(matches!(o.error, Some(JudgeError::BadAnswer(_))), "{o:?}");

    let o = &out[3].1;
    assert!(
        matches!(&o.verdict, JudgeVerdict::Block { reason }
        if reason.starts_with("judge garbage-closed failed: answer outside the contract")),
        "{o:?}"
    );
    assert_eq!(o.error.as_ref().map(JudgeError::label), Some("bad_answer"));

    // A verdict is a verdict, whatever the fail mode.
    let o = &out[4].1;
    assert_eq!(o.verdict, block("policy"));
    assert!(o.error.is_none());
}

#[tokio::test]
async fn run_all_asks_every_judge_before_any_answers() {
    // Each fake holds its answer until both requests have arrived. Asked one
    // after the other, the first would wait for a second request that never
    // comes and, after the wait, answer "block" — so the test proves the
    // judges were asked at once without measuring time.
    let arrived = Arc::new(AtomicUsize::new(0));
    let both = Arc::new(tokio::sync::Notify::new());
    let fake = |arrived: Arc<AtomicUsize>, both: Arc<tokio::sync::Notify>| {
        move |_seen: Seen| {
            let arrived = Arc::clone(&arrived);
            let both = Arc::clone(&both);
            async move {
                let notified = both.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= 2 {
                    both.notify_waiters();
                } else if tokio::time::timeout(Duration::from_secs(10), notified)
                    .await
                    .is_err()
                {
                    let a = json!({"action": "block", "reason": "asked one after the other"});
                    return (200, a.to_string());
                }
                // The ~300 ms a real judge might take.
                tokio::time::sleep(Duration::from_millis(300)).await;
                (200, json!({"action": "allow"}).to_string())
            }
        }
    };
    let (a, _) = server(fake(Arc::clone(&arrived), Arc::clone(&both))).await;
    let (b, _) = server(fake(Arc::clone(&arrived), Arc::clone(&both))).await;
    let mut first = webhook("first", format!("http://{a}/"), FailMode::Closed);
    let mut second = webhook("second", format!("http://{b}/"), FailMode::Closed);
    // Well above the fakes' wait, so a sequential run fails on the verdict,
    // not on a timeout.
    first.timeout_ms = 30_000;
    second.timeout_ms = 30_000;

    let out = run_all(&[judge(&first), judge(&second)], "text", &cx()).await;
    assert_eq!(arrived.load(Ordering::SeqCst), 2);
    for (j, o) in &out {
        assert_eq!(o.verdict, JudgeVerdict::Allow, "{}: {o:?}", j.name());
        assert!(o.error.is_none(), "{}: {o:?}", j.name());
    }
    assert_eq!(out[0].0.name(), "first");
    assert_eq!(out[1].0.name(), "second");
}

#[tokio::test]
async fn run_all_without_judges_is_empty() {
    assert!(run_all(&[], "text", &cx()).await.is_empty());
}

// --- https ---

/// A TLS fake judge with a self-signed certificate for 127.0.0.1; also
/// returns a client config that trusts it.
async fn tls_server(answer: Value) -> (SocketAddr, Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = answer.to_string();
    let answerer: Answerer = Arc::new(move |_| -> Answer {
        let text = text.clone();
        Box::pin(async move { (200, text) })
    });
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answerer = Arc::clone(&answerer);
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                if let Ok(tls) = acceptor.accept(conn).await {
                    serve(tls, answerer, Arc::default()).await;
                }
            });
        }
    });
    (addr, Arc::new(client))
}

#[tokio::test]
async fn https_judges_verify_the_server() {
    let (addr, trusting) = tls_server(json!({"action": "block", "reason": "over tls"})).await;
    let cfg = webhook("hook", format!("https://{addr}/"), FailMode::Open);

    let j = Judge::with_tls(&cfg, trusting).unwrap();
    assert_eq!(j.judge("text", &cx()).await.unwrap(), block("over tls"));

    // The default config trusts the Mozilla roots only.
    match judge(&cfg).judge("text", &cx()).await {
        Err(e @ JudgeError::Tls(_)) => assert!(e.to_string().contains("certificate"), "{e}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

// --- config ---

#[test]
fn yaml_defaults_and_unknown_fields() {
    let cfg: JudgeConfig =
        serde_yaml_ng::from_str("name: hook\nkind: webhook\nurl: http://judge.local/check\n")
            .unwrap();
    assert_eq!(cfg.timeout_ms, 2000);
    assert_eq!(cfg.fail, FailMode::Open);
    assert!(cfg.headers.is_empty() && cfg.model.is_none() && cfg.prompt.is_none());
    assert!(cfg.problems("guardrails.judges[0]").is_empty());

    let cfg: JudgeConfig = serde_yaml_ng::from_str(
        "name: guard\nkind: llm\nurl: http://vllm:8000/v1\nmodel: m\nfail: closed\n\
         timeout_ms: 500\napi_key: {env: JUDGE_KEY}\nheaders: {x-team: a}\n",
    )
    .unwrap();
    assert_eq!(cfg.kind, JudgeKind::Llm);
    assert_eq!(cfg.fail, FailMode::Closed);
    assert!(cfg.problems("j").is_empty(), "{:?}", cfg.problems("j"));

    let unknown = serde_yaml_ng::from_str::<JudgeConfig>(
        "name: hook\nkind: webhook\nurl: http://x/\ntimeout: 5\n",
    );
    assert!(unknown.unwrap_err().to_string().contains("timeout"));
    let kind = serde_yaml_ng::from_str::<JudgeConfig>("name: hook\nkind: grpc\nurl: http://x/\n");
    assert!(kind.is_err());
}

#[test]
fn problems_name_the_field() {
    let at = "guardrails.judges[0]";
    let base = webhook("hook", "http://judge.local/".into(), FailMode::Open);
    let has = |cfg: &JudgeConfig, field: &str, needle: &str| {
        let problems = cfg.problems(at);
        assert!(
            problems
                .iter()
                .any(|(f, m)| f == &format!("{at}.{field}") && m.contains(needle)),
            "{field}: {needle:?} not in {problems:?}"
        );
    };

    let mut c = base.clone();
    c.kind = JudgeKind::Llm;
    has(&c, "model", "required for kind llm");
    c.model = Some("m".into());
    c.url = "http://vllm:8000/v1?x=1".into();
    has(&c, "url", "no query");
    c.url = "http://vllm:8000/v1".into();
    c.prompt = Some("  ".into());
    has(&c, "prompt", "must not be empty");

    let mut c = base.clone();
    c.model = Some("m".into());
    c.prompt = Some("p".into());
    has(&c, "model", "only for kind llm");
    has(&c, "prompt", "only for kind llm");

    for url in ["judge.local/check", "ftp://judge.local/", "http:///x", ""] {
        let mut c = base.clone();
        c.url = url.into();
        has(&c, "url", "not an http:// or https:// URL");
    }

    let long = "x".repeat(65);
    for name in ["", "Hook", "-hook", "a b", long.as_str()] {
        let mut c = base.clone();
        c.name = name.into();
        has(&c, "name", "not a valid name");
    }

    let mut c = base.clone();
    c.timeout_ms = 0;
    has(&c, "timeout_ms", "more than 0");

    let mut c = base.clone();
    c.api_key = Some(SecretSource::default());
    has(&c, "api_key", "exactly one");
    c.api_key = Some(SecretSource {
        file: Some("/k".into()),
        env: Some("K".into()),
    });
    has(&c, "api_key", "exactly one");

    let mut c = base.clone();
    c.headers.insert("bad header".into(), "v".into());
    has(&c, "headers", "not a header name");
    let mut c = base.clone();
    c.headers.insert("Content-Type".into(), "text/plain".into());
    has(&c, "headers", "set by the gateway");
    let mut c = base.clone();
    c.headers.insert("x-a".into(), "line\nbreak".into());
    has(&c, "headers", "not a valid header value");
    let mut c = base.clone();
    c.headers.insert("authorization".into(), "Basic x".into());
    assert!(c.problems(at).is_empty(), "{:?}", c.problems(at));
    c.api_key = Some(SecretSource {
        file: None,
        env: Some("K".into()),
    });
    has(&c, "headers", "also set by api_key");

    // Judge::new refuses what problems() reports, naming it.
    let mut c = base.clone();
    c.kind = JudgeKind::Llm;
    let e = Judge::new(&c).unwrap_err();
    assert!(e.contains("judge.model: required for kind llm"), "{e}");
}

#[test]
fn list_problems_finds_duplicate_names() {
    let a = webhook("hook", "http://a/".into(), FailMode::Open);
    let mut b = a.clone();
    b.timeout_ms = 0;
    let problems = list_problems(&[a.clone(), a.clone(), b], "guardrails.judges");
    assert_eq!(
        problems,
        vec![
            (
                "guardrails.judges[1].name".to_string(),
                "\"hook\" is also the name of guardrails.judges[0]; names must be unique"
                    .to_string()
            ),
            (
                "guardrails.judges[2].timeout_ms".to_string(),
                "must be more than 0".to_string()
            ),
            (
                "guardrails.judges[2].name".to_string(),
                "\"hook\" is also the name of guardrails.judges[0]; names must be unique"
                    .to_string()
            ),
        ]
    );
}

#[test]
fn the_schema_documents_the_fields() {
    let schema = serde_json::to_value(schemars::schema_for!(JudgeConfig)).unwrap();
    let props = &schema["properties"];
    for field in [
        "name",
        "kind",
        "url",
        "model",
        "api_key",
        "headers",
        "prompt",
        "timeout_ms",
        "fail",
    ] {
        assert!(props.get(field).is_some(), "{field} missing from {props}");
    }
    assert_eq!(props["timeout_ms"]["default"], 2000);
    assert!(props["url"]["description"]
        .as_str()
        .unwrap()
        .contains("/chat/completions"));
    assert_eq!(schema["required"], json!(["kind", "name", "url"]));
}
