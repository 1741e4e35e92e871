//! A real headless Chromium for the web console's tests, driven over WebDriver (fantoccini)
//! through a `chromedriver` this harness starts on a free loopback port. Every wait is
//! bounded ([`WAIT`]); the driver and the browser (its process group) are killed on drop.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs both). Tests run as
//! root, hence `--no-sandbox`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The longest any wait for the browser (start, a page, an element) lasts.
pub const WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium session, and its chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn find(candidates: &[&str]) -> Result<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .with_context(|| {
            format!("none of {candidates:?} exists: apt-get install chromium chromium-driver")
        })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×800) with a fresh profile.
    pub async fn start() -> Result<Browser> {
        let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
        let chromium = find(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])?;
        let port = free_port()?;
        // Its own process group, so dropping the browser kills chromedriver and Chromium.
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::TempDir::new()?;
        let mut browser_args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1280,800".into(),
        ];
        browser_args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": browser_args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut guard = DriverGuard(Some(driver));
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!("no WebDriver session within {WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let driver = guard.0.take().context("driver")?;
        Ok(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Opens `url` and returns once the document has loaded.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// The first element matching `css`, waiting for it at most [`WAIT`].
    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for `{css}`"))
    }

    /// The first element matching `css`, if it is on the page now.
    pub async fn find(&self, css: &str) -> Option<Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    /// Every element matching `css`, now.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// The page's current HTML (the DOM, serialized).
    pub async fn html(&self) -> Result<String> {
        Ok(self.client.source().await?)
    }

    /// The text of the page's body.
    pub async fn text(&self) -> Result<String> {
        Ok(self.wait_for("body").await?.text().await?)
    }

    /// Types `text` into the field matching `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let field = self.wait_for(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Chooses the file at `path` in the file input matching `css`.
    pub async fn attach(&self, css: &str, path: &std::path::Path) -> Result<()> {
        let field = self.wait_for(css).await?;
        field
            .send_keys(&path.display().to_string())
            .await
            .context("choosing the file")?;
        Ok(())
    }

    /// Adds to the current page a form posting `fields` to `action` (urlencoded, or
    /// `multipart/form-data` with a file input `#forged-file` named `file_field` when that is
    /// set) and returns without submitting it: what a signed-in user who builds a form the
    /// console does not offer them (in the developer tools) can post. The CSRF token of the
    /// page is included when `with_csrf`.
    pub async fn forge_form(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        file_field: Option<&str>,
        with_csrf: bool,
    ) -> Result<()> {
        let script = r#"
            const [action, fields, fileField, withCsrf] = arguments;
            const form = document.createElement('form');
            form.method = 'post';
            form.action = action;
            form.id = 'forged';
            if (fileField) { form.enctype = 'multipart/form-data'; }
            const csrf = document.querySelector('input[name=_csrf]');
            const all = withCsrf && csrf ? [['_csrf', csrf.value], ...fields] : fields;
            for (const [name, value] of all) {
                const input = document.createElement('input');
                input.type = 'hidden'; input.name = name; input.value = value;
                form.appendChild(input);
            }
            if (fileField) {
                const file = document.createElement('input');
                file.type = 'file'; file.name = fileField; file.id = 'forged-file';
                form.appendChild(file);
            }
            const button = document.createElement('button');
            button.type = 'submit'; button.id = 'forged-submit'; button.textContent = 'forged';
            form.appendChild(button);
            document.body.appendChild(form);
        "#;
        let fields: Vec<[&str; 2]> = fields.iter().map(|(k, v)| [*k, *v]).collect();
        self.client
            .execute(
                script,
                vec![
                    json!(action),
                    json!(fields),
                    json!(file_field),
                    json!(with_csrf),
                ],
            )
            .await
            .context("adding the form")?;
        Ok(())
    }

    /// Submits the form [`Browser::forge_form`] added and returns the HTML of the answer.
    pub async fn submit_forged(&self) -> Result<String> {
        self.click("#forged-submit").await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let html = self.html().await?;
            if !html.contains("forged-submit") {
                return Ok(html);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the forged form's answer never loaded");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for(css).await?.click().await?;
        Ok(())
    }

    /// Waits (at most [`WAIT`]) until `check` of the page's HTML holds.
    pub async fn wait_until_html(
        &self,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let html = self.html().await?;
            if check(&html) {
                return Ok(html);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("waited {WAIT:?} for {what}; the page is:\n{html}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot as `target/console-screenshots/NAME.png` (a test artifact).
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let dir = crate::repo_root().join("target/console-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Kills a chromedriver that never got a session.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
