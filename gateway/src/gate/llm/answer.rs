//! The body of a streamed answer: upstream bytes in, the client's frames
//! out, and the accounting and log line when it ends, however it ends.
use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;

use super::{account::Settle, streaming::Translator, usage::Usage};
use crate::gate::api::{client::BoxError, RequestLog};

/// The client's stream: upstream bytes in, translated frames out, one
/// upstream chunk at a time. Dropping it (the client left) drops the
/// upstream body, which closes the provider connection: the generation
/// is cancelled, not left running.
pub(super) struct LlmStream {
    pub(super) upstream: Incoming,
    pub(super) translator: Translator,
    pub(super) settle: Option<Settle>,
    pub(super) log: Option<RequestLog>,
    pub(super) done: bool,
    pub(super) first: Option<Duration>,
    /// The first bytes, read before the answer was committed to.
    pub(super) pending: Option<Bytes>,
    /// The upstream body ended while those were read.
    pub(super) upstream_ended: bool,
}

impl LlmStream {
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
            let cost = settle.settle(usage, self.first, Some(Instant::now()));
            if let Some(log) = self.log.as_mut() {
                log.outcome = outcome;
                if let Some(l) = log.llm.as_mut() {
                    l.usage = usage;
                    l.cost_micros = cost;
                    l.finish_reason = summary.finish_reason;
                    l.ttft = self.first;
                }
            }
        }
        // The line is written now, not when hyper drops the body.
        self.log.take();
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
                    match this.translator.push(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => {
                            if this.first.is_none() {
                                this.first = this.settle.as_ref().map(|s| s.started.elapsed());
                            }
                            if let Some(log) = this.log.as_mut() {
                                log.bytes_out += out.len() as u64;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "llm stream from the provider broke; ending the client's stream with an error event");
                            let frame = this.translator.error_frame(&e);
                            this.end("upstream_stream_error");
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))));
                        }
                    }
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
                    let tail = this.translator.finish();
                    let out = match tail {
                        Ok(t) => t,
                        Err(e) => this.translator.error_frame(&e).into_bytes(),
                    };
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
