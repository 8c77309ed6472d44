//! A provider's stream turned into the client's, chunk by chunk: whatever
//! the upstream body delivers is parsed (SSE, or AWS event-stream for
//! Bedrock), translated event by event and handed back at once, so the
//! gateway adds no buffering beyond one unfinished event.
use serde_json::Value;

use super::{
    front::Dialect,
    guard::StreamGuard,
    provider::Wire,
    stream::{
        encode, AnthropicToOpenAi, BedrockToOpenAi, ChatToResponses, EventStreamDecoder,
        GeminiToOpenAi, OpenAiToAnthropic, SseEvent, SseParser, StreamError,
    },
    usage::Usage,
};

/// What the stream said about how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
}

/// How a stream is to be told to the client.
pub struct StreamSpec {
    /// The model name the client is shown.
    pub model: String,
    /// Whether that differs from what the upstream says (a same-protocol
    /// stream then has it rewritten).
    pub rewrite_model: bool,
    /// An OpenAI client asked for a usage chunk.
    pub include_usage: bool,
    /// The gateway asked an OpenAI upstream for a usage chunk the client
    /// did not ask for: it is read, not passed on.
    pub added_usage: bool,
    /// Chunk id and creation time where the upstream gives none.
    pub id: String,
    pub created: u64,
    /// A Responses API client served through Chat Completions: its
    /// request (echoed in the response object). The stream is built as
    /// OpenAI chat chunks, then turned into Responses events.
    pub responses: Option<Value>,
}

pub struct Translator {
    kind: Kind,
    dialect: Dialect,
    finish_reason: Option<String>,
    /// What the client was sent, kept (up to [`MAX_RECORDED`]) only from
    /// OpenAI-protocol upstreams, the one kind that may leave usage out
    /// (servers that ignore `include_usage`): the output is then estimated
    /// from it.
    sent: Option<Vec<u8>>,
    /// Chat chunks → Responses events, for a Responses API client.
    responses: Option<Box<(SseParser, ChatToResponses)>>,
    /// Answer guardrails and the prompt's restore, on the client's events
    /// (chat chunks, before they become Responses events).
    guard: Option<Box<StreamGuard>>,
}

/// The most of a stream kept for estimating its output tokens.
const MAX_RECORDED: usize = 1 << 20;

enum Kind {
    /// Same protocol: events pass as they are, except the model name when
    /// the client is shown the requested one, and the usage-only chunk the
    /// gateway asked for on the client's behalf.
    Same {
        parser: SseParser,
        model: Option<String>,
        strip_usage_chunk: bool,
        usage: Option<Usage>,
    },
    AnthropicToOpenAi(SseParser, AnthropicToOpenAi),
    OpenAiToAnthropic(SseParser, Box<OpenAiToAnthropic>),
    /// Gemini and Bedrock translate to OpenAI chunks; an Anthropic client
    /// gets those translated once more.
    Gemini(SseParser, GeminiToOpenAi, Option<Box<Chain>>),
    Bedrock(EventStreamDecoder, BedrockToOpenAi, Option<Box<Chain>>),
}

/// The second hop, OpenAI chunks → Anthropic events.
struct Chain {
    parser: SseParser,
    to_anthropic: OpenAiToAnthropic,
}

impl Chain {
    fn new(model: &str) -> Box<Chain> {
        Box::new(Chain {
            parser: SseParser::default(),
            to_anthropic: OpenAiToAnthropic::new(model),
        })
    }

    fn frames(&mut self, openai_frames: Vec<String>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        for f in openai_frames {
            let events = self
                .parser
                .push(f.as_bytes())
                .map_err(|e| StreamError::Upstream {
                    kind: "api_error".into(),
                    message: e.to_string(),
                })?;
            for ev in events {
                for g in self.to_anthropic.event(&ev)? {
                    out.extend_from_slice(g.as_bytes());
                }
            }
        }
        Ok(())
    }
}

impl Translator {
    pub fn new(client: Dialect, wire: Wire, spec: StreamSpec) -> Translator {
        let StreamSpec {
            model,
            rewrite_model,
            include_usage,
            added_usage,
            id,
            created,
            responses,
        } = spec;
        let responses = responses.map(|req| {
            let mut t = ChatToResponses::new(&model, format!("resp_{id}"), created);
            t.echo_request(&req);
            Box::new((SseParser::default(), t))
        });
        let model = model.as_str();
        let chain = || (client == Dialect::Anthropic).then(|| Chain::new(model));
        // A chained OpenAI hop always carries usage, which the Anthropic
        // side needs for `message_delta`.
        let openai_usage = include_usage || client == Dialect::Anthropic;
        let kind = match (client, wire) {
            (Dialect::OpenAi, Wire::OpenAi) | (Dialect::Anthropic, Wire::Anthropic) => Kind::Same {
                parser: SseParser::default(),
                model: rewrite_model.then(|| model.to_owned()),
                strip_usage_chunk: added_usage,
                usage: None,
            },
            (Dialect::OpenAi, Wire::Anthropic) => Kind::AnthropicToOpenAi(
                SseParser::default(),
                AnthropicToOpenAi::new(model, created, include_usage),
            ),
            (Dialect::Anthropic, Wire::OpenAi) => Kind::OpenAiToAnthropic(
                SseParser::default(),
                Box::new(OpenAiToAnthropic::new(model)),
            ),
            (_, Wire::Gemini) => Kind::Gemini(
                SseParser::default(),
                GeminiToOpenAi::new(model, id, created, openai_usage),
                chain(),
            ),
            (_, Wire::Bedrock) => Kind::Bedrock(
                EventStreamDecoder::default(),
                BedrockToOpenAi::new(model, id, created, openai_usage),
                chain(),
            ),
        };
        Translator {
            kind,
            dialect: client,
            finish_reason: None,
            sent: (wire == Wire::OpenAi).then(Vec::new),
            responses,
            guard: None,
        }
    }

    /// Filters the client's events through `guard`.
    pub fn guarded(mut self, guard: Option<StreamGuard>) -> Translator {
        self.guard = guard.map(Box::new);
        self
    }

    /// The client's bytes for one upstream body chunk, and the error that
    /// broke the stream after them if one did: the events before a broken
    /// one still reach the client, however the upstream's bytes were split
    /// into reads.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut error = self.translate(bytes, &mut out).err();
        self.record(&out);
        if let Some(guard) = self.guard.as_mut() {
            // The events before a broken one still go through the guard;
            // a guard's refusal wins over nothing, not over a break.
            out = match guard.push(&out) {
                Ok(out) => out,
                Err(e) => {
                    error = Some(e);
                    Vec::new()
                }
            };
        }
        match self.as_responses(out, false) {
            Ok(out) => Pushed { out, error },
            Err(e) => Pushed {
                out: Vec::new(),
                error: Some(error.unwrap_or(e)),
            },
        }
    }

    /// For a Responses client: the chat chunks as Responses events.
    fn as_responses(&mut self, chat: Vec<u8>, end: bool) -> Result<Vec<u8>, StreamError> {
        let Some(post) = self.responses.as_mut() else {
            return Ok(chat);
        };
        let (parser, t) = &mut **post;
        let mut out = Vec::new();
        let events = parser.push(&chat).map_err(|e| StreamError::Upstream {
            kind: "api_error".into(),
            message: e.to_string(),
        })?;
        for ev in events {
            extend(&mut out, t.event(&ev)?);
        }
        if end {
            extend(&mut out, t.finish());
        }
        Ok(out)
    }

    fn record(&mut self, out: &[u8]) {
        if let Some(sent) = self.sent.as_mut() {
            let room = MAX_RECORDED.saturating_sub(sent.len());
            sent.extend_from_slice(&out[..out.len().min(room)]);
        }
    }

    /// Output tokens estimated from the text the client was sent (chunk
    /// deltas of either protocol), for a stream that reported no usage.
    pub fn estimated_output(&self) -> Option<u64> {
        let sent = self.sent.as_ref()?;
        let mut parser = SseParser::default();
        let mut text = String::new();
        for ev in parser.push(sent).ok()? {
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let piece = v
                .pointer("/choices/0/delta/content")
                .or_else(|| v.pointer("/delta/text"))
                .and_then(Value::as_str);
            if let Some(t) = piece {
                text.push_str(t);
            }
        }
        Some(super::usage::estimate_tokens(&text))
    }

    fn translate(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let sse_error = |e: super::stream::SseError| StreamError::Upstream {
            kind: "api_error".into(),
            message: e.to_string(),
        };
        match &mut self.kind {
            Kind::Same {
                parser,
                model,
                strip_usage_chunk,
                usage,
            } => {
                for ev in parser.push(bytes).map_err(sse_error)? {
                    same(
                        &ev,
                        self.dialect,
                        model.as_deref(),
                        *strip_usage_chunk,
                        usage,
                        &mut self.finish_reason,
                        out,
                    );
                }
            }
            Kind::AnthropicToOpenAi(parser, t) => {
                for ev in parser.push(bytes).map_err(sse_error)? {
                    note_finish(&ev, &mut self.finish_reason);
                    extend(out, t.event(&ev)?);
                }
            }
            Kind::OpenAiToAnthropic(parser, t) => {
                for ev in parser.push(bytes).map_err(sse_error)? {
                    note_finish(&ev, &mut self.finish_reason);
                    extend(out, t.event(&ev)?);
                }
            }
            Kind::Gemini(parser, t, chain) => {
                for ev in parser.push(bytes).map_err(sse_error)? {
                    let frames = t.event(&ev)?;
                    note_finish_frames(&frames, &mut self.finish_reason);
                    emit(frames, chain.as_deref_mut(), out)?;
                }
            }
            Kind::Bedrock(decoder, t, chain) => {
                let messages = decoder.push(bytes).map_err(|e| StreamError::Upstream {
                    kind: "api_error".into(),
                    message: e.to_string(),
                })?;
                for m in messages {
                    let frames = t.message(&m)?;
                    note_finish_frames(&frames, &mut self.finish_reason);
                    emit(frames, chain.as_deref_mut(), out)?;
                }
            }
        }
        Ok(())
    }

    /// The trailing frames when the upstream body ended.
    pub fn finish(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = self.finish_inner()?;
        self.record(&out);
        if let Some(guard) = self.guard.as_mut() {
            let mut filtered = guard.push(&out)?;
            filtered.extend_from_slice(&guard.finish()?);
            out = filtered;
        }
        self.as_responses(out, true)
    }

    fn finish_inner(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        match &mut self.kind {
            Kind::Same { .. } => {}
            Kind::AnthropicToOpenAi(_, t) => extend(&mut out, t.finish()),
            Kind::OpenAiToAnthropic(_, t) => extend(&mut out, t.finish()),
            Kind::Gemini(_, t, chain) => {
                let frames = t.finish();
                emit(frames, chain.as_deref_mut(), &mut out)?;
                if let Some(c) = chain {
                    extend(&mut out, c.to_anthropic.finish());
                }
            }
            Kind::Bedrock(_, t, chain) => {
                let frames = t.finish();
                emit(frames, chain.as_deref_mut(), &mut out)?;
                if let Some(c) = chain {
                    extend(&mut out, c.to_anthropic.finish());
                }
            }
        }
        Ok(out)
    }

    /// The error frame in the client's protocol.
    pub fn error_frame(&self, e: &StreamError) -> String {
        if let Some(post) = &self.responses {
            return post.1.error_frames(e);
        }
        match self.dialect {
            Dialect::OpenAi => e.openai_frame(),
            Dialect::Anthropic => e.anthropic_frame(),
        }
    }

    pub fn summary(&self) -> StreamSummary {
        let usage = match &self.kind {
            Kind::Same { usage, .. } => *usage,
            Kind::AnthropicToOpenAi(_, t) => t.usage().as_ref().and_then(Usage::from_openai),
            Kind::OpenAiToAnthropic(_, t) => t.usage().as_ref().and_then(Usage::from_anthropic),
            Kind::Gemini(_, t, _) => t.usage().as_ref().and_then(Usage::from_openai),
            Kind::Bedrock(_, t, _) => t.usage().as_ref().and_then(Usage::from_openai),
        };
        StreamSummary {
            usage,
            finish_reason: self.finish_reason.clone(),
        }
    }
}

/// What [`Translator::push`] produced.
pub struct Pushed {
    pub out: Vec<u8>,
    /// The stream broke after `out`.
    pub error: Option<StreamError>,
}

impl Pushed {
    /// The bytes, or the error when there was one.
    pub fn into_result(self) -> Result<Vec<u8>, StreamError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

fn extend(out: &mut Vec<u8>, frames: Vec<String>) {
    for f in frames {
        out.extend_from_slice(f.as_bytes());
    }
}

fn emit(
    frames: Vec<String>,
    chain: Option<&mut Chain>,
    out: &mut Vec<u8>,
) -> Result<(), StreamError> {
    match chain {
        Some(c) => c.frames(frames, out),
        None => {
            extend(out, frames);
            Ok(())
        }
    }
}

/// One event of a same-protocol stream: usage and finish reason read,
/// the model name rewritten if asked, the gateway's own usage chunk
/// dropped. Events are re-encoded, which keeps their meaning (the parser
/// already dropped comments and `retry:`, which LLM APIs do not use).
fn same(
    ev: &SseEvent,
    dialect: Dialect,
    model: Option<&str>,
    strip_usage_chunk: bool,
    usage: &mut Option<Usage>,
    finish: &mut Option<String>,
    out: &mut Vec<u8>,
) {
    // Cheap test first: most events carry neither usage nor a model to
    // rewrite, and need no JSON parse.
    let interesting = model.is_some()
        || ev.data.contains("\"usage\"")
        || ev.data.contains("finish_reason\":\"")
        || ev.data.contains("stop_reason\":\"");
    let parsed = interesting
        .then(|| serde_json::from_str::<Value>(&ev.data).ok())
        .flatten();
    let Some(mut v) = parsed else {
        out.extend_from_slice(encode(ev.event.as_deref(), &ev.data).as_bytes());
        return;
    };
    match dialect {
        Dialect::OpenAi => {
            // Chat chunks carry `usage`; the Responses API's
            // `response.completed` event carries `response.usage`.
            let reported = v
                .get("usage")
                .or_else(|| v.pointer("/response/usage"))
                .filter(|u| !u.is_null());
            if let Some(u) = reported {
                *usage = Usage::from_openai(u);
            }
            if let Some(r) = v
                .pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
            {
                *finish = Some(r.to_owned());
            }
            let usage_only = v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                && v.get("usage").is_some_and(|u| !u.is_null());
            if strip_usage_chunk && usage_only {
                return;
            }
            if strip_usage_chunk {
                if let Some(o) = v.as_object_mut() {
                    // Some servers put usage on every chunk when asked.
                    o.remove("usage");
                }
            }
            if let Some(m) = model {
                if let Some(o) = v.as_object_mut() {
                    if o.contains_key("model") {
                        o.insert("model".into(), m.into());
                    }
                    if let Some(r) = o.get_mut("response").and_then(Value::as_object_mut) {
                        if r.contains_key("model") {
                            r.insert("model".into(), m.into());
                        }
                    }
                }
            }
        }
        Dialect::Anthropic => {
            // Usage is cumulative: message_start has the input side,
            // message_delta the output so far.
            let u = v
                .pointer("/message/usage")
                .or_else(|| v.get("usage"))
                .and_then(Usage::from_anthropic);
            if let Some(u) = u {
                let prev = usage.unwrap_or_default();
                *usage = Some(Usage {
                    input: prev.input.max(u.input),
                    output: prev.output.max(u.output),
                    cached_input: prev.cached_input.max(u.cached_input),
                    reasoning: prev.reasoning.max(u.reasoning),
                    estimated: false,
                });
            }
            if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                *finish = Some(r.to_owned());
            }
            if let (Some(m), Some(msg)) =
                (model, v.get_mut("message").and_then(Value::as_object_mut))
            {
                if msg.contains_key("model") {
                    msg.insert("model".into(), m.into());
                }
            }
        }
    }
    out.extend_from_slice(encode(ev.event.as_deref(), &v.to_string()).as_bytes());
}

/// The finish reason as the upstream said it, for the access log.
fn note_finish(ev: &SseEvent, finish: &mut Option<String>) {
    if !(ev.data.contains("finish_reason\":\"") || ev.data.contains("stop_reason\":\"")) {
        return;
    }
    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
        let r = v
            .pointer("/choices/0/finish_reason")
            .or_else(|| v.pointer("/delta/stop_reason"))
            .and_then(Value::as_str);
        if let Some(r) = r {
            *finish = Some(r.to_owned());
        }
    }
}

fn note_finish_frames(frames: &[String], finish: &mut Option<String>) {
    for f in frames {
        if let Some(data) = f.strip_prefix("data: ") {
            note_finish(
                &SseEvent {
                    event: None,
                    data: data.trim_end().to_owned(),
                    id: None,
                },
                finish,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        model: &str,
        rewrite_model: bool,
        include_usage: bool,
        added_usage: bool,
    ) -> StreamSpec {
        StreamSpec {
            model: model.into(),
            rewrite_model,
            include_usage,
            added_usage,
            id: "x".into(),
            created: 1,
            responses: None,
        }
    }

    fn openai_stream(with_usage: bool) -> String {
        let mut s = String::new();
        for (i, chunk) in [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
        ]
        .iter()
        .enumerate()
        {
            let _ = i;
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        if with_usage {
            s.push_str(r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#);
            s.push_str("\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    fn run(t: &mut Translator, input: &str, step: usize) -> String {
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(step) {
            out.extend(t.push(piece).into_result().unwrap());
        }
        out.extend(t.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn same_protocol_reads_usage_and_strips_the_chunk_the_gateway_asked_for() {
        for step in [1, 7, 10_000] {
            let mut t = Translator::new(
                Dialect::OpenAi,
                Wire::OpenAi,
                spec("gpt-up", false, false, true),
            );
            let out = run(&mut t, &openai_stream(true), step);
            assert!(!out.contains("\"usage\""), "{out}");
            assert!(
                out.contains("\"Hel\"") && out.ends_with("data: [DONE]\n\n"),
                "{out}"
            );
            let s = t.summary();
            let u = s.usage.unwrap();
            assert_eq!((u.input, u.output), (9, 2));
            assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        }
    }

    #[test]
    fn same_protocol_keeps_the_usage_chunk_the_client_asked_for_and_rewrites_the_model() {
        let mut t = Translator::new(
            Dialect::OpenAi,
            Wire::OpenAi,
            spec("asked", true, true, false),
        );
        let out = run(&mut t, &openai_stream(true), 5);
        assert!(out.contains("\"usage\""), "{out}");
        assert!(!out.contains("gpt-up"), "{out}");
        assert_eq!(out.matches("\"model\":\"asked\"").count(), 4, "{out}");
    }

    #[test]
    fn anthropic_passthrough_accumulates_usage() {
        let input = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-up\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut t = Translator::new(
            Dialect::Anthropic,
            Wire::Anthropic,
            spec("shown", true, false, false),
        );
        let out = run(&mut t, input, 3);
        assert!(
            out.contains("\"model\":\"shown\"") && !out.contains("claude-up"),
            "{out}"
        );
        assert!(out.contains("event: message_stop"), "{out}");
        let s = t.summary();
        let u = s.usage.unwrap();
        assert_eq!((u.input, u.output), (12, 7));
        assert_eq!(s.finish_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn openai_upstream_to_anthropic_client() {
        let mut t = Translator::new(
            Dialect::Anthropic,
            Wire::OpenAi,
            spec("claude-asked", false, false, false),
        );
        let out = run(&mut t, &openai_stream(true), 11);
        assert!(out.starts_with("event: message_start"), "{out}");
        assert!(out.contains("text_delta"), "{out}");
        assert!(out.contains("event: message_stop"), "{out}");
        let u = t.summary().usage.unwrap();
        assert_eq!((u.input, u.output), (9, 2));
    }

    #[test]
    fn streams_without_usage_are_estimated_from_what_was_sent() {
        let mut t = Translator::new(
            Dialect::OpenAi,
            Wire::OpenAi,
            spec("m", false, false, false),
        );
        run(&mut t, &openai_stream(false), 9);
        assert_eq!(t.summary().usage, None);
        assert_eq!(
            t.estimated_output(),
            Some(super::super::usage::estimate_tokens("Hello"))
        );
        let mut t = Translator::new(
            Dialect::Anthropic,
            Wire::OpenAi,
            spec("m", false, false, false),
        );
        run(&mut t, &openai_stream(false), 9);
        assert_eq!(
            t.estimated_output(),
            Some(super::super::usage::estimate_tokens("Hello"))
        );
        // Upstreams that always report usage are not recorded.
        let t = Translator::new(
            Dialect::OpenAi,
            Wire::Anthropic,
            spec("m", false, false, false),
        );
        assert_eq!(t.estimated_output(), None);
    }

    #[test]
    fn a_malformed_stream_is_an_error_in_the_clients_protocol() {
        let mut t = Translator::new(
            Dialect::Anthropic,
            Wire::OpenAi,
            spec("m", false, false, false),
        );
        let e = t.push(b"data: {not json\n\n").into_result().unwrap_err();
        let frame = t.error_frame(&e);
        assert!(frame.starts_with("event: error"), "{frame}");
        let mut t = Translator::new(
            Dialect::OpenAi,
            Wire::Anthropic,
            spec("m", false, false, false),
        );
        let e = t
            .push(b"event: message_start\ndata: []\n\n")
            .into_result()
            .unwrap_err();
        assert!(t.error_frame(&e).contains("\"error\""));
    }

    #[test]
    fn events_before_a_broken_one_are_kept_whatever_the_reads() {
        // A good chunk and a broken one arriving in one read: the good one
        // is given out, then the error (as when they arrive apart).
        let good = concat!(
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}"#,
            "\n\n"
        );
        let input = format!("{good}data: {{not json\n\n");
        let mut t = Translator::new(
            Dialect::Anthropic,
            Wire::OpenAi,
            spec("m", false, false, false),
        );
        let pushed = t.push(input.as_bytes());
        let out = String::from_utf8(pushed.out).unwrap();
        assert!(out.contains("hi"), "{out}");
        assert!(pushed.error.is_some());
    }
}
