//! The web console in a real headless Chromium (WebDriver, `warden_tests::browser`) against
//! a real server on a bound port: sign-in and sessions, the start form and live output,
//! approvals with stale-binding refusal, cancel, targets by scan and confirm against a real
//! sshd, credentials whose secret no page ever shows, HTML in output shown as text, CSRF and
//! cross-origin refusals, and the Super Administrator's and Password Auditor's views.
//!
//! Screenshots of the main pages go to `target/console-screenshots/` (not committed).

mod access_actions;
mod admin;
mod approvals;
mod minting;
mod module_actions;
mod pages;
mod run_filters;
mod runs;
mod session;
mod visibility;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use warden_tests::browser::Browser;
use warden_tests::http::{Server, new_key};

/// The `warden` binary (for `warden init` and `warden serve`).
pub const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// A server with the `probe` guest published, and a browser.
pub struct Console {
    pub server: Server,
    pub browser: Browser,
    pub probe: String,
}

impl Console {
    pub async fn start() -> Console {
        let server = Server::start().await;
        let key = new_key();
        server.trust("console-tests", &key).await;
        let probe = server.publish("probe", &key).await;
        let browser = Browser::start().await.expect("headless chromium");
        Console {
            server,
            browser,
            probe,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// Signs in through the sign-in form with `token`; lands on a signed-in page.
    pub async fn sign_in(&self, token: &str) {
        let b = &self.browser;
        b.goto(&self.url("/ui/signin")).await.expect("sign-in page");
        b.fill("#token", token).await.expect("token field");
        b.click("form button[type=submit]").await.expect("submit");
        if b.wait_for("form.signout").await.is_err() {
            panic!(
                "not signed in; the page is:\n{}",
                b.html().await.unwrap_or_default()
            );
        }
    }

    /// Signs out through the header's form.
    pub async fn sign_out(&self) {
        let b = &self.browser;
        b.click("form.signout button").await.expect("sign out");
        b.wait_for("#token")
            .await
            .expect("back on the sign-in page");
    }

    /// Opens `path` and returns its HTML.
    pub async fn page(&self, path: &str) -> String {
        self.browser.goto(&self.url(path)).await.expect("page");
        self.browser.html().await.expect("html")
    }

    /// Creates a process of the probe as `token`'s user; its id.
    pub async fn process(&self, token: &str, body: Value) -> String {
        let mut body = body;
        body["module_digest"] = json!(self.probe);
        let r = self.server.post("/v1/processes", token, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().expect("id").to_string()
    }
}

/// A plain HTTP client that does not follow redirects (to see `Set-Cookie` and `Location`).
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in over plain HTTP with `token`; the session cookie's `name=value` and the whole
/// `Set-Cookie` line.
pub async fn http_sign_in(base: &str, token: &str) -> (String, String) {
    let resp = raw_client()
        .post(format!("{base}/ui/signin"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "signed in");
    set_cookie(resp.headers())
}

/// The session cookie set by a response: (`name=value`, the whole header).
pub fn set_cookie(headers: &HeaderMap) -> (String, String) {
    let line = headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a Set-Cookie header")
        .to_string();
    let pair = line.split(';').next().unwrap_or("").trim().to_string();
    (pair, line)
}

/// `GET path` with the session cookie: status, `Location`, body.
pub async fn http_get(
    base: &str,
    cookie: &str,
    path: &str,
) -> (StatusCode, Option<String>, String) {
    let resp = raw_client()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    let status = resp.status();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, location, resp.text().await.unwrap_or_default())
}

/// The CSRF token in a page's HTML.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    html[at..].split('"').next().unwrap_or("").to_string()
}
