//! `execd fetch`: an HTTP request made by the server's host (`http/request`), like curl: the
//! status line on stderr, the body streamed to stdout.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use execd_core::protocol::{Base64Bytes, HttpHeaderParam, HttpRequestParams, RedirectPolicy};
use execd_runtime::{Client, ClientOptions, DefaultRuntime, Error};
use execd_smol::SmolRuntime;
use execd_tokio::TokioRuntime;

use crate::run::EXIT_EXECD_ERROR;
use crate::RuntimeKind;

/// Exit code for `--fail` on an HTTP status of 400 or more (curl's).
const EXIT_HTTP_ERROR: u8 = 22;

#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// The `http://` or `https://` URL to fetch, from the server's host.
    target: String,
    /// Server URL (`ws://HOST:PORT`). Without it, a local `execd serve --listen stdio` child
    /// is started and used.
    #[arg(long)]
    url: Option<String>,
    /// The method (default GET, or POST with `--data`).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request body; `@FILE` reads it from a local file.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Exit 22 without printing the body when the status is 400 or more.
    #[arg(short = 'f', long)]
    fail: bool,
    /// Return a 3xx as it is instead of following it.
    #[arg(long)]
    no_follow: bool,
    /// Deadline for the whole request (headers and body), in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// The async runtime to run the client on.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Smol)]
    runtime: RuntimeKind,
}

pub(crate) fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    match args.runtime {
        RuntimeKind::Smol => fetch_on::<SmolRuntime>(args),
        RuntimeKind::Tokio => fetch_on::<TokioRuntime>(args),
    }
}

fn fetch_on<R: DefaultRuntime>(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let params = params(&args)?;
    R::block_on(async {
        let client = match &args.url {
            Some(url) => {
                let mut options = ClientOptions::default();
                options.core.client_name = "execd-fetch".to_owned();
                options.core.recovery_window = Duration::from_secs(5);
                Client::<R>::connect_with(url, options)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?
            }
            None => crate::local_stdio_client::<R>().await?,
        };
        let (head, mut body) = match client.http_request_stream(params).await {
            Ok(ok) => ok,
            Err(Error::Rpc(e)) => {
                eprintln!("execd: {}", e.message);
                return Ok(ExitCode::from(EXIT_EXECD_ERROR));
            }
            Err(e) => return Err(e).context("http/request failed"),
        };
        eprintln!("HTTP {}", head.status);
        if args.fail && head.status >= 400 {
            // Dropping the body cancels the request.
            return Ok(ExitCode::from(EXIT_HTTP_ERROR));
        }
        let mut stdout = io::stdout().lock();
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
                        if e.kind() == io::ErrorKind::BrokenPipe {
                            return Ok(ExitCode::from(141));
                        }
                        return Err(e).context("cannot write to stdout");
                    }
                }
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("execd: {e}");
                    return Ok(ExitCode::from(EXIT_EXECD_ERROR));
                }
            }
        }
    })
    .context("cannot start the async runtime")?
}

fn params(args: &FetchArgs) -> anyhow::Result<HttpRequestParams> {
    let body = match args.data.as_deref() {
        None => None,
        Some(data) => Some(match data.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
            None => data.as_bytes().to_vec(),
        }),
    };
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("-H takes `Name: value`, not {h:?}");
        };
        headers.push(HttpHeaderParam {
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            value_env_var: None,
        });
    }
    Ok(HttpRequestParams {
        request_id: "execd-fetch".to_owned(),
        method,
        url: args.target.clone(),
        headers,
        body_base64: body.map(Base64Bytes),
        timeout_ms: args.timeout_ms,
        redirect_policy: args.no_follow.then_some(RedirectPolicy::Stop),
        stream_response: true,
    })
}
