//! API tokens: one's own tokens (mint, revoke) and minting another user's enrollment token
//! from the users page — each through `POST /v1/users/{name}/tokens` or
//! `DELETE /v1/tokens/{id}` as the signed-in user, so the API decides who may (oneself, or
//! whoever may manage that user) and audits it (`token.issue`, `token.enroll`,
//! `token.revoke`).
//!
//! Threat: a minted secret that outlives the moment it is handed over. The secret is shown
//! once: only in the page that answers the post (`Cache-Control: no-store`, like every console
//! page), never behind a URL a later request could open again, never in a header, a log line,
//! a redirect or an audit record. It is read from the API reply as a `SecretString` (the
//! reply's bytes wiped once parsed) and written into that page only. Limits: the rendered
//! page's own buffer, and the browser's memory of it, are not wiped.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::api_error;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, page, time, time_opt};

/// Longest lifetime a token minted here may ask for, in days (the API's own cap is 365 days
/// for a full token, 7 for an enrollment token; this only bounds the number parsed).
const MAX_TTL_DAYS: u64 = 365;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/tokens", get(tokens).post(mint_own))
        .route("/ui/tokens/{id}/revoke", post(revoke))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

async fn tokens(State(ui): State<UiState>, console: Console) -> Response {
    let uri = format!("/v1/users/{}/tokens", enc(&console.caller.user.name));
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let current = console.caller.token.id.clone();
    let body = html! {
        p.hint { "Revoking the token this session was opened with signs you out." }
        table.tokens {
            thead { tr { th scope="col" { "Token" } th scope="col" { "Label" } th scope="col" { "Kind" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "" } } }
            tbody {
                @for t in reply.body.as_array().into_iter().flatten() {
                    @let id = text(t, "id");
                    tr {
                        td { code { (id) } @if id == current { " (this session)" } }
                        td { (text(t, "label")) }
                        td { (text(t, "kind")) }
                        td { (time(t["created_ms"].as_u64().unwrap_or(0))) }
                        td { (time_opt(t["expires_ms"].as_u64())) }
                        td {
                            form method="post" action={ "/ui/tokens/" (enc(id)) "/revoke" } {
                                (csrf(&console))
                                button.danger type="submit" aria-label={ "Revoke token " (id) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-mint-own" {
            h2 id="h-mint-own" { "Mint a token" }
            p.hint { "For scripts and the CLI. The token is shown once, on the next page: copy it there." }
            form.mint method="post" action="/ui/tokens" {
                (csrf(&console))
                label for="t-label" { "Label" } input id="t-label" name="label" maxlength="128";
                label for="t-days" { "Lifetime in days (empty: 30)" }
                input id="t-days" name="days" type="number" min="1" max=(MAX_TTL_DAYS);
                button type="submit" { "Mint" }
            }
        }
    };
    page(&ui, &console, "My API tokens", body).into_response()
}

/// The `POST /v1/users/{name}/tokens` body of a mint form (label, lifetime in days).
fn mint_body(posted: &Posted) -> Result<Value, &'static str> {
    let f = &posted.form;
    let mut body = json!({ "label": f.text("label").trim() });
    let days = f.text("days").trim();
    if !days.is_empty() {
        let days: u64 = days
            .parse()
            .ok()
            .filter(|d| (1..=MAX_TTL_DAYS).contains(d))
            .ok_or("The lifetime is a whole number of days, 1 to 365.")?;
        body["ttl_secs"] = json!(days * 86_400);
    }
    Ok(body)
}

async fn mint_own(State(ui): State<UiState>, posted: Posted) -> Response {
    let name = posted.console.caller.user.name.clone();
    mint(&ui, &posted, &name).await
}

/// Mints an enrollment token for the user named in the form (the users page).
pub(super) async fn mint_for_user(State(ui): State<UiState>, posted: Posted) -> Response {
    let name = posted.form.text("user").trim().to_string();
    mint(&ui, &posted, &name).await
}

async fn mint(ui: &UiState, posted: &Posted, name: &str) -> Response {
    let console = &posted.console;
    let body = match mint_body(posted) {
        Ok(body) => body,
        Err(why) => {
            let page = page(ui, console, "Not minted", error(why));
            return (StatusCode::BAD_REQUEST, page).into_response();
        }
    };
    let uri = format!("/v1/users/{}/tokens", enc(name));
    let (reply, secret) = ui
        .api
        .post_secret(&console.caller, &uri, &body, "token")
        .await;
    let Some(secret) = secret.filter(|_| reply.ok()) else {
        return api_error(ui, console, &reply);
    };
    let r = &reply.body;
    let what = html! {
        dl.minted {
            dt { "User" } dd { (text(r, "user")) }
            dt { "Token id" } dd { code { (text(r, "id")) } }
            dt { "Kind" } dd { (text(r, "kind")) }
            dt { "Expires" } dd { (time_opt(r["expires_ms"].as_u64())) }
        }
        @if text(r, "kind") == "enrollment" {
            p.hint { "Hand it to " (text(r, "user")) " out of band: it only mints their own token (" code { "warden token create" } ")." }
        }
    };
    shown_once(ui, console, "Token minted", what, &secret)
}

/// The page that answers a post minting a secret: what was minted, and the secret, once.
pub(super) fn shown_once(
    ui: &UiState,
    console: &Console,
    title: &str,
    what: Markup,
    secret: &SecretString,
) -> Response {
    let body = html! {
        (what)
        section.secret aria-labelledby="h-secret" {
            h2 id="h-secret" { "Copy it now" }
            p.notice role="status" { "This is the only time it is shown: it is not stored in a form Warden can show again." }
            label for="minted-secret" { "Secret" }
            input id="minted-secret" type="text" readonly value=(secret.expose_secret())
                size="72" autocomplete="off" spellcheck="false";
        }
    };
    (StatusCode::CREATED, page(ui, console, title, body)).into_response()
}

async fn revoke(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/tokens/{}", enc(&id));
    let reply = ui
        .api
        .call(&console.caller, Method::DELETE, &uri, None)
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/tokens").into_response()
}
