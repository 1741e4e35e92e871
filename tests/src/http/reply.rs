//! One HTTP reply as the tests read it (status, headers, raw text, JSON), and typed views of
//! the records the harness itself reads back (a created id, an uploaded digest, a token, a
//! run), so a reply that changes shape fails in the harness with the reply in the message.

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One HTTP reply: status, raw body text, and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// The stable error code of a JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and the error code.
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
    }

    /// Asserts the status; the JSON body.
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{}", self.text);
        &self.body
    }

    /// The body as `T`; fails with the reply text when it does not have that shape.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("reply is not a {}: {e}: {}", type_name::<T>(), self.text))
    }
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>()
}

/// Reads `resp` whole into a [`Reply`].
pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// What a create route answers with: the new record's id (a process, a run, a schedule).
#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

/// What `POST /v1/modules` answers with.
#[derive(Debug, Deserialize)]
pub struct Uploaded {
    pub digest: String,
}

/// What `POST /v1/users/{name}/tokens` answers with (the token is shown this once).
#[derive(Debug, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    #[serde(default)]
    pub kind: Option<String>,
}

/// The fields of a run record the harness polls on (`GET /v1/runs/{id}`).
#[derive(Debug, Deserialize)]
pub struct RunState {
    pub id: String,
    pub state: String,
}
