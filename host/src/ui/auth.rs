//! Who is signed in: the [`Console`] extractor (a page view) and [`Posted`] (a form post).
//!
//! Threat: a request riding on someone's session. [`Console`] exists only for a live session
//! cookie whose API token still exists, is a full token, has not expired, and whose user is
//! active — re-checked on every request, so a revoked token or a disabled user ends the
//! session at once. [`Posted`] also refuses (403) a post whose `Origin` is not this server or
//! whose `Sec-Fetch-Site` is not `same-origin`, and one whose `_csrf` field is not the
//! session's token (constant-time comparison); such a refusal is audited `console.refused`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::UiState;
use super::session::{COOKIE, Session, csrf_matches};
use crate::api::auth::Caller;
use crate::users::TokenKind;

/// Largest form body accepted. Blocks memory exhaustion through form posts (a credential's
/// secret, the largest field, is far smaller).
pub const MAX_FORM: usize = 256 << 10;

/// Longest `Cookie` header considered. Blocks oversized headers reaching the parser.
const MAX_COOKIE_HEADER: usize = 8 << 10;

/// A signed-in request.
#[derive(Clone, Debug)]
pub struct Console {
    pub caller: Caller,
    pub session: Session,
    /// The session id from the cookie (to sign out).
    pub sid: String,
}

/// Why a console request is refused.
#[derive(Debug)]
pub enum Refused {
    /// No live session: to the sign-in page.
    SignIn,
    /// 403 with a reason (CSRF, cross-origin).
    Forbidden(&'static str),
    /// A storage failure: 503, detail in the log.
    Unavailable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => {
                let mut response = Redirect::to("/ui/signin").into_response();
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, super::clear_cookie());
                response
            }
            Refused::Forbidden(why) => {
                (StatusCode::FORBIDDEN, super::layout::bare("Refused", why)).into_response()
            }
            Refused::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                super::layout::bare("Unavailable", "the database is unavailable; retry"),
            )
                .into_response(),
        }
    }
}

/// The session id in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_COOKIE_HEADER)
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

impl FromRequestParts<UiState> for Console {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, ui: &UiState) -> Result<Self, Refused> {
        let sid = session_cookie(&parts.headers).ok_or(Refused::SignIn)?;
        let console = ui.resume(&sid).map_err(|e| {
            tracing::error!(error = %e, "console session lookup failed");
            Refused::Unavailable
        })?;
        let console = console.ok_or(Refused::SignIn)?;
        if let Some(slot) = parts
            .extensions
            .get::<crate::api::request_log::CallerSlot>()
        {
            slot.set(&console.caller.user.name, &console.caller.token.id);
        }
        Ok(console)
    }
}

impl UiState {
    /// Audits a refused form post of a signed-in user (`console.refused`): a forged or
    /// cross-site post is worth knowing about.
    pub(super) async fn audit_refused(
        &self,
        console: &Console,
        refused: &Refused,
    ) -> Result<(), Refused> {
        let Refused::Forbidden(why) = refused else {
            return Ok(());
        };
        let entry = crate::audit::AuditEntry {
            run_id: None,
            actor: console.caller.user.name.clone(),
            action: "console.refused".into(),
            target: None,
            credential: None,
            decision: crate::audit::Decision::Denied {
                reason: (*why).to_string(),
                policy: None,
            },
            outcome: "denied".into(),
            duration_us: 0,
            detail: None,
        };
        self.app.audit.append(entry).await.map_err(|e| {
            tracing::error!(error = %e, "console audit record failed");
            Refused::Unavailable
        })?;
        Ok(())
    }

    /// The signed-in user of session `sid`, re-checked against the token and user stores;
    /// a session whose token or user is no longer good is deleted.
    pub fn resume(&self, sid: &str) -> Result<Option<Console>, anyhow::Error> {
        let now = super::now_ms();
        let Some(session) = self.sessions.get(sid, now)? else {
            return Ok(None);
        };
        let users = &self.app.users;
        let live = users
            .token_info(&session.token_id)?
            .filter(|t| t.kind == TokenKind::Full && !t.is_expired(now) && t.user == session.user);
        let user = users.get_user(&session.user)?.filter(|u| u.is_active());
        let (Some(token), Some(user)) = (live, user) else {
            self.sessions.delete(sid)?;
            return Ok(None);
        };
        let principal = users.principal(&user)?;
        Ok(Some(Console {
            caller: Caller {
                user,
                principal,
                token,
            },
            session,
            sid: sid.to_string(),
        }))
    }
}

/// A form post of a signed-in user, its origin and CSRF token checked.
pub struct Posted {
    pub console: Console,
    pub form: Form,
}

/// A form's fields, in order (a repeated name keeps every value).
#[derive(Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Drop for Form {
    /// Wipes every value (a credential's secret among them) from memory.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (name, value) in &mut self.0 {
            name.zeroize();
            value.zeroize();
        }
    }
}

impl Form {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (a group of checkboxes), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `name`, or empty.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Refuses a post from another site: `Sec-Fetch-Site` (when sent) must be `same-origin`, and
/// `Origin` (when sent) this server's. Under `Referrer-Policy: no-referrer` a browser sends
/// `Origin: null` even for the console's own forms, so `null` passes only beside
/// `Sec-Fetch-Site: same-origin` (which a page cannot forge).
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|site| site != b"same-origin") {
        return Err(Refused::Forbidden("cross-site form posts are refused"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if origin == "null" && fetch_site.is_some() {
            return Ok(());
        }
        let host = text(header::HOST).unwrap_or("");
        let own = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if host.is_empty() || own != Some(host) {
            return Err(Refused::Forbidden("cross-origin form posts are refused"));
        }
    }
    Ok(())
}

/// Reads a urlencoded form body (at most [`MAX_FORM`] bytes).
pub async fn read_form(request: Request) -> Result<Form, Refused> {
    let bytes = axum::body::to_bytes(request.into_body(), MAX_FORM)
        .await
        .map_err(|_| Refused::Forbidden("the form is too large"))?;
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .map(Form)
        .map_err(|_| Refused::Forbidden("the form does not parse"))
}

impl FromRequest<UiState> for Posted {
    type Rejection = Refused;

    async fn from_request(request: Request, ui: &UiState) -> Result<Self, Refused> {
        let (mut parts, body) = request.into_parts();
        let console = Console::from_request_parts(&mut parts, ui).await?;
        let refused = same_origin(&parts.headers).err();
        let (form, refused) = match refused {
            Some(refused) => (Form::default(), Some(refused)),
            None => {
                let form = read_form(Request::from_parts(parts, body)).await?;
                let forged = !csrf_matches(&console.session, form.get("_csrf"));
                let refused = forged.then_some(Refused::Forbidden(
                    "the form's CSRF token is missing or wrong; reload the page",
                ));
                (form, refused)
            }
        };
        if let Some(refused) = refused {
            ui.audit_refused(&console, &refused).await?;
            return Err(refused);
        }
        Ok(Posted { console, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let h = headers(&[("cookie", "a=1; warden_session=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "warden_session=xyz")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("xyz"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "xwarden_session=1")])),
            None
        );
    }

    #[test]
    fn accepts_same_origin_posts_and_posts_without_browser_headers() {
        assert!(same_origin(&headers(&[])).is_ok());
        let h = headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:8443"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_origin(&h).is_ok());
        // What Chromium sends for the console's own form under `no-referrer`.
        let h = headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(same_origin(&h).is_ok());
    }

    #[test]
    fn refuses_cross_origin_and_cross_site_posts() {
        for h in [
            headers(&[("host", "warden:8443"), ("origin", "https://evil.example")]),
            headers(&[("host", "warden:8443"), ("origin", "null")]),
            headers(&[
                ("host", "warden:8443"),
                ("origin", "https://warden:8443.evil"),
            ]),
            headers(&[("origin", "https://warden:8443")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[
                ("host", "warden:8443"),
                ("origin", "https://warden:8443"),
                ("sec-fetch-site", "none"),
            ]),
        ] {
            assert!(
                matches!(same_origin(&h), Err(Refused::Forbidden(_))),
                "{h:?}"
            );
        }
    }
}
