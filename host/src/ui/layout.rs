//! The page shell (head, navigation, sign-out form) and the small pieces every page uses:
//! times, the CSRF field, notices, state badges.
//!
//! Everything here is maud markup, so every value is escaped; nothing is inline script or
//! style (the CSP forbids both): the console's script and style are the files under
//! `static/`.

use maud::{DOCTYPE, Markup, html};

use super::UiState;
use super::auth::Console;
use crate::policy::{Action, Resource};

/// Where a link in the navigation leads, and who sees it.
struct NavItem {
    href: &'static str,
    label: &'static str,
}

impl UiState {
    /// Whether the signed-in user may `action` on the server as a whole, asked silently of
    /// the same policies (only to choose which links to show; each page asks the API).
    pub fn may(&self, console: &Console, action: Action) -> bool {
        self.app
            .policy
            .authorize(&console.caller.principal, action, Resource::System)
            .allowed
    }
}

/// Whether the user holds only the Password Auditor role: their console is the resource
/// audit and nothing else.
pub fn auditor_only(console: &Console) -> bool {
    let roles = &console.caller.user.roles;
    !roles.is_empty() && roles.iter().all(|r| r == "password-auditor")
}

fn nav(ui: &UiState, console: &Console) -> Vec<NavItem> {
    let mut items = Vec::new();
    let item = |href, label| NavItem { href, label };
    if !auditor_only(console) {
        items.push(item("/ui/", "Overview"));
        items.push(item("/ui/runs", "Runs"));
        items.push(item("/ui/processes", "Processes"));
        items.push(item("/ui/approvals", "Approvals"));
    }
    if ui.may(console, Action::ViewAudit) {
        items.push(item("/ui/audit", "Audit"));
    }
    if ui.may(console, Action::ViewResourceAudit) {
        items.push(item("/ui/audit/resources", "Resource audit"));
    }
    if ui.may(console, Action::ManageCredentials) {
        items.push(item("/ui/credentials", "Credentials"));
    }
    if ui.may(console, Action::ManageTargets) {
        items.push(item("/ui/targets", "Targets"));
        items.push(item("/ui/bridges", "Bridges"));
    }
    if ui.may(console, Action::ManageProcess) || ui.may(console, Action::ManageModules) {
        items.push(item("/ui/modules", "Modules"));
    }
    if ui.may(console, Action::ManageUsers) {
        items.push(item("/ui/users", "Users"));
        items.push(item("/ui/roles", "Roles"));
    }
    items
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject its indicator <style> (the CSP refuses inline style).
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · Warden" }
            link rel="stylesheet" href="/ui/static/app.css";
            script src="/ui/static/htmx.min.js" defer {}
            script src="/ui/static/app.js" defer {}
        }
    }
}

/// A full page for a signed-in user: navigation, `title`, `body`.
pub fn page(ui: &UiState, console: &Console, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/ui/" { "Warden" }
                    nav aria-label="main" {
                        ul {
                            @for item in nav(ui, console) {
                                li { a href=(item.href) { (item.label) } }
                            }
                        }
                    }
                    form.signout method="post" action="/ui/signout" {
                        (csrf(console))
                        a.who href="/ui/tokens" title="My API tokens" { (console.caller.user.name) }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in, refusals).
pub fn bare(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" {
                    h1 { (title) }
                    p.error role="alert" { (message) }
                    p { a href="/ui/" { "Back to the console" } }
                }
            }
        }
    }
}

/// The hidden CSRF field of every form.
pub fn csrf(console: &Console) -> Markup {
    html! { input type="hidden" name="_csrf" value=(console.session.csrf); }
}

/// A time: UTC in the markup and on hover; `app.js` shows it in the viewer's time zone.
pub fn time(ms: u64) -> Markup {
    let Some(t) = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
    else {
        return html! { "—" };
    };
    let iso = t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(iso) title=(utc) { (utc) } }
}

/// An optional time.
pub fn time_opt(ms: Option<u64>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { "—" },
    }
}

/// An error message from the API (or the console), as an alert.
pub fn error(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

/// A success message.
pub fn notice(message: &str) -> Markup {
    html! { p.notice role="status" { (message) } }
}

/// A run state as a badge.
pub fn state(state: &str) -> Markup {
    html! { span class={ "state state-" (state) } { (state) } }
}
