//! The console's routes, one file per page; sign-in, sign-out and the static files here.
//!
//! Threat: sign-in as a way around the API's token rules. Only a full API token of an active
//! user opens a session (an enrollment token is refused, as the API refuses it everywhere
//! but minting one's own token); the session lives no longer than that token. Sign-in and
//! sign-out are audited (`console.signin`, `console.signout`), as is a sign-in with an
//! expired token (`token.expired`).

mod admin;
mod approvals;
mod audit;
mod bridges;
mod credentials;
mod modules;
mod overview;
mod process_admin;
mod processes;
mod roles;
mod runs;
mod steps;
mod targets;
mod tokens;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use super::auth::{Console, Posted, Refused, read_form, same_origin, session_cookie};
use super::{UiState, asset, clear_cookie, is_tls, now_ms};
use crate::audit::{AuditEntry, Decision};
use crate::users::{Authenticated, TokenKind};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview::show))
        .route("/ui/static/{file}", get(static_file))
        .route("/ui/signin", get(signin_page).post(signin))
        .route("/ui/signout", post(signout))
        .merge(runs::routes())
        .merge(processes::routes())
        .merge(approvals::routes())
        .merge(audit::routes())
        .merge(credentials::routes())
        .merge(targets::routes())
        .merge(admin::routes())
        .merge(modules::routes())
        .merge(tokens::routes())
        .merge(bridges::routes())
        .merge(roles::routes())
        .merge(process_admin::routes())
}

async fn static_file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "htmx.min.js" => asset(
            "text/javascript; charset=utf-8",
            include_bytes!("../static/htmx.min.js"),
        ),
        "htmx.LICENSE" => asset(
            "text/plain; charset=utf-8",
            include_bytes!("../static/htmx.LICENSE"),
        ),
        "app.js" => asset(
            "text/javascript; charset=utf-8",
            include_bytes!("../static/app.js"),
        ),
        "app.css" => asset(
            "text/css; charset=utf-8",
            include_bytes!("../static/app.css"),
        ),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn signin_form(message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Warden" }
                link rel="stylesheet" href="/ui/static/app.css";
            }
            body {
                main id="main" class="signin" {
                    h1 { "Sign in to Warden" }
                    @if let Some(message) = message {
                        p.error role="alert" { (message) }
                    }
                    form method="post" action="/ui/signin" {
                        label for="token" { "API token" }
                        input id="token" name="token" type="password" autocomplete="off"
                            required placeholder="wdn_…" autofocus;
                        p.hint { "Mint one with " code { "warden token create" } "; the session lasts no longer than the token." }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

async fn signin_page(State(ui): State<UiState>, request: Request) -> Response {
    // Already signed in: straight to the overview.
    if let Some(sid) = session_cookie(request.headers())
        && let Ok(Some(_)) = ui.resume(&sid)
    {
        return Redirect::to("/ui/").into_response();
    }
    signin_form(None).into_response()
}

/// Exchanges an API token for a session.
async fn signin(State(ui): State<UiState>, request: Request) -> Result<Response, Refused> {
    same_origin(request.headers())?;
    let secure = is_tls(request.uri());
    let form = read_form(request).await?;
    let refused = |message: &str| (StatusCode::UNAUTHORIZED, signin_form(Some(message)));
    let token = form.text("token").trim();
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "console sign-in failed");
        Refused::Unavailable
    };
    let (user, token) = match ui.app.users.authenticate_token(token) {
        Ok(Authenticated::Valid { user, token }) => (user, token),
        Ok(Authenticated::Expired(token)) => {
            audit(
                &ui,
                &token.user,
                "token.expired",
                false,
                format!("token {} expired", token.id),
            )
            .await?;
            return Ok(refused("This token has expired; mint a new one.").into_response());
        }
        Ok(Authenticated::Invalid) => {
            return Ok(refused("This token is not valid.").into_response());
        }
        Err(e) => return Err(unavailable(&e)),
    };
    if token.kind != TokenKind::Full {
        return Ok(refused(
            "An enrollment token only mints your own token: run `warden token create` with it first.",
        )
        .into_response());
    }
    let opened = ui
        .sessions
        .create(&user.name, &token.id, now_ms())
        .map_err(|e| unavailable(&e))?;
    audit(
        &ui,
        &user.name,
        "console.signin",
        true,
        format!("console session opened with token {}", token.id),
    )
    .await?;
    let mut response = Redirect::to("/ui/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        super::session_cookie(&opened.id, secure),
    );
    Ok(response)
}

/// Ends the session.
async fn signout(State(ui): State<UiState>, posted: Posted) -> Result<Response, Refused> {
    let Console { caller, sid, .. } = posted.console;
    ui.sessions.delete(&sid).map_err(|e| {
        tracing::error!(error = %e, "console sign-out failed");
        Refused::Unavailable
    })?;
    audit(
        &ui,
        &caller.user.name,
        "console.signout",
        true,
        format!("console session of token {} closed", caller.token.id),
    )
    .await?;
    let mut response = Redirect::to("/ui/signin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

async fn audit(
    ui: &UiState,
    actor: &str,
    action: &str,
    allowed: bool,
    detail: String,
) -> Result<(), Refused> {
    let decision = match allowed {
        true => Decision::Allowed,
        false => Decision::Denied {
            reason: detail.clone(),
            policy: None,
        },
    };
    ui.app
        .audit
        .append(AuditEntry {
            run_id: None,
            actor: actor.to_string(),
            action: action.to_string(),
            target: None,
            credential: None,
            decision,
            outcome: if allowed { "ok" } else { "denied" }.into(),
            duration_us: 0,
            detail: Some(detail),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "console audit record failed");
            Refused::Unavailable
        })?;
    Ok(())
}

/// A page's answer: its markup, or an API refusal shown as a page with the API's status.
pub(super) fn api_error(ui: &UiState, console: &Console, reply: &super::api::Reply) -> Response {
    // A 404 says nothing of what was asked for (an unshared process's run is a 404 too).
    let message = match reply.status {
        StatusCode::NOT_FOUND => "Not found, or not visible to you.".to_string(),
        _ => reply.error_message(),
    };
    let body = super::layout::error(&message);
    (
        reply.status,
        super::layout::page(ui, console, "Not available", body),
    )
        .into_response()
}
