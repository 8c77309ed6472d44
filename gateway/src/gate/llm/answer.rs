//! The body of a streamed answer: upstream bytes in, the client's frames
//! out, and the accounting and log line when it ends, however it ends.
use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame};

use super::{
    account::Settle,
    cache::{Cached, Slot},
    stream::StreamError,
    streaming::Translator,
    usage::Usage,
};
use crate::gate::api::{client::BoxError, h1::outbound::UpBody, RequestLog};

/// The client's stream: upstream bytes in, translated frames out, one
/// upstream chunk at a time. Dropping it (the client left) drops the
/// upstream body, which closes the provider connection: the generation
/// is cancelled, not left running.
pub(crate) struct LlmStream {
    pub(super) upstream: UpBody,
    pub(super) translator: Translator,
    pub(super) settle: Option<Settle>,
    pub(super) log: Option<RequestLog>,
    pub(super) done: bool,
    pub(super) first: Option<Duration>,
    /// The first bytes, read before the answer was committed to.
    pub(super) pending: Option<Bytes>,
    /// The upstream body ended while those were read.
    pub(super) upstream_ended: bool,
    /// The upstream stream broke after the bytes last given out: the
    /// error event comes next.
    pub(super) broken: Option<StreamError>,
    /// How it ended, kept for a transport that holds the log line itself
    /// (see [`LlmStream::end_into`]).
    pub(super) ended: Option<Ended>,
    /// The bytes sent, kept for the answer cache when the stream ends well.
    pub(super) keep: Option<Keep>,
}

/// A streamed answer recorded for the answer cache, up to its entry limit.
pub(crate) struct Keep {
    slot: Slot,
    max: u64,
    buf: Vec<u8>,
    /// Larger than an entry may be: not kept.
    over: bool,
}

impl Keep {
    /// Starts with the first bytes, which the stream sends first.
    pub(super) fn new(slot: Slot, max: u64, first: &[u8]) -> Keep {
        let mut k = Keep {
            slot,
            max,
            buf: Vec::new(),
            over: false,
        };
        k.add(first);
        k
    }

    fn add(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if (self.buf.len() + bytes.len()) as u64 > self.max {
            self.over = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

/// What the end of a stream adds to its request's log line.
pub(super) struct Ended {
    outcome: &'static str,
    usage: Option<Usage>,
    cost: Option<u64>,
    finish_reason: Option<String>,
    ttft: Option<Duration>,
}

impl Ended {
    fn apply(&self, log: &mut RequestLog) {
        log.outcome = self.outcome;
        if let Some(l) = log.llm.as_mut() {
            l.usage = self.usage;
            l.cost_micros = self.cost;
            l.finish_reason.clone_from(&self.finish_reason);
            l.ttft = self.ttft;
        }
    }
}

impl LlmStream {
    /// The error event that ends a stream the provider broke.
    fn broke(&mut self, e: &StreamError) -> Frame<Bytes> {
        let frame = self.translator.error_frame(e);
        if let StreamError::Blocked(reason) = e {
            tracing::info!(%reason, "llm answer withheld by a guardrail; ending the client's stream with an error event");
            self.end("guardrail_blocked");
        } else {
            tracing::warn!(error = %e, "llm stream from the provider broke; ending the client's stream with an error event");
            self.end("upstream_stream_error");
        }
        Frame::data(Bytes::from(frame))
    }

    fn end(&mut self, outcome: &'static str) {
        self.done = true;
        let summary = self.translator.summary();
        if let Some(settle) = self.settle.take() {
            // A stream without usage: the prompt estimate and the text
            // sent, tokenized, marked as estimated.
            let usage = summary.usage.or_else(|| {
                Some(Usage {
                    input: settle.charges.estimated_input,
                    output: self.translator.estimated_output().unwrap_or(0),
                    estimated: true,
                    ..Usage::default()
                })
            });
            // Only an answer that ended well is kept.
            let keep = self
                .keep
                .take()
                .filter(|k| outcome == "ok" && !k.over)
                .map(|k| {
                    (
                        k,
                        std::sync::Arc::clone(&settle.llm),
                        settle.served.clone(),
                        settle.provider_name.clone(),
                    )
                });
            let cost = settle.settle(usage, self.first, Some(Instant::now()));
            if let Some((k, llm, model_served, provider)) = keep {
                if let Some(cache) = llm.cache.as_ref() {
                    cache.put(
                        &k.slot,
                        Cached {
                            body: Bytes::from(k.buf),
                            stream: true,
                            usage,
                            cost_micros: cost,
                            model_served,
                            provider,
                        },
                    );
                }
            }
            let ended = Ended {
                outcome,
                usage,
                cost,
                finish_reason: summary.finish_reason,
                ttft: self.first,
            };
            if let Some(log) = self.log.as_mut() {
                ended.apply(log);
            }
            self.ended = Some(ended);
        }
        // The line is written now, not when the transport drops the body.
        self.log.take();
    }

    /// Ends the stream (as cut by the client if it had not ended) and
    /// writes how it ended into `log`, for a transport that sent the
    /// frames itself and owns the request's log line.
    pub(crate) fn end_into(mut self: Box<Self>, log: &mut RequestLog) {
        if !self.done {
            self.end("client_closed");
        }
        if let Some(ended) = self.ended.take() {
            ended.apply(log);
        }
    }
}

impl Body for LlmStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.pending.take() {
            if let Some(log) = this.log.as_mut() {
                log.bytes_out += first.len() as u64;
            }
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(e) = this.broken.take() {
            return Poll::Ready(Some(Ok(this.broke(&e))));
        }
        if this.upstream_ended && !this.done {
            this.end("ok");
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: nothing to pass on
                    };
                    let pushed = this.translator.push(&data);
                    if pushed.out.is_empty() {
                        match pushed.error {
                            Some(e) => return Poll::Ready(Some(Ok(this.broke(&e)))),
                            None => continue,
                        }
                    }
                    if this.first.is_none() {
                        this.first = this.settle.as_ref().map(|s| s.started.elapsed());
                    }
                    if let Some(log) = this.log.as_mut() {
                        log.bytes_out += pushed.out.len() as u64;
                    }
                    if let Some(k) = this.keep.as_mut() {
                        k.add(&pushed.out);
                    }
                    this.broken = pushed.error;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(pushed.out)))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = crate::gate::llm::stream::StreamError::Upstream {
                        kind: "api_error".into(),
                        message: format!("the provider's stream broke: {e}"),
                    };
                    tracing::warn!(error = %e, "llm stream from the provider broke");
                    let frame = this.translator.error_frame(&e);
                    this.end("upstream_body_error");
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))));
                }
                Poll::Ready(None) => {
                    let out = match this.translator.finish() {
                        Ok(t) => t,
                        Err(e) => return Poll::Ready(Some(Ok(this.broke(&e)))),
                    };
                    if let Some(k) = this.keep.as_mut() {
                        k.add(&out);
                    }
                    this.end("ok");
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }
}

impl Drop for LlmStream {
    fn drop(&mut self) {
        if !self.done {
            // The client went away mid-stream: account what was used so far.
            self.end("client_closed");
        }
    }
}
