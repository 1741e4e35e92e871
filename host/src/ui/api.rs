//! The console's one way to read or change anything: a request to the API router itself,
//! in-process, as the signed-in user (an [`InProcessCaller`] extension instead of a bearer
//! token). Every page therefore passes exactly the handlers, Cedar checks, visibility filters
//! (the Super Administrator rule, the Password Auditor's resource view), input validation and
//! audit records that the same user meets over the API: the console has no store access of
//! its own besides its sessions.
//!
//! Threat: a console page that shows or does more than the API would let the same user.
//! Limits: replies are read up to [`MAX_REPLY`] bytes. A reply carrying a secret (a token
//! minted for the page that answers the post) is read through [`Api::post_secret`], which
//! keeps the secret out of the parsed reply; the router's own response buffer is not wiped.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;
use zeroize::Zeroizing;

use crate::api::auth::{Caller, InProcessCaller};

/// Largest API reply a page reads. Blocks a page buffering an unbounded reply; pages ask for
/// at most 100 records at a time, well under this.
pub const MAX_REPLY: usize = 32 << 20;

/// The API router the console calls.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// One API reply, its body parsed as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message (its `error.message`), or the status.
    pub fn error_message(&self) -> String {
        match self.body["error"]["message"].as_str() {
            Some(message) => message.to_string(),
            None => self.status.to_string(),
        }
    }

    /// The API's stable error code, if any.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    pub fn new(router: Router) -> Self {
        Self { router }
    }

    /// The raw response of `method uri` as `caller` (the event stream, passed through).
    pub async fn raw(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Response {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(caller, method, uri, "application/json", Body::from(bytes))
            .await
    }

    /// The raw response of `method uri` as `caller`, with `body` of `content_type`.
    pub async fn send(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Body,
    ) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(body);
        let mut request = match request {
            Ok(request) => request,
            Err(_) => {
                let mut bad = Response::new(Body::empty());
                *bad.status_mut() = StatusCode::BAD_REQUEST;
                return bad;
            }
        };
        request
            .extensions_mut()
            .insert(InProcessCaller(caller.clone()));
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// `method uri` as `caller`, its reply read and parsed.
    pub async fn call(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Reply {
        let response = self.raw(caller, method, uri, body).await;
        read_reply(response).await
    }

    /// `POST uri` of `bytes` (as `content_type`) as `caller`, its reply read and parsed.
    pub async fn post_bytes(
        &self,
        caller: &Caller,
        uri: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Reply {
        let body = Body::from(bytes);
        let response = self
            .send(caller, Method::POST, uri, content_type, body)
            .await;
        read_reply(response).await
    }

    /// `POST uri` as `caller` of an API call that answers a secret once (a minted token): the
    /// reply without its `field`, and that field as a secret. The reply's bytes are wiped
    /// once parsed; the secret leaves only through `ExposeSecret`.
    pub async fn post_secret(
        &self,
        caller: &Caller,
        uri: &str,
        body: &Value,
        field: &str,
    ) -> (Reply, Option<SecretString>) {
        let response = self.raw(caller, Method::POST, uri, Some(body)).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match axum::body::to_bytes(response.into_body(), MAX_REPLY).await {
            Ok(bytes) => Zeroizing::new(bytes.to_vec()),
            Err(_) => Zeroizing::new(Vec::new()),
        };
        let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let secret = match body.get_mut(field).map(Value::take) {
            Some(Value::String(secret)) => Some(SecretString::from(secret)),
            _ => None,
        };
        let reply = Reply {
            status,
            headers,
            body,
        };
        (reply, secret)
    }
}

/// `response` read (at most [`MAX_REPLY`] bytes) and parsed.
async fn read_reply(response: Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = match axum::body::to_bytes(response.into_body(), MAX_REPLY).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    Reply {
        status,
        headers,
        body,
    }
}

impl Api {
    pub async fn get(&self, caller: &Caller, uri: &str) -> Reply {
        self.call(caller, Method::GET, uri, None).await
    }

    pub async fn post(&self, caller: &Caller, uri: &str, body: &Value) -> Reply {
        self.call(caller, Method::POST, uri, Some(body)).await
    }
}

/// `s` percent-encoded for a path segment or a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_everything_but_unreserved_characters() {
        assert_eq!(super::enc("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(super::enc("a/b?c=d&e#f g"), "a%2Fb%3Fc%3Dd%26e%23f%20g");
        assert_eq!(super::enc("é"), "%C3%A9");
    }
}
