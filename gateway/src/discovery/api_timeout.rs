//! A bound on how long the Kubernetes API server may take to start
//! answering a request (`kubernetes.request_timeout_ms`). kube's client
//! has a read timeout per socket read and the watcher an idle timeout on an
//! open watch stream, but nothing bounds the wait for the answer to a list
//! or to a watch request as a whole: an API server that is slow (not down)
//! would hold discovery for as long as the read timeout allows, and on a
//! shared HTTP/2 connection other streams' reads keep even that from
//! firing. Only the wait for the response head is bounded; a watch stream
//! then runs for its own `timeoutSeconds`.
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Request, Uri};
use prometheus::IntCounterVec;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request that was not answered in time, as the error the watcher
/// reports (and the daemon logs).
#[derive(Debug, thiserror::Error)]
#[error(
    "the API server did not start answering the {request} {path} within {limit_ms} ms \
     (kubernetes.request_timeout_ms); is it overloaded, or the connection to it stalled?"
)]
pub struct ApiTimeout {
    pub request: &'static str,
    pub path: String,
    pub limit_ms: u64,
}

/// `watch` for a watch request (`watch=true` in the query), else `list`:
/// the two requests discovery makes.
pub fn request_kind(uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| matches!(kv, "watch=true" | "watch=1"));
    if watch {
        "watch"
    } else {
        "list"
    }
}

/// The layer for `kube::client::ClientBuilder::with_layer`.
#[derive(Clone)]
pub struct AnswerTimeout {
    pub limit: Duration,
    /// `trigate_kube_api_timeouts_total{request}`.
    pub timeouts: IntCounterVec,
}

impl<S> tower_layer::Layer<S> for AnswerTimeout {
    type Service = AnswerTimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnswerTimeoutService {
            inner,
            limit: self.limit,
            timeouts: self.timeouts.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AnswerTimeoutService<S> {
    inner: S,
    limit: Duration,
    timeouts: IntCounterVec,
}

impl<S, B> tower_service::Service<Request<B>> for AnswerTimeoutService<S>
where
    S: tower_service::Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let request = request_kind(req.uri());
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), ToString::to_string);
        let limit = self.limit;
        let timeouts = self.timeouts.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => {
                    timeouts.with_label_values(&[request]).inc();
                    Err(Box::new(ApiTimeout {
                        request,
                        path,
                        limit_ms: limit.as_millis() as u64,
                    }) as BoxError)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn watches_are_told_from_lists() {
        let k = |s: &str| request_kind(&s.parse::<Uri>().unwrap());
        assert_eq!(
            k("/api/v1/pods?&fieldSelector=spec.nodeName%3Dn&watch=true&resourceVersion=3"),
            "watch"
        );
        assert_eq!(k("/api/v1/pods?watch=1"), "watch");
        assert_eq!(k("/api/v1/pods?&fieldSelector=spec.nodeName%3Dn"), "list");
        assert_eq!(k("/api/v1/namespaces"), "list");
        assert_eq!(k("/api/v1/pods?watch=false"), "list");
    }

    /// An answer that takes longer than the limit is abandoned with an
    /// error naming the request, and counted; a prompt one passes.
    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_abandoned_and_counted() {
        use tower_service::Service as _;
        let timeouts =
            IntCounterVec::new(Opts::new("t", "t"), &["request"]).expect("a valid metric");
        let layer = AnswerTimeout {
            limit: Duration::from_secs(2),
            timeouts: timeouts.clone(),
        };
        let delay = |d: Duration| {
            tower_layer::Layer::layer(
                &layer,
                tower_service_fn(move |_req: Request<()>| async move {
                    tokio::time::sleep(d).await;
                    Ok::<_, std::io::Error>("answer")
                }),
            )
        };
        let req = |q: &str| Request::get(q).body(()).unwrap();
        let mut slow = delay(Duration::from_secs(3));
        let err = slow
            .call(req("/api/v1/pods?watch=true&resourceVersion=9"))
            .await
            .unwrap_err();
        let t = err.downcast_ref::<ApiTimeout>().expect("an ApiTimeout");
        assert_eq!(t.request, "watch");
        assert_eq!(t.path, "/api/v1/pods?watch=true&resourceVersion=9");
        assert_eq!(t.limit_ms, 2000);
        assert_eq!(timeouts.with_label_values(&["watch"]).get(), 1);
        let mut prompt = delay(Duration::from_secs(1));
        assert_eq!(prompt.call(req("/api/v1/pods")).await.unwrap(), "answer");
        assert_eq!(timeouts.with_label_values(&["list"]).get(), 0);
    }

    /// A service from a closure (tower's `service_fn`, without the crate).
    fn tower_service_fn<F, Fut, R, E>(f: F) -> ServiceFn<F>
    where
        F: FnMut(Request<()>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        ServiceFn(f)
    }

    struct ServiceFn<F>(F);

    impl<F, Fut, R, E> tower_service::Service<Request<()>> for ServiceFn<F>
    where
        F: FnMut(Request<()>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        type Response = R;
        type Error = E;
        type Future = Fut;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Fut {
            (self.0)(req)
        }
    }
}
