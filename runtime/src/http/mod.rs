//! The `http/request` runner: HTTP/1.1 requests over [`Runtime::tcp_connect`], hyper for the
//! protocol, rustls (ring provider) for https.
//!
//! [`HttpRunner::request`] performs a validated [`HttpRequest`](execd_core::protocol::HttpRequest)
//! (redirects, proxies, the `timeoutMs` deadline) and returns the response head with a body
//! the caller pulls chunk by chunk ([`HttpResponse::chunk`]), so it reads from the network only
//! as fast as it can forward; [`HttpResponse::collect`] buffers the whole body instead.
//!
//! [`Runtime::tcp_connect`]: crate::Runtime::tcp_connect

mod connect;
mod error;
mod io;
mod proxy;
mod redirect;
mod runner;

pub use error::HttpError;
pub use io::HyperIo;
pub use proxy::{Proxy, ProxyConfig};
pub use runner::{HttpResponse, HttpRunner};
