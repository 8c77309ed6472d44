//! One LLM request, end to end: the route policy the api gate applies to
//! every HTTP request, then the model policy (which model, may this
//! workload use it, limits), then provider attempts in order with
//! failover, then the answer in the client's protocol and the accounting.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
    Method, Request, Response, StatusCode,
};
use serde_json::{json, Map, Value};

use super::{
    account::{settle_refund, Charges, Settle},
    answer::{Keep, LlmStream},
    cache::{self, Cached, Lookup, Slot},
    embeddings,
    front::{anthropic_error_type, Api, Dialect, Refusal},
    guard::{self, Audit, StreamGuard},
    provider::{self, ProviderRt, Wire, CLIENT_KEY_HEADERS},
    request::ClientRequest,
    routing::{self, Candidate, Who},
    semantic::{self, Question},
    skim::AnswerHead,
    streaming::{StreamSpec, Translator},
    translate,
    usage::{self, Usage},
    LlmPolicy,
};
use crate::{
    config::{ModelRoute, ProviderKind, RateLimit, ReportModel},
    gate::api::{
        client::{ApiBody, PoolKey},
        decide,
        h1::outbound::{self, UpBody},
        json_response, ConnContext, RequestLog, Verdict,
    },
    policy::{
        embed::LocalEmbedder,
        guardrail::{CheckError, Judges, Phase, Session},
        judge::{self, JudgeContext, JudgeVerdict},
        limits::{BudgetWindow, Decision, Limiter},
    },
    telemetry::access::LlmRecord,
};

/// Largest non-streamed provider answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest provider error body read for its message.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Serves one request on an `llm` destination that came through hyper
/// (HTTP/2 clients; HTTP/1.1 ones are served by the api gate's relay,
/// which calls [`respond`] itself).
pub async fn handle(cx: &Arc<ConnContext>, req: Request<Incoming>) -> Response<ApiBody> {
    let api_policy = cx.node.api.load_full();
    let (mut parts, body) = req.into_parts();
    let mut rlog = RequestLog::start(cx, &parts);
    // The routes' policy first (authn, authz, route limits): an LLM
    // destination is an HTTP destination like any other, and a caller the
    // routes refuse must not reach the model policy or spend tokens.
    match decide(cx, &api_policy, &mut parts, &mut rlog).await {
        Verdict::Answer(resp, outcome) => {
            let resp = super::front::in_callers_shape(resp, &parts.headers).await;
            return rlog.finish_answered(resp, outcome);
        }
        Verdict::Forward(_) => {}
    }
    let body = match read_body(cx, body).await {
        Ok(b) => b,
        Err(refusal) => {
            let dialect = super::front::dialect_of(&parts.headers);
            let (resp, outcome) = refuse(&rlog, &refusal, dialect);
            return rlog.finish_answered(resp, outcome);
        }
    };
    match respond(cx, &api_policy, parts, body, &mut rlog).await {
        Reply::Whole(resp, outcome) => rlog.finish_answered(resp, outcome),
        Reply::Stream(r, outcome) => {
            // The request's log line goes with the body: it is written
            // when the stream ends, with the usage it reported.
            let (parts, mut body) = r.into_parts();
            rlog.status = parts.status.as_u16();
            rlog.outcome = outcome;
            body.log = Some(rlog);
            Response::from_parts(parts, body.boxed())
        }
    }
}

/// The LLM gate proper, once the route policy admitted the request and its
/// body was read: the model policy, limits, provider attempts, the answer
/// in the client's protocol. Both transports call it.
pub(crate) async fn respond(
    cx: &Arc<ConnContext>,
    api_policy: &crate::gate::api::ApiPolicy,
    parts: Parts,
    body: Bytes,
    rlog: &mut RequestLog,
) -> Reply {
    let llm = cx.node.llm.load_full();
    let Some(api) = Api::detect(&parts.method, parts.uri.path(), &parts.headers) else {
        let dialect = super::front::dialect_of(&parts.headers);
        let refusal = Refusal::NotServed(format!("{} {}", parts.method, parts.uri.path()));
        let (resp, outcome) = refuse(rlog, &refusal, dialect);
        return Reply::Whole(resp, outcome);
    };
    let call = Call {
        cx: Arc::clone(cx),
        llm,
        limiter: Arc::clone(&api_policy.limiter),
        api,
    };
    match call.run(parts, body, rlog).await {
        Ok((Answer::Whole(resp), outcome)) => Reply::Whole(resp, outcome),
        Ok((Answer::Stream(resp), outcome)) => Reply::Stream(resp, outcome),
        Err(refusal) => {
            let (resp, outcome) = refuse(rlog, &refusal, api.dialect());
            Reply::Whole(resp, outcome)
        }
    }
}

/// What [`respond`] produced.
pub(crate) enum Reply {
    /// A whole answer (or a refusal) and the outcome to log.
    Whole(Response<ApiBody>, &'static str),
    /// A stream; its body settles the accounting when it ends.
    Stream(Response<Box<LlmStream>>, &'static str),
}

fn refuse(
    rlog: &RequestLog,
    refusal: &Refusal,
    dialect: Dialect,
) -> (Response<ApiBody>, &'static str) {
    tracing::info!(
        workload = &*rlog.workload,
        outcome = refusal.outcome(),
        reason = %refusal.message(),
        "llm request refused"
    );
    (refusal.response(dialect), refusal.outcome())
}

/// The request body through hyper, up to the configured cap.
async fn read_body(cx: &ConnContext, body: Incoming) -> Result<Bytes, Refusal> {
    let max = cx.node.config.load().http.max_request_body_bytes;
    if body.size_hint().lower() > max {
        return Err(Refusal::BodyTooLarge(max));
    }
    let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Refusal::BodyTooLarge(max))
        }
        Err(e) => Err(Refusal::InvalidRequest(format!(
            "body: reading it failed: {e}"
        ))),
    }
}

enum Answer {
    Whole(Response<ApiBody>),
    /// The body settles the accounting when the stream ends.
    Stream(Response<Box<LlmStream>>),
}

struct Call {
    cx: Arc<ConnContext>,
    llm: Arc<LlmPolicy>,
    limiter: Arc<Limiter>,
    api: Api,
}

impl Call {
    fn workload_name(&self) -> &str {
        self.cx.workload.as_ref().map_or("unknown", |w| &w.name)
    }

    async fn run(
        &self,
        parts: Parts,
        body: Bytes,
        rlog: &mut RequestLog,
    ) -> Result<(Answer, &'static str), Refusal> {
        if let Api::Models(dialect) = self.api {
            return Ok((Answer::Whole(self.models(dialect)), "ok"));
        }
        let mut request = ClientRequest::parse(&body).map_err(Refusal::InvalidRequest)?;
        let requested = match request.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m,
            Some(_) => {
                return Err(Refusal::InvalidRequest(
                    "model: must be a non-empty string".into(),
                ))
            }
            None => {
                return Err(Refusal::InvalidRequest(
                    "model: required field is missing".into(),
                ))
            }
        };
        let stream = request.get("stream").and_then(|s| s.as_bool()) == Some(true);
        rlog.llm = Some(Box::new(LlmRecord {
            model_requested: requested.clone(),
            stream,
            ..LlmRecord::default()
        }));

        // Model policy: which entry serves the name, and may this
        // workload use it. Before limits: a refused model spends nothing.
        let route = routing::find(&self.llm.cfg.models, &requested)
            .ok_or_else(|| Refusal::UnknownModel(requested.clone()))?;
        let who = self.cx.workload.as_ref().map(|w| Who {
            name: &w.name,
            labels: &w.labels,
        });
        if !routing::allowed(&self.llm.cfg.access, who.as_ref(), &requested) {
            return Err(Refusal::ModelNotAllowed {
                model: requested,
                workload: self.workload_name().to_owned(),
            });
        }
        routing::shape(&mut request, route);
        // The prompt is tokenized only when something needs the count
        // before the answer: an input-token limit, a local count_tokens, or
        // a stream (whose usage, if the provider leaves it out, can only
        // be estimated). A plain answer without usage is estimated later.
        let needs_estimate = stream
            || self.api == Api::CountTokens
            || self.llm.limits.iter().any(|l| {
                l.input_tokens.is_some()
                    && routing::selects(
                        &l.cfg.workloads,
                        &l.cfg.labels,
                        (&l.cfg.namespaces, &l.cfg.service_accounts),
                        who.as_ref(),
                    )
            });
        let estimated_input = if needs_estimate {
            estimate(&request, body.len()).await?
        } else {
            0
        };

        // count_tokens is answered here when no Anthropic provider serves
        // the model: the estimate is what the gateway itself limits on.
        let candidates = routing::order(
            route,
            &requested,
            |n| self.llm.provider_index(n),
            |i| self.llm.providers[i].cooling(self.llm.now_ms()),
            crate::telemetry::trace::random_u64(),
        );
        if self.api == Api::CountTokens
            && !candidates
                .iter()
                .any(|c| self.llm.providers[c.provider].wire == Wire::Anthropic)
        {
            let body = json!({ "input_tokens": estimated_input });
            return Ok((Answer::Whole(json_response(StatusCode::OK, &body)), "ok"));
        }

        // Limits after the model policy, before any provider: token
        // limits see the estimated prompt now and the reported usage after.
        let charges = if self.api == Api::CountTokens {
            Charges::default()
        } else {
            self.admit(who.as_ref(), estimated_input).await?
        };

        // The cache key is the prompt as the client sent it, taken before
        // guardrails replace anything in it (see cache.rs).
        let (lookup, question) = match &self.llm.cache {
            None => (Lookup::Off, None),
            Some(c) => {
                let tenant = cache::tenant(
                    &self.llm.cfg.cache.scope,
                    self.cx.workload.as_ref().map(|w| (&*w.name, &w.labels)),
                );
                let lookup = cache::lookup(
                    &self.llm.cfg.cache,
                    &tenant,
                    self.api,
                    request.value(),
                    stream,
                    &parts.headers,
                );
                let question = (c.semantic() && lookup.key().is_some())
                    .then(|| semantic::question(&tenant, self.api, stream, request.value()))
                    .flatten();
                (lookup, question)
            }
        };

        // Request guardrails after limits: a workload over its limits is
        // refused without its prompt being scanned. A refused prompt is
        // not served, so what the limits took is given back.
        let mut guard = self
            .cx
            .node
            .guard
            .load()
            .plan(
                crate::config::GateKind::Llm,
                self.cx.workload.as_ref().map(|w| (&*w.name, &w.labels)),
            )
            .map(Session::new);
        if let Some(session) = guard.as_mut() {
            let checked = match self.guard_request(&mut request, session) {
                Ok(()) => self.judge_request(&mut request, session).await,
                Err(r) => Err(r),
            };
            if let Err(r) = checked {
                settle_refund(&self.limiter, &self.llm, &charges, self.workload_name());
                return Err(r);
            }
        }

        // Cache lookup after the request guardrails: a refused prompt is
        // never answered, not even from the cache.
        let hit = match (lookup.key(), self.llm.cache.as_ref()) {
            (Some(key), Some(cache)) => cache.get(&key).await,
            _ => None,
        };
        if let Some(hit) = hit {
            // An answer from memory spends no tokens and no budget.
            settle_refund(&self.limiter, &self.llm, &charges, self.workload_name());
            return Ok((Answer::Whole(self.cached(&hit, "hit", rlog)), "ok"));
        }
        // Then by meaning: the question is embedded only on an exact miss.
        let question = match question {
            Some((text, context)) => self
                .embed_question(&parts, &text)
                .await
                .map(|embedding| Arc::new(Question { context, embedding })),
            None => None,
        };
        if let (Some(q), Some(c)) = (&question, self.llm.cache.as_ref()) {
            if let Some((hit, similarity)) = c.similar(q).await {
                tracing::debug!(similarity, "llm answer from the semantic cache");
                settle_refund(&self.limiter, &self.llm, &charges, self.workload_name());
                return Ok((Answer::Whole(self.cached(&hit, "semantic_hit", rlog)), "ok"));
            }
        }
        let slot = lookup.key().map(|key| Slot { key, question });
        if let Some(result) = lookup.header() {
            self.count_cache(result, rlog);
        }
        let answer = self
            .attempts(
                &parts, &request, route, &requested, candidates, stream, charges, guard, slot, rlog,
            )
            .await;
        match (answer, lookup.header()) {
            (Ok((mut answer, outcome)), Some(result)) => {
                let value = HeaderValue::from_static(result);
                match &mut answer {
                    Answer::Whole(r) => r.headers_mut().insert(CACHE_HEADER, value),
                    Answer::Stream(r) => r.headers_mut().insert(CACHE_HEADER, value),
                };
                Ok((answer, outcome))
            }
            (answer, _) => answer,
        }
    }

    /// The question's embedding for the semantic cache: from the
    /// configured embeddings provider, or the built-in local embedding.
    /// `None` when the provider fails: the question then skips the
    /// semantic cache (neither looked up nor remembered) rather than wait
    /// or fail the call.
    async fn embed_question(&self, parts: &Parts, text: &str) -> Option<Vec<f32>> {
        let Some(cfg) = &self.llm.cfg.cache.semantic.embeddings else {
            return Some(LocalEmbedder::shared().embed(text));
        };
        let result = match self.llm.provider_index(&cfg.provider) {
            // Validation makes this unreachable; a clear log if not.
            None => Err(format!("provider {:?} is not configured", cfg.provider)),
            Some(i) => {
                let p = &self.llm.providers[i];
                let embedded = async {
                    let path = p
                        .path(Api::Embeddings, &cfg.model, false)
                        .map_err(|r| r.message())?;
                    let body = embeddings::request_body(cfg, text);
                    let resp = self
                        .send(parts, p, &path, body)
                        .await
                        .map_err(|f| f.refusal.message())?;
                    let status = resp.status();
                    let body = read_limited(resp.into_body(), embeddings::MAX_ANSWER_BYTES).await;
                    if !status.is_success() {
                        let detail = provider::error_message(&body).unwrap_or_default();
                        return Err(format!("status {status}: {detail}"));
                    }
                    embeddings::read_answer(&body).map_err(|e| e.to_string())
                };
                tokio::time::timeout(Duration::from_millis(cfg.timeout_ms), embedded)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} ms", cfg.timeout_ms)))
            }
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.cx
            .node
            .metrics
            .genai
            .cache_embeddings
            .with_label_values(&[&cfg.provider, outcome])
            .inc();
        result
            .map_err(|error| {
                tracing::warn!(
                    provider = %cfg.provider,
                    model = %cfg.model,
                    %error,
                    "embedding a question for the semantic cache failed; it goes to its provider without the semantic cache"
                );
            })
            .ok()
    }

    fn count_cache(&self, result: &'static str, rlog: &mut RequestLog) {
        self.cx
            .node
            .metrics
            .genai
            .cache_requests
            .with_label_values(&[result, self.workload_name(), &self.cx.destination.name])
            .inc();
        if let Some(l) = rlog.llm.as_mut() {
            l.cache = Some(result);
        }
    }

    /// A kept answer, as it was sent the first time.
    fn cached(
        &self,
        hit: &Cached,
        result: &'static str,
        rlog: &mut RequestLog,
    ) -> Response<ApiBody> {
        self.count_cache(result, rlog);
        let m = &self.cx.node.metrics.genai;
        let workload = self.workload_name();
        if let Some(u) = hit.usage {
            for (kind, n) in [("input", u.input), ("output", u.output)] {
                m.cache_tokens_saved
                    .with_label_values(&[kind, workload])
                    .inc_by(n);
            }
        }
        if let Some(c) = hit.cost_micros {
            m.cache_cost_saved
                .with_label_values(&[workload])
                .inc_by(c as f64 / 1e6);
        }
        if let Some(l) = rlog.llm.as_mut() {
            l.provider = Some(hit.provider.clone());
            l.model_served = Some(hit.model_served.clone());
        }
        let mut out = Response::new(Full::new(hit.body.clone()).map_err(|e| match e {}).boxed());
        let content_type = if hit.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let headers = out.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
        out
    }

    /// Keeps a whole answer the client is sent.
    /// `served` is the (model, provider) pair, taken only when there is
    /// a key: the hot path clones nothing for a cache that is off.
    fn keep(
        &self,
        slot: Option<&Slot>,
        body: &Bytes,
        (usage, cost_micros): (Option<Usage>, Option<u64>),
        served: Option<(String, String)>,
    ) {
        let (Some(slot), Some(store), Some((model_served, provider))) =
            (slot, self.llm.cache.as_ref(), served)
        else {
            return;
        };
        store.put(
            slot,
            Cached {
                body: body.clone(),
                stream: false,
                usage,
                cost_micros,
                model_served,
                provider,
            },
        );
    }

    fn audit(&self) -> Audit {
        Audit {
            findings: self.cx.node.metrics.genai.guard_findings.clone(),
            gate: "llm",
            workload: self
                .cx
                .workload
                .as_ref()
                .map_or_else(|| "unknown".into(), |w| w.name.clone()),
            destination: self.cx.destination.name.clone(),
        }
    }

    /// Checks every text of the prompt; redacted texts replace the
    /// originals in what goes to the provider.
    fn guard_request(
        &self,
        request: &mut ClientRequest<'_>,
        session: &mut Session,
    ) -> Result<(), Refusal> {
        // Topics first: the question as the client wrote it.
        if session.plan().checks_topics() {
            if let Some(question) = semantic::last_user_text(self.api, request.value()) {
                let checked = session.check_topics(&question);
                self.audit().record(session.take_hits());
                checked.map_err(guard_refusal)?;
            }
        }
        if !session.plan().checks(Phase::Request) {
            return Ok(());
        }
        let Value::Object(mut tree) = request.value().clone() else {
            return Ok(());
        };
        let mut changed = false;
        let checked = guard::request_texts(self.api, &mut tree, &mut |text, place| {
            let out = session.check(Phase::Request, text, place)?;
            changed |= out.is_some();
            Ok(out)
        });
        self.audit().record(session.take_hits());
        checked.map_err(guard_refusal)?;
        if changed {
            *request = ClientRequest::from_tree(tree);
        }
        Ok(())
    }

    /// Asks the request judges about the question (the last user turn),
    /// all at once: a block refuses, a webhook's redaction replaces it.
    async fn judge_request(
        &self,
        request: &mut ClientRequest<'_>,
        session: &Session,
    ) -> Result<(), Refusal> {
        let judges = session.plan().judges(Phase::Request);
        if judges.judges.is_empty() {
            return Ok(());
        }
        let Some(question) = semantic::last_user_text(self.api, request.value()) else {
            return Ok(());
        };
        let outcomes = self.ask_judges(judges, Phase::Request, &question).await;
        let mut redacted = None;
        for (name, verdict) in outcomes {
            match verdict {
                JudgeVerdict::Block { reason } => {
                    return Err(judge_refusal(&name, &reason, Phase::Request))
                }
                JudgeVerdict::Redact { text } => {
                    redacted.get_or_insert(text);
                }
                JudgeVerdict::Allow => {}
            }
        }
        if let Some(text) = redacted {
            let mut tree = request.value().clone();
            if semantic::set_last_user_text(self.api, &mut tree, text) {
                if let Value::Object(tree) = tree {
                    *request = ClientRequest::from_tree(tree);
                }
            }
        }
        Ok(())
    }

    /// Asks `judges` about `text` concurrently; their verdicts with fail
    /// modes applied, counted and logged per judge.
    async fn ask_judges(
        &self,
        judges: &Judges,
        phase: Phase,
        text: &str,
    ) -> Vec<(String, JudgeVerdict)> {
        let cx = JudgeContext {
            workload: self.workload_name().to_owned(),
            phase: phase.as_str(),
            policy: judges.policies.join(","),
        };
        let outcomes = judge::run_all(&judges.judges, text, &cx).await;
        let findings = &self.cx.node.metrics.genai.guard_findings;
        outcomes
            .into_iter()
            .map(|(j, o)| {
                let action = match (&o.verdict, &o.error) {
                    (_, Some(_)) if matches!(o.verdict, JudgeVerdict::Allow) => "error_allowed",
                    (_, Some(_)) => "error_blocked",
                    (JudgeVerdict::Allow, None) => "allow",
                    (JudgeVerdict::Block { .. }, None) => "block",
                    (JudgeVerdict::Redact { .. }, None) => "redact",
                };
                findings
                    .with_label_values(&[
                        "llm",
                        phase.as_str(),
                        &cx.policy,
                        &format!("judge:{}", j.name()),
                        action,
                        self.workload_name(),
                        &self.cx.destination.name,
                    ])
                    .inc();
                match &o.error {
                    Some(e) => tracing::warn!(judge = j.name(), phase = phase.as_str(), error = %e, verdict = action, "guardrail judge failed"),
                    None => tracing::info!(target: "trigate::guard", judge = j.name(), phase = phase.as_str(), verdict = action, elapsed_ms = o.elapsed.as_secs_f64() * 1000.0, "guardrail judge"),
                }
                (j.name().to_owned(), o.verdict)
            })
            .collect()
    }

    /// Asks the response judges about a whole answer's text. A judge can
    /// only allow or block an answer: a redaction of it is taken as a
    /// block (the answer's parts cannot be mapped back from one text).
    async fn judge_answer(&self, body: &mut Value, session: &Session) -> Result<(), Refusal> {
        let judges = session.plan().judges(Phase::Response);
        if judges.judges.is_empty() {
            return Ok(());
        }
        let mut texts = Vec::new();
        let _ = guard::answer_texts(self.api, body, &mut |text, _| {
            texts.push(text.to_owned());
            Ok(None)
        });
        if texts.is_empty() {
            return Ok(());
        }
        for (name, verdict) in self
            .ask_judges(judges, Phase::Response, &texts.join("\n\n"))
            .await
        {
            match verdict {
                JudgeVerdict::Allow => {}
                JudgeVerdict::Block { reason } => {
                    return Err(judge_refusal(&name, &reason, Phase::Response))
                }
                JudgeVerdict::Redact { .. } => {
                    return Err(judge_refusal(
                        &name,
                        "it asked to redact the answer, which is withheld instead",
                        Phase::Response,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Checks every text of a whole answer and puts back the prompt's
    /// restorable placeholders.
    fn guard_answer(&self, body: &mut Value, session: &mut Session) -> Result<(), Refusal> {
        let restorer = session.restorer();
        let checked = guard::answer_texts(self.api, body, &mut |text, place| {
            let redacted = session.check(Phase::Response, text, place)?;
            let restored = restorer
                .as_ref()
                .map(|r| r.restore(redacted.as_deref().unwrap_or(text)));
            Ok(restored.or(redacted))
        });
        self.audit().record(session.take_hits());
        checked.map_err(guard_refusal)
    }

    /// `GET /v1/models`: the exact names this workload may ask for.
    fn models(&self, dialect: Dialect) -> Response<ApiBody> {
        let who = self.cx.workload.as_ref().map(|w| Who {
            name: &w.name,
            labels: &w.labels,
        });
        let names: Vec<&str> = self
            .llm
            .cfg
            .models
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| !n.ends_with('*'))
            .filter(|n| routing::allowed(&self.llm.cfg.access, who.as_ref(), n))
            .collect();
        let body = match dialect {
            Dialect::OpenAi => json!({
                "object": "list",
                "data": names.iter().map(|n| json!({
                    "id": n, "object": "model", "created": 0, "owned_by": "trigate",
                })).collect::<Vec<_>>(),
            }),
            Dialect::Anthropic => json!({
                "data": names.iter().map(|n| json!({
                    "type": "model", "id": n, "display_name": n,
                    "created_at": "1970-01-01T00:00:00Z",
                })).collect::<Vec<_>>(),
                "has_more": false,
                "first_id": names.first(),
                "last_id": names.last(),
            }),
        };
        json_response(StatusCode::OK, &body)
    }

    /// Every applicable limit must admit the request. Requests and input
    /// tokens are taken now; output tokens and spend can only be known
    /// after, so a workload already over them is refused until they
    /// refill (or the window turns).
    async fn admit(&self, who: Option<&Who<'_>>, estimated_input: u64) -> Result<Charges, Refusal> {
        let key = self.workload_name().to_owned();
        let mut charges = Charges {
            limits: Vec::new(),
            estimated_input,
        };
        // Every bucket of every applicable limit, in order.
        let mut takes = Vec::new();
        for (i, limit) in self.llm.limits.iter().enumerate() {
            if !routing::selects(
                &limit.cfg.workloads,
                &limit.cfg.labels,
                (&limit.cfg.namespaces, &limit.cfg.service_accounts),
                who,
            ) {
                continue;
            }
            charges.limits.push(i);
            let checks = [
                ("requests", limit.requests.as_ref(), 1, false),
                (
                    "input_tokens",
                    limit.input_tokens.as_ref(),
                    estimated_input.max(1),
                    true,
                ),
                ("output_tokens", limit.output_tokens.as_ref(), 1, true),
            ];
            for (kind, bucket, cost, tokens) in checks {
                if let Some(bucket) = bucket {
                    takes.push(Take {
                        limit: i,
                        kind,
                        bucket,
                        cost,
                        tokens,
                    });
                }
            }
        }
        let refused = |take: &Take<'_>| {
            let name = &self.llm.limits[take.limit].cfg.name;
            format!(
                "{} per minute of limit {name:?} exceeded for workload {key:?}",
                take.kind.replace('_', " "),
            )
        };
        let mut taken: Vec<(&RateLimit, u64)> = Vec::new();
        for take in &takes {
            let decision = self.limiter.take("llm", take.bucket, &key, take.cost).await;
            let allowed = matches!(decision, Decision::Allowed { .. });
            let name = &self.llm.limits[take.limit].cfg.name;
            if let Err(r) = self.judge(decision, name, take.kind, take.tokens, || refused(take)) {
                give_back(&self.limiter, &key, &taken);
                return Err(r);
            }
            if allowed {
                taken.push((take.bucket, take.cost));
            }
        }
        // Spend budgets last: only checked (what a call costs is known
        // after it), and a refusal gives back the buckets taken above.
        let now = SystemTime::now();
        for &i in &charges.limits {
            let limit = &self.llm.limits[i];
            let budgets = [
                (
                    "cost_per_day",
                    limit.cfg.cost_per_day_usd,
                    BudgetWindow::Day,
                ),
                (
                    "cost_per_month",
                    limit.cfg.cost_per_month_usd,
                    BudgetWindow::Month,
                ),
            ];
            for (kind, usd, window) in budgets {
                let Some(usd) = usd else { continue };
                let micros = (usd * 1e6).round() as u64;
                let decision = self
                    .limiter
                    .budget_check("llm", &limit.cfg.name, &key, window, micros, now)
                    .await;
                let judged = self.judge(decision, &limit.cfg.name, kind, true, || {
                    format!(
                        "the spend budget {kind} (${usd}) of limit {:?} is used up for workload {key:?}",
                        limit.cfg.name
                    )
                });
                if let Err(r) = judged {
                    give_back(&self.limiter, &key, &taken);
                    return Err(r);
                }
            }
        }
        Ok(charges)
    }

    fn judge(
        &self,
        decision: Decision,
        limit: &str,
        kind: &str,
        tokens: bool,
        message: impl FnOnce() -> String,
    ) -> Result<(), Refusal> {
        let refused = |label| {
            self.cx
                .node
                .metrics
                .genai
                .limit_refusals
                .with_label_values(&[limit, label, self.workload_name()])
                .inc();
        };
        match decision {
            Decision::Allowed { .. } | Decision::BackendDown { admitted: true, .. } => Ok(()),
            Decision::Limited { retry_after } => {
                refused(kind);
                Err(Refusal::Limited {
                    message: message(),
                    retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                    tokens,
                })
            }
            Decision::BackendDown {
                admitted: false, ..
            } => {
                refused("backend_down");
                Err(Refusal::LimitsUnavailable)
            }
        }
    }

    /// Tries the candidates in order (cycling while attempts remain, with
    /// backoff before a provider is tried again) until one answers.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        parts: &Parts,
        request: &ClientRequest<'_>,
        route: &ModelRoute,
        requested: &str,
        candidates: Vec<Candidate>,
        stream: bool,
        mut charges: Charges,
        mut guard: Option<Session>,
        cache_key: Option<Slot>,
        rlog: &mut RequestLog,
    ) -> Result<(Answer, &'static str), Refusal> {
        let max = self.llm.cfg.max_attempts.max(1) as usize;
        // Whether the answer is filtered (answer rules, or the prompt's
        // placeholders to restore).
        let guard_answer = guard
            .as_ref()
            .is_some_and(|s| s.plan().checks(Phase::Response) || s.restores());
        let mut last: Option<Refusal> = None;
        let mut unsupported: Option<Refusal> = None;
        let mut failovers = 0u32;
        let report = route.report_model.unwrap_or(self.llm.cfg.report_model);
        let started = Instant::now();
        for (n, cand) in candidates.iter().cycle().take(max.max(1)).enumerate() {
            if n >= candidates.len() {
                let backoff = self.llm.cfg.retry_backoff_ms << (n / candidates.len() - 1).min(6);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            let p = &self.llm.providers[cand.provider];
            // The Responses API goes to OpenAI as it is; every other
            // provider gets it as Chat Completions, translated back after.
            // A guarded Responses stream goes as chat too: the guard reads
            // chat chunks, and the Responses events are built from them.
            let via_chat = self.api == Api::Responses
                && (p.cfg.kind != ProviderKind::Openai || (stream && guard_answer));
            let wire_api = if via_chat {
                Api::ChatCompletions
            } else {
                self.api
            };
            let path = match p.path(wire_api, &cand.model, stream) {
                Ok(path) => path,
                Err(r) => {
                    unsupported = Some(r);
                    continue;
                }
            };
            let shown = match report {
                ReportModel::Served => cand.model.clone(),
                ReportModel::Requested => requested.to_owned(),
            };
            let chat;
            let client_body = if via_chat {
                chat = match translate::responses_request_to_chat(request.value()) {
                    Ok(Value::Object(m)) => ClientRequest::from_tree(m),
                    Ok(_) => ClientRequest::from_tree(Map::new()),
                    Err(e) => return Err(Refusal::InvalidRequest(e.to_string())),
                };
                &chat
            } else {
                request
            };
            let (body, added_usage) =
                provider::request_body(wire_api, p.wire, client_body, &cand.model, stream)
                    .map_err(|e| Refusal::InvalidRequest(e.to_string()))?;
            let body = Bytes::from(body);
            if let Some(l) = rlog.llm.as_mut() {
                l.provider = Some(p.name().to_owned());
                l.model_served = Some(cand.model.clone());
                l.failovers = failovers;
            }
            rlog.attempts = n as u32 + 1;
            let result = self.send(parts, p, &path, body).await;
            let failure = match result {
                Ok(resp) if resp.status().is_success() => {
                    let ctx = Settle {
                        node: Arc::clone(&self.cx.node),
                        llm: Arc::clone(&self.llm),
                        limiter: Arc::clone(&self.limiter),
                        workload: self.workload_name().to_owned(),
                        destination: self.cx.destination.name.clone(),
                        operation: self.api.operation(),
                        provider: p.cfg.kind.as_str(),
                        provider_name: p.name().to_owned(),
                        requested: requested.to_owned(),
                        served: cand.model.clone(),
                        charges,
                        started,
                    };
                    if !stream {
                        return self
                            .whole(
                                resp,
                                p.wire,
                                &shown,
                                (wire_api, request, via_chat),
                                ctx,
                                guard.as_mut(),
                                cache_key,
                                rlog,
                            )
                            .await;
                    }
                    let include_usage = request
                        .get("stream_options")
                        .is_some_and(|o| o["include_usage"] == true);
                    let translator = Translator::new(
                        self.api.dialect(),
                        p.wire,
                        StreamSpec {
                            model: shown,
                            rewrite_model: report == ReportModel::Requested,
                            // The Responses stream is built from chat chunks
                            // and needs their usage chunk.
                            include_usage: include_usage || via_chat,
                            added_usage: added_usage && !via_chat,
                            id: format!("chatcmpl-{:016x}", crate::telemetry::trace::random_u64()),
                            created: unix_now(),
                            responses: via_chat.then(|| request.value().clone()),
                        },
                    )
                    .guarded(guard.as_ref().and_then(|s| {
                        StreamGuard::new(s.clone(), self.audit(), self.api.dialect())
                    }));
                    // Nothing has reached the client until the first
                    // translated bytes exist: a stream that fails before
                    // them (an overloaded error event, a cut, silence) can
                    // still go to the next provider.
                    let timeout = Duration::from_millis(p.cfg.timeout_ms);
                    match first_bytes(resp, translator, timeout).await {
                        Ok(started) => {
                            let keep = cache_key.zip(self.llm.cache.as_ref()).map(|(slot, c)| {
                                Keep::new(slot, c.max_entry_bytes(), &started.first)
                            });
                            return Ok((Answer::Stream(self.stream(started, ctx, keep)), "ok"));
                        }
                        Err(NoStart::Blocked(message)) => {
                            // The provider answered; a guardrail withheld
                            // all of it. Its prompt was read: estimated.
                            let input = ctx.charges.estimated_input;
                            ctx.settle(
                                Some(Usage {
                                    input,
                                    estimated: true,
                                    ..Usage::default()
                                }),
                                None,
                                None,
                            );
                            return Err(Refusal::Guardrail {
                                message,
                                outcome: "guardrail_blocked",
                            });
                        }
                        Err(NoStart::Failed(message)) => {
                            // The next attempt accounts for the request.
                            charges = ctx.charges;
                            Failure {
                                reason: "stream_error",
                                refusal: Refusal::Upstream(format!(
                                    "provider {:?}'s stream failed before its first event: {message}",
                                    p.name()
                                )),
                            }
                        }
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = read_limited(resp.into_body(), MAX_ERROR_BYTES).await;
                    let message =
                        provider::error_message(&body).unwrap_or_else(|| "no error message".into());
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        Failure {
                            reason: if status == StatusCode::TOO_MANY_REQUESTS {
                                "status_429"
                            } else {
                                "status_5xx"
                            },
                            refusal: Refusal::Upstream(format!(
                                "provider {:?} answered {status}: {message}",
                                p.name()
                            )),
                        }
                    } else {
                        // The request itself is wrong for the provider:
                        // another would refuse it too.
                        settle_refund(&self.limiter, &self.llm, &charges, self.workload_name());
                        let resp =
                            upstream_error(self.api.dialect(), p.wire, status, &body, &message);
                        return Ok((Answer::Whole(resp), "upstream_refused"));
                    }
                }
                Err(f) => f,
            };
            tracing::warn!(
                provider = p.name(),
                reason = failure.reason,
                error = %failure.refusal.message(),
                "llm provider attempt failed"
            );
            p.cool_down(self.llm.now_ms());
            self.cx
                .node
                .metrics
                .genai
                .failovers
                .with_label_values(&[p.name(), failure.reason])
                .inc();
            failovers += 1;
            last = Some(failure.refusal);
        }
        // Nothing was served: give back what the limits took up front.
        settle_refund(&self.limiter, &self.llm, &charges, self.workload_name());
        Err(last.or(unsupported).unwrap_or_else(|| {
            Refusal::Upstream(format!(
                "no provider is configured for the model {requested:?}"
            ))
        }))
    }

    /// One request to one provider, until its response head.
    async fn send(
        &self,
        parts: &Parts,
        p: &ProviderRt,
        path: &str,
        body: Bytes,
    ) -> Result<Response<UpBody>, Failure> {
        let node = &self.cx.node;
        let addr = resolve(p, &node.config.load()).await.map_err(|e| Failure {
            reason: "resolve_error",
            refusal: Refusal::Upstream(e),
        })?;
        let key = PoolKey {
            workload: self.cx.workload.as_ref().map_or(0, |w| w.id),
            addr,
            tls_name: p.https.then(|| p.host.clone()),
        };
        let mut headers = self.upstream_headers(parts, p).map_err(|e| Failure {
            reason: "credentials",
            refusal: Refusal::Upstream(e),
        })?;
        if p.wire == Wire::Bedrock {
            // Only what the gateway itself sets is signed (`Host` is
            // already among them): a client header changed on the way
            // would otherwise break the signature.
            let signed: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| *k == header::HOST || *k == header::CONTENT_TYPE)
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let add = p.sign(path, &signed, &body).map_err(|e| Failure {
                reason: "credentials",
                refusal: Refusal::Upstream(e),
            })?;
            for (k, v) in add {
                if let (Ok(k), Ok(mut v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    v.set_sensitive(true);
                    set(&mut headers, k, v);
                }
            }
        }
        headers.push((header::CONTENT_LENGTH, HeaderValue::from(body.len())));
        let mut message = Vec::with_capacity(512 + body.len());
        message.extend_from_slice(b"POST ");
        message.extend_from_slice(path.as_bytes());
        message.extend_from_slice(b" HTTP/1.1\r\n");
        for (k, v) in &headers {
            message.extend_from_slice(k.as_str().as_bytes());
            message.extend_from_slice(b": ");
            message.extend_from_slice(v.as_bytes());
            message.extend_from_slice(b"\r\n");
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(&body);
        let timeout = Duration::from_millis(p.cfg.timeout_ms);
        // Only the fields passed on to the client are read from the answer.
        let sent = outbound::send(&self.cx, key, &Method::POST, &message, is_passed_on);
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok((head, body))) => Ok(Response::from_parts(head, body)),
            Ok(Err(e)) => Err(Failure {
                reason: match e {
                    crate::gate::api::Failure::Connect(_) => "connect_error",
                    _ => "connection_error",
                },
                refusal: Refusal::Upstream(format!("provider {:?}: {}", p.name(), e.detail())),
            }),
            Err(_) => Err(Failure {
                reason: "timeout",
                refusal: Refusal::Timeout(format!(
                    "provider {:?} did not answer within {} ms",
                    p.name(),
                    p.cfg.timeout_ms
                )),
            }),
        }
    }

    /// What goes upstream besides the body: the provider's credentials
    /// (the pod's are never copied unless configured), its protocol
    /// version, and the few client headers that mean the same there. A
    /// plain list in order (names are set once each): it is written
    /// straight into the request head.
    fn upstream_headers(&self, parts: &Parts, p: &ProviderRt) -> Result<Headers, String> {
        /// Client headers every provider understands.
        const PASS: [HeaderName; 4] = [
            header::USER_AGENT,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            header::ACCEPT,
        ];
        /// Client headers that mean something only to the protocol the
        /// client speaks.
        const PASS_SAME_PROTOCOL: [HeaderName; 5] = [
            HeaderName::from_static("openai-organization"),
            HeaderName::from_static("openai-project"),
            HeaderName::from_static("openai-beta"),
            HeaderName::from_static("anthropic-beta"),
            HeaderName::from_static("anthropic-version"),
        ];
        let mut out = Headers::with_capacity(10);
        out.push((header::HOST, p.authority_value.clone()));
        out.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        let same_protocol = matches!(
            (self.api.dialect(), p.wire),
            (Dialect::OpenAi, Wire::OpenAi) | (Dialect::Anthropic, Wire::Anthropic)
        );
        let extra: &[HeaderName] = if same_protocol {
            &PASS_SAME_PROTOCOL
        } else {
            &[]
        };
        for name in PASS.iter().chain(extra) {
            if let Some(v) = parts.headers.get(name) {
                out.push((name.clone(), v.clone()));
            }
        }
        if p.wire == Wire::Anthropic {
            let version = p.cfg.api_version.as_deref().unwrap_or("2023-06-01");
            let present = out.iter().any(|(k, _)| k == "anthropic-version");
            if p.cfg.api_version.is_some() || !present {
                set(
                    &mut out,
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_str(version).map_err(|e| e.to_string())?,
                );
            }
        }
        for (k, v) in &p.cfg.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                set(&mut out, k, v);
            }
        }
        out.retain(|(k, _)| !CLIENT_KEY_HEADERS.contains(&k.as_str()));
        for (k, v) in p.auth_headers(&parts.headers)? {
            set(&mut out, k, v);
        }
        Ok(out)
    }

    /// A non-streamed answer: read whole, translated, accounted.
    #[allow(clippy::too_many_arguments)]
    async fn whole(
        &self,
        resp: Response<UpBody>,
        wire: Wire,
        shown: &str,
        // The API the provider was asked, and the Responses request when
        // the answer must be turned back into one.
        (wire_api, request, via_chat): (Api, &ClientRequest<'_>, bool),
        ctx: Settle,
        guard: Option<&mut Session>,
        cache_key: Option<Slot>,
        rlog: &mut RequestLog,
    ) -> Result<(Answer, &'static str), Refusal> {
        // Answer rules or placeholders to restore: the answer is read as a
        // tree, never passed on as the provider's bytes.
        let guard = guard.filter(|s| {
            s.plan().checks(Phase::Response)
                || s.restores()
                || !s.plan().judges(Phase::Response).judges.is_empty()
        });
        let (head, body) = resp.into_parts();
        let bytes = match read_whole(body, MAX_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                ctx.refund();
                return Err(Refusal::Upstream(format!(
                    "reading provider {:?}'s answer failed: {e}",
                    ctx.provider_name
                )));
            }
        };
        // Same protocol, same model name: the answer goes back as the
        // provider sent it, and only the members accounting needs are
        // read (no JSON tree built and written again).
        let same_protocol = matches!(
            (self.api.dialect(), wire),
            (Dialect::OpenAi, Wire::OpenAi) | (Dialect::Anthropic, Wire::Anthropic)
        );
        if same_protocol
            && !via_chat
            && shown == ctx.served
            && self.api != Api::CountTokens
            && guard.is_none()
        {
            if let Some(h) = AnswerHead::read(&bytes) {
                let usage = h.usage.as_ref().and_then(|u| match wire {
                    Wire::Anthropic => u.anthropic(),
                    _ => u.openai(),
                });
                if let Some(usage) = usage {
                    let finish = h
                        .stop_reason
                        .or_else(|| h.choices.into_iter().next().and_then(|c| c.finish_reason));
                    let out =
                        self.settled(bytes, usage, finish, &head.headers, ctx, cache_key, rlog);
                    return Ok((Answer::Whole(out), "ok"));
                }
            }
        }
        // A plain Anthropic call served by an OpenAI-compatible provider:
        // translated as text, no tree (see translate::plain).
        if wire_api == Api::Messages && wire == Wire::OpenAi && guard.is_none() {
            if let Some(plain) = translate::plain::openai_answer_to_anthropic(&bytes, shown) {
                let finish = Some(plain.stop_reason.to_owned());
                let out = self.settled(
                    Bytes::from(plain.body),
                    plain.usage,
                    finish,
                    &head.headers,
                    ctx,
                    cache_key,
                    rlog,
                );
                return Ok((Answer::Whole(out), "ok"));
            }
        }
        let upstream: Value = match provider::parse_answer(wire_api, wire, &bytes) {
            Ok(v) => v,
            Err(e) => {
                ctx.refund();
                return Err(Refusal::Upstream(format!(
                    "provider {:?} answered with invalid JSON: {e}",
                    ctx.provider_name
                )));
            }
        };
        if self.api == Api::CountTokens {
            // A count, not a generation: nothing to account.
            ctx.refund();
            let mut out = json_response(StatusCode::OK, &upstream);
            copy_response_headers(&head.headers, out.headers_mut());
            return Ok((Answer::Whole(out), "ok"));
        }
        let id = format!("chatcmpl-{:016x}", crate::telemetry::trace::random_u64());
        let (body, usage) =
            match provider::response_body(wire_api, wire, &upstream, shown, &id, unix_now()) {
                Ok(x) => x,
                Err(e) => {
                    ctx.refund();
                    return Err(Refusal::Upstream(format!(
                        "provider {:?}'s answer could not be translated: {e}",
                        ctx.provider_name
                    )));
                }
            };
        let finish_reason = body
            .pointer("/choices/0/finish_reason")
            .or_else(|| body.get("stop_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let usage = usage.or_else(|| {
            // Not reported: estimate both sides, marked as estimated.
            let input = usage::estimate_prompt_tokens(request.value());
            let output = usage::estimate_tokens(&answer_text(&body));
            Some(Usage {
                input,
                output,
                estimated: true,
                ..Usage::default()
            })
        });
        let served = cache_key
            .as_ref()
            .map(|_| (ctx.served.clone(), ctx.provider_name.clone()));
        let record = ctx.settle(usage, None, None);
        if let Some(l) = rlog.llm.as_mut() {
            l.usage = usage;
            l.cost_micros = record;
            l.finish_reason = finish_reason;
        }
        let mut body = match via_chat.then_some(request) {
            Some(req) => {
                let id = format!("resp_{:016x}", crate::telemetry::trace::random_u64());
                let mut out = translate::chat_response_to_responses(&body, shown, &id, unix_now())
                    .map_err(|e| {
                        Refusal::Upstream(format!(
                            "the answer could not be given as a response: {e}"
                        ))
                    })?;
                translate::echo_request(&mut out, req.value());
                out
            }
            None => body,
        };
        if let Some(session) = guard {
            // Accounted above: the provider answered, whatever is shown.
            // Judges see the answer after the detectors redacted it.
            self.guard_answer(&mut body, session)?;
            self.judge_answer(&mut body, session).await?;
        }
        let bytes = Bytes::from(crate::gate::api::to_json(&body));
        self.keep(cache_key.as_ref(), &bytes, (usage, record), served);
        let mut out = Response::new(Full::new(bytes).map_err(|e| match e {}).boxed());
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        copy_response_headers(&head.headers, out.headers_mut());
        Ok((Answer::Whole(out), "ok"))
    }

    /// A whole answer whose usage was read without a tree: settled, kept
    /// for the cache, logged, and sent with the provider's request ids.
    #[allow(clippy::too_many_arguments)]
    fn settled(
        &self,
        bytes: Bytes,
        usage: Usage,
        finish_reason: Option<String>,
        provider_headers: &hyper::HeaderMap,
        ctx: Settle,
        cache_key: Option<Slot>,
        rlog: &mut RequestLog,
    ) -> Response<ApiBody> {
        let served = cache_key
            .as_ref()
            .map(|_| (ctx.served.clone(), ctx.provider_name.clone()));
        let cost = ctx.settle(Some(usage), None, None);
        self.keep(cache_key.as_ref(), &bytes, (Some(usage), cost), served);
        if let Some(l) = rlog.llm.as_mut() {
            l.usage = Some(usage);
            l.cost_micros = cost;
            l.finish_reason = finish_reason;
        }
        let mut out = Response::new(Full::new(bytes).map_err(|e| match e {}).boxed());
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        copy_response_headers(provider_headers, out.headers_mut());
        out
    }

    /// A streamed answer: the body translates as bytes arrive and settles
    /// when the stream ends or the client leaves.
    fn stream(
        &self,
        started: Started,
        ctx: Settle,
        keep: Option<Keep>,
    ) -> Response<Box<LlmStream>> {
        let Started {
            head,
            body,
            translator,
            first,
            ended,
            broken,
        } = started;
        let ttft = ctx.started.elapsed();
        let mut out = Response::new(Box::new(LlmStream {
            upstream: body,
            translator,
            settle: Some(ctx),
            // Given by `finish`, which owns the request's log line.
            log: None,
            done: false,
            first: Some(ttft),
            pending: Some(first),
            upstream_ended: ended,
            broken,
            ended: None,
            keep,
        }));
        copy_response_headers(&head.headers, out.headers_mut());
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        out
    }
}

/// One bucket a request takes from before it goes to a provider.
struct Take<'a> {
    /// Index of the limit in the policy.
    limit: usize,
    kind: &'static str,
    bucket: &'a RateLimit,
    cost: u64,
    /// A token bucket (OpenAI's refusal names `tokens`, not `requests`).
    tokens: bool,
}

/// Gives back what a refused request took from the buckets that admitted
/// it: it is not served, so it must not spend them. In the background (a
/// Redis round trip must not hold the refusal).
fn give_back(limiter: &Arc<Limiter>, key: &str, taken: &[(&RateLimit, u64)]) {
    if taken.is_empty() {
        return;
    }
    let limiter = Arc::clone(limiter);
    let key = key.to_owned();
    let taken: Vec<(RateLimit, i64)> = taken
        .iter()
        .map(|(b, cost)| ((*b).clone(), -i64::try_from(*cost).unwrap_or(i64::MAX)))
        .collect();
    tokio::spawn(async move {
        for (bucket, delta) in &taken {
            limiter.adjust("llm", bucket, &key, *delta).await;
        }
    });
}

/// Request headers for a provider, in the order they are written.
type Headers = Vec<(HeaderName, HeaderValue)>;

/// Sets `name` to `value`, replacing what was there.
fn set(headers: &mut Headers, name: HeaderName, value: HeaderValue) {
    headers.retain(|(k, _)| *k != name);
    headers.push((name, value));
}

/// A provider stream that produced its first client bytes.
struct Started {
    head: hyper::http::response::Parts,
    body: UpBody,
    translator: Translator,
    first: Bytes,
    /// The upstream body already ended (a short answer in one read).
    ended: bool,
    /// The stream broke right after the first bytes.
    broken: Option<crate::gate::llm::stream::StreamError>,
}

/// Reads the provider's stream until the translator has bytes for the
/// client; `Err` says why it failed before that.
async fn first_bytes(
    resp: Response<UpBody>,
    mut translator: Translator,
    timeout: Duration,
) -> Result<Started, NoStart> {
    let (head, mut body) = resp.into_parts();
    let read = async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let pushed = translator.push(&data);
                    if !pushed.out.is_empty() {
                        return Ok((Bytes::from(pushed.out), false, pushed.error));
                    }
                    if let Some(e) = pushed.error {
                        return Err(NoStart::from(e));
                    }
                }
                Some(Err(e)) => return Err(NoStart::Failed(format!("reading it failed: {e}"))),
                None => {
                    let out = translator.finish().map_err(NoStart::from)?;
                    if out.is_empty() {
                        return Err(NoStart::Failed("it ended without an event".to_owned()));
                    }
                    return Ok((Bytes::from(out), true, None));
                }
            }
        }
    };
    let (first, ended, broken) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| NoStart::Failed(format!("no event within {} ms", timeout.as_millis())))??;
    Ok(Started {
        head,
        body,
        translator,
        first,
        ended,
        broken,
    })
}

/// Whether the answer came from the cache (`hit`, `miss`, `bypass`).
const CACHE_HEADER: HeaderName = HeaderName::from_static("x-trigate-cache");

/// Why a stream produced nothing for the client.
enum NoStart {
    /// The provider's stream failed: the next provider may do better.
    Failed(String),
    /// A guardrail withheld the answer: no other provider is asked.
    Blocked(String),
}

impl From<crate::gate::llm::stream::StreamError> for NoStart {
    fn from(e: crate::gate::llm::stream::StreamError) -> NoStart {
        match e {
            crate::gate::llm::stream::StreamError::Blocked(m) => NoStart::Blocked(m),
            e => NoStart::Failed(e.to_string()),
        }
    }
}

/// A judge's refusal: its name and reason (the judge's words, not the
/// text judged).
fn judge_refusal(judge: &str, reason: &str, phase: Phase) -> Refusal {
    let what = match phase {
        Phase::Request => "the request was not sent to the model",
        Phase::Response => "the answer was withheld",
    };
    Refusal::Guardrail {
        message: format!("blocked by guardrail judge {judge:?}: {reason}; {what}"),
        outcome: "guardrail_blocked",
    }
}

/// A guardrail's refusal in the gate's terms.
fn guard_refusal(e: CheckError) -> Refusal {
    let outcome = match e {
        CheckError::Blocked(_) | CheckError::Topic { .. } => "guardrail_blocked",
        CheckError::TooLarge { .. } => "guardrail_too_large",
    };
    Refusal::Guardrail {
        message: e.to_string(),
        outcome,
    }
}

/// Prompt tokens, estimated with the tokenizer. Big prompts are counted
/// on the blocking pool: tokenizing costs up to ~0.1 s of CPU, which must
/// not stall the other connections on this worker.
async fn estimate(request: &ClientRequest<'_>, body_bytes: usize) -> Result<u64, Refusal> {
    const INLINE_BYTES: usize = 16 * 1024;
    if body_bytes <= INLINE_BYTES {
        return Ok(usage::estimate_prompt_tokens(request.value()));
    }
    let value = request.value().clone();
    tokio::task::spawn_blocking(move || usage::estimate_prompt_tokens(&value))
        .await
        .map_err(|e| Refusal::InvalidRequest(format!("body: counting its tokens failed: {e}")))
}

/// Why one attempt failed, and what the client gets if it was the last.
struct Failure {
    reason: &'static str,
    refusal: Refusal,
}

/// The provider's address: configured, a literal, the config's `dns.hosts`,
/// or the system resolver.
async fn resolve(p: &ProviderRt, config: &crate::config::Config) -> Result<SocketAddr, String> {
    if let Some(a) = p.cfg.address {
        return Ok(a);
    }
    if let Ok(ip) = p.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, p.port));
    }
    if let Some(ip) = config.dns.hosts.get(&p.host).and_then(|a| a.first()) {
        return Ok(SocketAddr::new(*ip, p.port));
    }
    tokio::net::lookup_host((p.host.as_str(), p.port))
        .await
        .map_err(|e| format!("resolving {} for provider {:?}: {e}", p.host, p.name()))?
        .next()
        .ok_or_else(|| format!("{} has no address (provider {:?})", p.host, p.name()))
}

/// Provider headers worth passing on: request ids and rate-limit hints.
fn copy_response_headers(from: &hyper::HeaderMap, to: &mut hyper::HeaderMap) {
    for (k, v) in from {
        if is_passed_on(k.as_str().as_bytes()) {
            to.insert(k.clone(), v.clone());
        }
    }
}

/// Whether a provider header (its name in any case) is passed on.
fn is_passed_on(name: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    name.eq_ignore_ascii_case(b"request-id")
        || name.eq_ignore_ascii_case(b"x-request-id")
        || starts(b"x-ratelimit-")
        || starts(b"anthropic-ratelimit-")
}

/// A provider's 4xx, in the client's protocol: as it is when the protocols
/// match, else re-shaped with the provider's message.
fn upstream_error(
    dialect: Dialect,
    wire: Wire,
    status: StatusCode,
    body: &[u8],
    message: &str,
) -> Response<ApiBody> {
    let same = matches!(
        (dialect, wire),
        (Dialect::OpenAi, Wire::OpenAi) | (Dialect::Anthropic, Wire::Anthropic)
    );
    let json_body = if same && serde_json::from_slice::<Value>(body).is_ok() {
        Bytes::copy_from_slice(body)
    } else {
        let v = match dialect {
            Dialect::OpenAi => json!({ "error": {
                "message": message, "type": "invalid_request_error", "param": null, "code": null,
            }}),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_error_type(status), "message": message },
            }),
        };
        Bytes::from(v.to_string())
    };
    let mut resp = Response::new(Full::new(json_body).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn read_limited(body: UpBody, max: usize) -> Bytes {
    read_whole(body, max).await.unwrap_or_default()
}

/// A provider's body, whole, up to `max` bytes. An answer that came in one
/// piece (most do) is kept as it came: `Collected::to_bytes` would copy it
/// into a new buffer after gathering its frames in a list.
async fn read_whole<B>(body: B, max: usize) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut more: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
            continue;
        };
        len += data.len();
        if len > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        if let Some(m) = &mut more {
            m.extend_from_slice(&data);
        } else if let Some(f) = first.take() {
            let mut m = bytes::BytesMut::with_capacity(len);
            m.extend_from_slice(&f);
            m.extend_from_slice(&data);
            more = Some(m);
        } else if !data.is_empty() {
            first = Some(data);
        }
    }
    Ok(match more {
        Some(m) => m.freeze(),
        None => first.unwrap_or_default(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer's text, for estimating output tokens when none are reported.
fn answer_text(body: &Value) -> String {
    let mut s = String::new();
    if let Some(t) = body
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
    {
        s.push_str(t);
    }
    if let Some(blocks) = body.get("content").and_then(Value::as_array) {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                s.push_str(t);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response<ApiBody>) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn provider_refusals_keep_their_status_in_the_callers_shape() {
        let openai_body = br#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#;
        // Same protocol: passed on as the provider sent it.
        let r = upstream_error(
            Dialect::OpenAi,
            Wire::OpenAi,
            StatusCode::BAD_REQUEST,
            openai_body,
            "bad temperature",
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_json(r).await["error"]["param"], "temperature");
        // Across protocols: re-shaped with the provider's message.
        let r = upstream_error(
            Dialect::Anthropic,
            Wire::OpenAi,
            StatusCode::NOT_FOUND,
            openai_body,
            "bad temperature",
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let v = body_json(r).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["message"], "bad temperature");
        let r = upstream_error(
            Dialect::OpenAi,
            Wire::Anthropic,
            StatusCode::UNAUTHORIZED,
            b"<html>",
            "no error message",
        );
        let v = body_json(r).await;
        assert_eq!(v["error"]["message"], "no error message");
        assert!(v["error"].get("param").is_some());
    }

    #[test]
    fn anthropic_error_types_follow_the_status() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (422, "invalid_request_error"),
        ] {
            assert_eq!(
                anthropic_error_type(StatusCode::from_u16(status).unwrap()),
                kind
            );
        }
    }

    #[tokio::test]
    async fn whole_bodies_are_read_up_to_their_cap() {
        use http_body_util::StreamBody;
        fn body(pieces: &[&'static str]) -> impl http_body::Body<Data = Bytes, Error = String> {
            let frames: Vec<Result<http_body::Frame<Bytes>, String>> = pieces
                .iter()
                .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
                .chain([Ok(http_body::Frame::trailers(Default::default()))])
                .collect();
            StreamBody::new(futures::stream::iter(frames))
        }
        // One piece is the piece itself, not a copy.
        let one: &'static str = r#"{"id":"x"}"#;
        let got = read_whole(body(&[one]), 100).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr());
        assert_eq!(
            read_whole(body(&["ab", "", "cd", "e"]), 5).await.unwrap(),
            "abcde"
        );
        assert_eq!(read_whole(body(&[]), 5).await.unwrap(), "");
        let e = read_whole(body(&["abc", "def"]), 5).await.unwrap_err();
        assert!(e.contains("larger than 5 bytes"), "{e}");
        let failing = StreamBody::new(futures::stream::iter(vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"ab"))),
            Err("connection reset".to_owned()),
        ]));
        assert_eq!(
            read_whole(failing, 5).await.unwrap_err(),
            "connection reset"
        );
    }

    #[test]
    fn answer_text_reads_both_shapes() {
        let openai = json!({"choices": [{"message": {"content": "hello"}}]});
        assert_eq!(answer_text(&openai), "hello");
        let anthropic = json!({"content": [{"type": "text", "text": "a"}, {"type": "tool_use"}, {"type": "text", "text": "b"}]});
        assert_eq!(answer_text(&anthropic), "ab");
        assert_eq!(answer_text(&json!({})), "");
    }

    #[test]
    fn only_request_ids_and_rate_limit_hints_are_copied() {
        let mut from = hyper::HeaderMap::new();
        for (k, v) in [
            ("x-request-id", "r1"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("anthropic-ratelimit-requests-limit", "5"),
            ("set-cookie", "a=b"),
            ("openai-organization", "org-secret"),
        ] {
            from.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut to = hyper::HeaderMap::new();
        copy_response_headers(&from, &mut to);
        let mut names: Vec<_> = to.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "anthropic-ratelimit-requests-limit",
                "x-ratelimit-remaining-tokens",
                "x-request-id"
            ]
        );
        // The answer's map is made of these only: names as sent, any case.
        for name in [
            &b"X-Request-Id"[..],
            b"request-id",
            b"X-RateLimit-Limit-Requests",
            b"ANTHROPIC-RATELIMIT-TOKENS-RESET",
        ] {
            assert!(is_passed_on(name), "{name:?}");
        }
        for name in [
            &b"x-request"[..],
            b"x-request-ids",
            b"x-ratelimit",
            b"content-type",
            b"set-cookie",
            b"",
        ] {
            assert!(!is_passed_on(name), "{name:?}");
        }
    }
}
