//! Inbound messages decoded once: a method name into a [`Method`], its params into a typed
//! [`Request`] (or [`Notification`]), so no other code matches method strings.

use serde_json::value::RawValue;

use super::{
    method, ClosedNotification, ExitedNotification, HttpBodyDeltaNotification, HttpCancelParams,
    HttpRequestParams, InitializeParams, OutputNotification, ProcessIdParams, ReadParams,
    ResizeParams, SignalParams, StartParams, WriteParams,
};
use crate::rpc::{self, ErrorCode, RpcError};

/// Every request method execd serves, as named on the wire (see [`method`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `initialize`.
    Initialize,
    /// `process/start`.
    ProcessStart,
    /// `process/read`.
    ProcessRead,
    /// `process/write`.
    ProcessWrite,
    /// `process/terminate`.
    ProcessTerminate,
    /// `process/signal`.
    ProcessSignal,
    /// ext: `process/closeStdin`.
    ProcessCloseStdin,
    /// ext: `process/resize`.
    ProcessResize,
    /// ext: `process/list`.
    ProcessList,
    /// `http/request`.
    HttpRequest,
    /// ext: `http/cancel`.
    HttpCancel,
}

impl Method {
    /// The method named `name`; `None` for a method execd does not serve.
    pub fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            method::INITIALIZE => Method::Initialize,
            method::PROCESS_START => Method::ProcessStart,
            method::PROCESS_READ => Method::ProcessRead,
            method::PROCESS_WRITE => Method::ProcessWrite,
            method::PROCESS_TERMINATE => Method::ProcessTerminate,
            method::PROCESS_SIGNAL => Method::ProcessSignal,
            method::PROCESS_CLOSE_STDIN => Method::ProcessCloseStdin,
            method::PROCESS_RESIZE => Method::ProcessResize,
            method::PROCESS_LIST => Method::ProcessList,
            method::HTTP_REQUEST => Method::HttpRequest,
            method::HTTP_CANCEL => Method::HttpCancel,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Initialize => method::INITIALIZE,
            Method::ProcessStart => method::PROCESS_START,
            Method::ProcessRead => method::PROCESS_READ,
            Method::ProcessWrite => method::PROCESS_WRITE,
            Method::ProcessTerminate => method::PROCESS_TERMINATE,
            Method::ProcessSignal => method::PROCESS_SIGNAL,
            Method::ProcessCloseStdin => method::PROCESS_CLOSE_STDIN,
            Method::ProcessResize => method::PROCESS_RESIZE,
            Method::ProcessList => method::PROCESS_LIST,
            Method::HttpRequest => method::HTTP_REQUEST,
            Method::HttpCancel => method::HTTP_CANCEL,
        }
    }

    /// Looks `name` up, or the `-32601 method not found: <name>` error execd answers for an
    /// unknown method in any connection state (checked before the handshake state, as the
    /// reference does).
    ///
    /// # Errors
    /// [`ErrorCode::MethodNotFound`] for a method execd does not serve.
    pub fn parse(name: &str) -> Result<Method, RpcError> {
        Method::from_name(name).ok_or_else(|| {
            RpcError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {name}"),
            )
        })
    }
}

/// A request with its params decoded: what the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `initialize {clientName, resumeSessionId?}`.
    Initialize(InitializeParams),
    /// `process/start`.
    ProcessStart(StartParams),
    /// `process/read`.
    ProcessRead(ReadParams),
    /// `process/write`.
    ProcessWrite(WriteParams),
    /// `process/terminate`.
    ProcessTerminate(ProcessIdParams),
    /// `process/signal`.
    ProcessSignal(SignalParams),
    /// ext: `process/closeStdin`.
    ProcessCloseStdin(ProcessIdParams),
    /// ext: `process/resize`.
    ProcessResize(ResizeParams),
    /// ext: `process/list` (params ignored).
    ProcessList,
    /// `http/request`.
    HttpRequest(HttpRequestParams),
    /// ext: `http/cancel`.
    HttpCancel(HttpCancelParams),
}

impl Request {
    /// Decodes `params` (absent and `null` read as `{}`) for `method`.
    ///
    /// # Errors
    /// `-32602` with serde's message when the params do not fit the method.
    pub fn decode(method: Method, params: Option<&RawValue>) -> Result<Request, RpcError> {
        Ok(match method {
            Method::Initialize => Request::Initialize(rpc::decode_params(params)?),
            Method::ProcessStart => Request::ProcessStart(rpc::decode_params(params)?),
            Method::ProcessRead => Request::ProcessRead(rpc::decode_params(params)?),
            Method::ProcessWrite => Request::ProcessWrite(rpc::decode_params(params)?),
            Method::ProcessTerminate => Request::ProcessTerminate(rpc::decode_params(params)?),
            Method::ProcessSignal => Request::ProcessSignal(rpc::decode_params(params)?),
            Method::ProcessCloseStdin => Request::ProcessCloseStdin(rpc::decode_params(params)?),
            Method::ProcessResize => Request::ProcessResize(rpc::decode_params(params)?),
            Method::ProcessList => Request::ProcessList,
            Method::HttpRequest => Request::HttpRequest(rpc::decode_params(params)?),
            Method::HttpCancel => Request::HttpCancel(rpc::decode_params(params)?),
        })
    }

    /// [`Method::parse`] then [`Request::decode`]: `-32601` for an unknown method, `-32602` for
    /// bad params.
    ///
    /// # Errors
    /// As the two steps.
    pub fn parse(name: &str, params: Option<&RawValue>) -> Result<Request, RpcError> {
        Request::decode(Method::parse(name)?, params)
    }

    /// The method this request is for.
    pub fn method(&self) -> Method {
        match self {
            Request::Initialize(_) => Method::Initialize,
            Request::ProcessStart(_) => Method::ProcessStart,
            Request::ProcessRead(_) => Method::ProcessRead,
            Request::ProcessWrite(_) => Method::ProcessWrite,
            Request::ProcessTerminate(_) => Method::ProcessTerminate,
            Request::ProcessSignal(_) => Method::ProcessSignal,
            Request::ProcessCloseStdin(_) => Method::ProcessCloseStdin,
            Request::ProcessResize(_) => Method::ProcessResize,
            Request::ProcessList => Method::ProcessList,
            Request::HttpRequest(_) => Method::HttpRequest,
            Request::HttpCancel(_) => Method::HttpCancel,
        }
    }
}

/// A notification with its params decoded. Both directions: `initialized` goes to the
/// server, the `process/*` ones to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// `initialized` (params ignored).
    Initialized,
    /// `process/output`.
    ProcessOutput(OutputNotification),
    /// `process/exited`.
    ProcessExited(ExitedNotification),
    /// `process/closed`.
    ProcessClosed(ClosedNotification),
    /// `http/request/bodyDelta`.
    HttpBodyDelta(HttpBodyDeltaNotification),
    /// A method this side does not know, or known with params that do not decode.
    Unknown(String),
}

impl Notification {
    /// Decodes a notification; never fails (see [`Notification::Unknown`]).
    pub fn decode(name: &str, params: Option<&RawValue>) -> Notification {
        let unknown = || Notification::Unknown(name.to_owned());
        match name {
            method::INITIALIZED => Notification::Initialized,
            method::PROCESS_OUTPUT => {
                rpc::decode_params(params).map_or_else(|_| unknown(), Notification::ProcessOutput)
            }
            method::PROCESS_EXITED => {
                rpc::decode_params(params).map_or_else(|_| unknown(), Notification::ProcessExited)
            }
            method::PROCESS_CLOSED => {
                rpc::decode_params(params).map_or_else(|_| unknown(), Notification::ProcessClosed)
            }
            method::HTTP_REQUEST_BODY_DELTA => {
                rpc::decode_params(params).map_or_else(|_| unknown(), Notification::HttpBodyDelta)
            }
            _ => unknown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips_its_name() {
        for m in [
            Method::Initialize,
            Method::ProcessStart,
            Method::ProcessRead,
            Method::ProcessWrite,
            Method::ProcessTerminate,
            Method::ProcessSignal,
            Method::ProcessCloseStdin,
            Method::ProcessResize,
            Method::ProcessList,
            Method::HttpRequest,
            Method::HttpCancel,
        ] {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
    }

    #[test]
    fn unknown_method_is_32601_with_its_name() {
        let e = Request::parse("fs/readFile", None).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::MethodNotFound.code());
        assert_eq!(e.message, "method not found: fs/readFile");
    }

    #[test]
    fn null_params_read_as_empty_object() {
        let raw = RawValue::from_string("null".to_owned()).expect("json");
        assert_eq!(
            Request::parse("process/list", Some(&raw)),
            Ok(Request::ProcessList)
        );
        let e = Request::parse("process/read", Some(&raw)).expect_err("processId missing");
        assert_eq!(e.code, ErrorCode::InvalidParams.code());
    }
}
