use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use execd_core::protocol::{HttpRequest, HttpRequestResult};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tracing::{debug, trace};

use super::connect::{self, Body, Target};
use super::proxy::ProxyConfig;
use super::redirect;
use super::HttpError;
use crate::{Runtime, Sleep};

/// Idle connections kept per target.
const IDLE_PER_TARGET: usize = 4;

/// How long a pooled connection whose last body was read to the end may take to become ready
/// for the next request (its connection task finishing the response) before a new connection
/// is made instead.
const POOLED_READY_WAIT: Duration = Duration::from_secs(1);

/// Idle keep-alive connections per target: only connections whose last response body was read
/// to the end go back here.
type Pool = Mutex<HashMap<Target, Vec<SendRequest<Body>>>>;

/// A connection waiting for its response body to be read to the end before it goes back to
/// the pool (a body dropped early takes the connection with it).
struct Reuse {
    pool: Arc<Pool>,
    target: Target,
    sender: SendRequest<Body>,
}

impl Reuse {
    fn checkin(self) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let senders = pool.entry(self.target).or_default();
        senders.retain(|s| !s.is_closed());
        if senders.len() < IDLE_PER_TARGET {
            senders.push(self.sender);
        }
    }
}

/// Performs `http/request`s: HTTP/1.1 over [`Runtime::tcp_connect`], https with rustls,
/// redirects, proxies and the `timeoutMs` deadline. Keeps idle keep-alive connections per
/// scheme, host, port and proxy for reuse. Cheap to share (`&self` methods; put it in an `Arc`).
pub struct HttpRunner {
    runtime: Arc<dyn Runtime>,
    tls: Arc<rustls::ClientConfig>,
    proxies: ProxyConfig,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for HttpRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRunner")
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

/// A response head with its body still on the connection. Pull the body with
/// [`chunk`](HttpResponse::chunk) or [`collect`](HttpResponse::collect); dropping it closes the
/// connection if the body was not read to the end.
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    body: Incoming,
    deadline: Option<(Pin<Box<dyn Sleep>>, u64)>,
    done: bool,
    reuse: Option<Reuse>,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl HttpRunner {
    /// A runner on `runtime` trusting the webpki roots and the certificates in `extra_ca` (a
    /// PEM bundle), with proxies from this process's environment
    /// ([`ProxyConfig::from_process_env`]).
    ///
    /// # Errors
    /// [`HttpError::CaBundle`] if `extra_ca` holds no parsable certificate.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        extra_ca: Option<&[u8]>,
    ) -> Result<HttpRunner, HttpError> {
        Ok(HttpRunner {
            runtime,
            tls: connect::tls_config(extra_ca)?,
            proxies: ProxyConfig::from_process_env(),
            pool: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Replaces the proxy configuration.
    pub fn with_proxies(mut self, proxies: ProxyConfig) -> HttpRunner {
        self.proxies = proxies;
        self
    }

    /// Sends `request`, following redirects if asked, and returns once the final response head
    /// has arrived. The `timeoutMs` deadline starts now and also bounds the body reads.
    ///
    /// Adds `host` and `accept: */*` unless the request has them, `content-length` for a body,
    /// and `referer` on a redirect (not from https to http), as the Codex exec-server
    /// (reqwest) does; a redirect to another origin drops `authorization`, `cookie`,
    /// `proxy-authorization` and `www-authenticate`.
    ///
    /// # Errors
    /// Connect, TLS, proxy, send, redirect or timeout failure (the `-32603` "http/request
    /// failed: …" cases).
    pub async fn request(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut deadline = request.timeout_ms.map(|ms| {
            let at = self.runtime.now() + Duration::from_millis(ms);
            (self.runtime.sleep_until(at), ms)
        });
        let (head, reuse) = with_deadline(&mut deadline, self.follow(request)).await?;
        Ok(HttpResponse {
            status: head.status(),
            headers: head.headers().clone(),
            body: head.into_body(),
            deadline,
            done: false,
            reuse: Some(reuse),
        })
    }

    /// [`request`](Self::request), then the whole body: the buffered `http/request` result.
    ///
    /// # Errors
    /// As [`request`](Self::request), then [`HttpError::Body`] or [`HttpError::TimedOut`] while
    /// reading the body (the "failed to read http/request response body: …" case).
    pub async fn request_buffered(
        &self,
        request: HttpRequest,
    ) -> Result<HttpRequestResult, HttpError> {
        self.request(request).await?.collect().await
    }

    async fn follow(
        &self,
        request: HttpRequest,
    ) -> Result<(hyper::Response<Incoming>, Reuse), HttpError> {
        let HttpRequest {
            mut method,
            mut url,
            mut headers,
            body,
            follow_redirects,
            ..
        } = request;
        let mut body = Bytes::from(body);
        let mut referer: Option<HeaderValue> = None;
        for redirects in 0.. {
            let (response, reuse) = self
                .send_once(&method, &url, &headers, referer.take(), body.clone())
                .await?;
            if !follow_redirects || !redirect::is_redirect(response.status()) {
                return Ok((response, reuse));
            }
            if redirects == redirect::MAX_REDIRECTS {
                return Err(HttpError::TooManyRedirects);
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            let Some(location) = location else {
                // A 3xx without `Location` is the final response (as in reqwest).
                return Ok((response, reuse));
            };
            let next = redirect::resolve(&url, &location)
                .ok_or_else(|| HttpError::RedirectLocation(location.clone()))?;
            debug!(
                status = response.status().as_u16(),
                "http: following a redirect"
            );
            let (next_method, keep_body) = redirect::method_after(response.status(), &method);
            if !keep_body {
                body = Bytes::new();
                headers.retain(|(name, _)| !redirect::BODY_HEADERS.contains(name));
            }
            if !redirect::same_origin(&url, &next) {
                headers.retain(|(name, _)| !redirect::SENSITIVE_HEADERS.contains(name));
            }
            let downgrade =
                url.scheme() == Some(&Scheme::HTTPS) && next.scheme() != Some(&Scheme::HTTPS);
            if !downgrade {
                referer = HeaderValue::try_from(url.to_string()).ok();
            }
            method = next_method;
            url = next;
            drop(response);
        }
        unreachable!("the loop returns by MAX_REDIRECTS")
    }

    /// One request on a pooled or new connection; the connection comes back with the response,
    /// to return to the pool once the body has been read to the end.
    async fn send_once(
        &self,
        method: &Method,
        url: &Uri,
        headers: &[(header::HeaderName, HeaderValue)],
        referer: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<(hyper::Response<Incoming>, Reuse), HttpError> {
        let https = url.scheme() == Some(&Scheme::HTTPS);
        let raw_host = url.host().unwrap_or_default();
        let host = raw_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw_host);
        let port = url
            .port_u16()
            .unwrap_or(connect::default_port(url.scheme()));
        let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
        let proxy = self.proxies.for_target(&scheme, host);
        let target = Target {
            https,
            host: host.to_owned(),
            port,
            proxy: proxy.map(|p| (p.host.clone(), p.port)),
        };
        let url_text = url.to_string();

        // Origin-form, or absolute-form to an http proxy.
        let request_uri = if proxy.is_some() && !https {
            url.clone()
        } else {
            url.path_and_query().map_or_else(
                || Uri::from_static("/"),
                |pq| {
                    pq.as_str()
                        .parse()
                        .unwrap_or_else(|_| Uri::from_static("/"))
                },
            )
        };
        let mut builder = Request::builder().method(method.clone()).uri(request_uri);
        let has = |name: &header::HeaderName| headers.iter().any(|(n, _)| n == name);
        if let Some(map) = builder.headers_mut() {
            for (name, value) in headers {
                map.append(name.clone(), value.clone());
            }
            if !has(&header::HOST) {
                let authority = match url.port_u16() {
                    Some(p) if p != connect::default_port(url.scheme()) => {
                        format!("{raw_host}:{p}")
                    }
                    _ => raw_host.to_owned(),
                };
                if let Ok(value) = HeaderValue::try_from(authority) {
                    map.insert(header::HOST, value);
                }
            }
            if !has(&header::ACCEPT) {
                map.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            }
            if let Some(referer) = referer {
                map.insert(header::REFERER, referer);
            }
            if let (Some(p), false) = (proxy, https) {
                if let Some(auth) = &p.authorization {
                    map.insert(header::PROXY_AUTHORIZATION, auth.clone());
                }
            }
        }
        let mut request = builder
            .body(Full::new(body))
            .map_err(|e| HttpError::RedirectLocation(e.to_string()))?;

        // A pooled connection the server closed meanwhile hands the request back unsent; then
        // one new connection is tried.
        if let Some(mut sender) = self.checkout(&target).await {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.reuse(target, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(HttpError::Send {
                            url: url_text,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
        let mut sender =
            connect::connect(&self.runtime, &self.tls, &target, proxy, &url_text).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| HttpError::Send {
                url: url_text,
                source,
            })?;
        Ok((response, self.reuse(target, sender)))
    }

    fn reuse(&self, target: Target, sender: SendRequest<Body>) -> Reuse {
        Reuse {
            pool: Arc::clone(&self.pool),
            target,
            sender,
        }
    }

    /// A pooled connection to `target` once it is ready for a request (its last response
    /// finished on its connection task), dropping closed ones; `None` when there is none, or
    /// when it is not ready within [`POOLED_READY_WAIT`].
    async fn checkout(&self, target: &Target) -> Option<SendRequest<Body>> {
        let mut sender = {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            let senders = pool.get_mut(target)?;
            senders.retain(|s| !s.is_closed());
            let ready = senders.iter().position(SendRequest::is_ready);
            senders.swap_remove(ready.unwrap_or(senders.len().checked_sub(1)?))
        };
        let wait = self
            .runtime
            .sleep_until(self.runtime.now() + POOLED_READY_WAIT);
        let ready = futures_lite::future::or(async { sender.ready().await.is_ok() }, async {
            wait.await;
            false
        })
        .await;
        ready.then(|| {
            trace!("http: reusing a connection");
            sender
        })
    }
}

impl HttpResponse {
    /// The `http/request` result for this head, with an empty body (the streamed response).
    pub fn result(&self) -> HttpRequestResult {
        HttpRequestResult::new(self.status.as_u16(), &self.headers, Vec::new())
    }

    /// The next body chunk as read from the network (any size; split with
    /// [`BodyStream`](execd_core::protocol::BodyStream)), or `None` at the end. Trailers are
    /// skipped. After an error or the end, returns `Ok(None)`.
    ///
    /// # Errors
    /// [`HttpError::Body`] (the connection closed early, bad framing) or
    /// [`HttpError::TimedOut`].
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        while !self.done {
            let body = &mut self.body;
            let frame = with_deadline(&mut self.deadline, async {
                body.frame()
                    .await
                    .transpose()
                    .map_err(|source| HttpError::Body { source })
            })
            .await;
            match frame {
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
                Ok(None) => {
                    self.done = true;
                    // Read to the end: the connection may serve the next request.
                    if let Some(reuse) = self.reuse.take() {
                        reuse.checkin();
                    }
                }
                Ok(Some(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            trace!(bytes = data.len(), "http: body chunk");
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Reads the whole body: the buffered `http/request` result.
    ///
    /// # Errors
    /// As [`chunk`](Self::chunk).
    pub async fn collect(mut self) -> Result<HttpRequestResult, HttpError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(HttpRequestResult::new(
            self.status.as_u16(),
            &self.headers,
            body,
        ))
    }
}

/// `future`, or [`HttpError::TimedOut`] if the deadline passes first.
async fn with_deadline<T>(
    deadline: &mut Option<(Pin<Box<dyn Sleep>>, u64)>,
    future: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    let mut future = pin!(future);
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if let Some((sleep, ms)) = deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(HttpError::TimedOut(*ms)));
            }
        }
        Poll::Pending
    })
    .await
}
