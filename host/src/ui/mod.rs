//! The web console: server-rendered HTML (maud) under `/ui/`, served by `warden serve`
//! itself, for operators, approvers and auditors.
//!
//! Layout: [`session`] (sessions and CSRF tokens in the store), [`auth`] (the signed-in
//! request extractors), [`api`] (the in-process API client every page reads and acts
//! through), [`layout`] (the page shell, times, tables), [`multipart`] (the module upload
//! form's body), `pages/` (one file per page) and
//! `static/` (htmx, vendored with its licence, and the console's own script and style,
//! embedded in the binary).
//!
//! Threat: the console becoming a second, weaker door. It holds no authorization of its own:
//! every page and action is a call to the API router as the signed-in user ([`api`]), so it
//! shows and does exactly what the API would for that user — the Super Administrator sees no
//! trace of an unshared process, the Password Auditor only the resource audit. Sessions are
//! random ids whose hashes only are stored; every form carries a CSRF token and cross-origin
//! posts are refused; every response has a strict Content-Security-Policy (no inline script
//! or style at all: the console's script is a file) and every value is escaped by maud.

pub mod api;
pub mod auth;
pub mod layout;
pub mod multipart;
mod pages;
pub mod session;

use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::AppState;

/// The Content-Security-Policy of every console response: nothing inline, nothing foreign.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
    base-uri 'none'; object-src 'none'";

/// Whether this process serves over TLS (set by `warden serve`): session cookies are then
/// `Secure`.
static SERVED_OVER_TLS: AtomicBool = AtomicBool::new(false);

/// Marks this process as serving over TLS (its session cookies become `Secure`).
pub fn set_served_over_tls(tls: bool) {
    SERVED_OVER_TLS.store(tls, Ordering::Relaxed);
}

/// What the console's handlers need.
#[derive(Clone)]
pub struct UiState {
    pub app: AppState,
    pub api: api::Api,
    pub sessions: session::SessionStore,
    /// The last verification of the audit chain on this server (shown on the overview).
    verified: std::sync::Arc<std::sync::Mutex<Option<Verified>>>,
}

/// A verification of the audit chain.
#[derive(Clone, Debug)]
pub struct Verified {
    pub ok: bool,
    /// Records verified.
    pub count: u64,
    /// Why it failed.
    pub error: String,
    pub at_ms: u64,
}

impl UiState {
    /// The last verification of the audit chain on this server, if any.
    pub fn last_verified(&self) -> Option<Verified> {
        self.verified.lock().map(|v| v.clone()).unwrap_or(None)
    }

    /// Remembers a verification.
    pub fn remember_verified(&self, verified: Verified) {
        if let Ok(mut slot) = self.verified.lock() {
            *slot = Some(verified);
        }
    }
}

/// `api` (the API router, state applied) with the console mounted under `/ui/` and `/`
/// redirecting there.
pub fn mount(api: Router, state: AppState) -> Router {
    let ui = UiState {
        sessions: session::SessionStore::open(state.users.database()),
        api: api::Api::new(api.clone()),
        app: state,
        verified: Default::default(),
    };
    let console = pages::routes()
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(ui);
    api.merge(console)
        .route("/", get(|| async { Redirect::to("/ui/") }))
}

/// Adds the CSP and the other hardening headers to every console response.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(id: &str, secure: bool) -> HeaderValue {
    let max_age = session::ABSOLUTE_MS / 1000;
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        session::COOKIE
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("warden_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a request arrived over TLS: this process serves TLS, or HTTP/2 said `https`.
pub fn is_tls(uri: &axum::http::Uri) -> bool {
    SERVED_OVER_TLS.load(Ordering::Relaxed) || uri.scheme_str() == Some("https")
}

/// A plain-text response (static assets).
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
