//! Modules and publishers in the browser: a publisher trusted and distrusted, a signed module
//! uploaded as a file and retired through the console's forms, each checked through the API
//! and in the audit log; and the refusals — a module whose signature does not verify, a user
//! without `ManageModules` or `TrustPublishers` posting the form the console does not show
//! them, and an upload without the CSRF token (nothing stored, each refusal shown).

use warden_tests::http::{manifest_text, new_key, signed};

use super::Console;

/// `bytes` written to a temporary `.wasm` file the browser can choose.
fn module_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("module file");
    path
}

fn digests(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn trusts_a_publisher_uploads_retires_and_distrusts_through_the_console() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let tmp = tempfile::TempDir::new().expect("temp dir");
    c.sign_in(&s.admin).await;

    // Trust a new publisher by its hex key.
    let key = new_key();
    c.page("/ui/modules").await;
    b.fill("#pub-name", "acme-console").await.expect("name");
    b.fill("#pub-key", &hex::encode(key.verifying_key().as_bytes()))
        .await
        .expect("key");
    b.click("form.trust button[type=submit]")
        .await
        .expect("trust");
    b.wait_until_html("the publisher listed", |h| h.contains("acme-console"))
        .await
        .expect("listed");
    let pubs = s.get("/v1/publishers", &s.admin).await;
    assert!(pubs.text.contains("acme-console"), "{}", pubs.text);

    // Upload the hello module signed by it, as a file.
    let bytes = signed("hello", &manifest_text("hello"), &key);
    let path = module_file(&tmp, "hello.wasm", &bytes);
    let before = digests(&s.get("/v1/modules", &s.admin).await.body);
    b.attach("#m-file", &path).await.expect("choose file");
    b.click("form.upload button[type=submit]")
        .await
        .expect("upload");
    b.wait_for("table.modules").await.expect("back on the list");
    let after = digests(&s.get("/v1/modules", &s.admin).await.body);
    let new: Vec<_> = after.iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "one module uploaded: {after:?}");
    let digest = new[0].clone();
    let html = b.html().await.expect("html");
    assert!(html.contains(&digest), "the list shows it");
    c.browser.screenshot("modules-upload").await.expect("shot");

    // Retire it.
    b.click(&format!(
        "form.retire[action=\"/ui/modules/{digest}/retire\"] button"
    ))
    .await
    .expect("retire");
    b.wait_for("table.modules").await.expect("list");
    let m = s.get(&format!("/v1/modules/{digest}"), &s.admin).await;
    assert_eq!(m.body["retired"], true, "{}", m.text);

    // Distrust the publisher.
    b.click("form.distrust[action=\"/ui/publishers/acme-console/distrust\"] button")
        .await
        .expect("distrust");
    b.wait_for("table.modules").await.expect("list");
    let pubs = s.get("/v1/publishers", &s.admin).await;
    assert!(!pubs.text.contains("acme-console"), "{}", pubs.text);

    for action in [
        "publisher.trust",
        "module.upload",
        "module.retire",
        "publisher.distrust",
    ] {
        let records = s.audit(&format!("action={action}&actor=admin")).await;
        assert!(!records.is_empty(), "{action} audited by the API path");
    }
}

#[tokio::test]
async fn a_module_whose_signature_fails_is_refused_with_the_apis_message() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let key = new_key();
    s.trust("flipped", &key).await;
    let mut bytes = signed("hello", &manifest_text("hello"), &key);
    // One flipped byte in the component, as an attacker patching a signed module would.
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let unsigned_key = new_key();
    let stranger = signed("hello", &manifest_text("hello"), &unsigned_key);
    let before = digests(&s.get("/v1/modules", &s.admin).await.body);
    c.sign_in(&s.admin).await;
    for (name, bytes, shown) in [
        ("flipped.wasm", &bytes, "does not verify"),
        ("stranger.wasm", &stranger, "does not trust"),
    ] {
        c.page("/ui/modules").await;
        b.attach("#m-file", &module_file(&tmp, name, bytes))
            .await
            .expect("file");
        b.click("form.upload button[type=submit]")
            .await
            .expect("upload");
        let html = b
            .wait_until_html("the refusal", |h| h.contains("p class=\"error\""))
            .await
            .expect("refused");
        assert!(
            html.contains(shown),
            "{name}: the API's reason shown: {html}"
        );
    }
    let after = digests(&s.get("/v1/modules", &s.admin).await.body);
    assert_eq!(before, after, "nothing stored");
}

#[tokio::test]
async fn users_without_the_permission_are_refused_uploads_retires_and_trust() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let plain = s.user("plain", &[]).await;
    let sa = s.user("sa", &["super-administrator"]).await;
    let key = new_key();
    s.trust("acme", &key).await;
    let file = module_file(
        &tmp,
        "hello.wasm",
        &signed("hello", &manifest_text("hello"), &key),
    );
    let before = digests(&s.get("/v1/modules", &s.admin).await.body);

    // A plain user: no Modules page, and the upload and retire posts are the API's 403.
    c.sign_in(&plain).await;
    let html = c.page("/ui/modules").await;
    assert!(html.contains("denied by policy"), "the API's 403: {html}");
    assert!(!html.contains("form class=\"upload\""), "no upload form");
    c.page("/ui/").await;
    b.forge_form("/ui/modules", &[], Some("module"), true)
        .await
        .expect("forge");
    b.attach("#forged-file", &file).await.expect("file");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("p class=\"error\""), "refused: {html}");
    assert!(html.contains("denied by policy"), "the API's 403: {html}");
    c.page("/ui/").await;
    b.forge_form(&format!("/ui/modules/{}/retire", c.probe), &[], None, true)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("p class=\"error\""), "refused: {html}");
    let m = s.get(&format!("/v1/modules/{}", c.probe), &s.admin).await;
    assert_eq!(m.body["retired"], false, "not retired: {}", m.text);
    c.sign_out().await;

    // The Super Administrator manages modules but may not trust or distrust a publisher:
    // no such forms, and the forged posts are refused; the publisher stays trusted.
    c.sign_in(&sa).await;
    let html = c.page("/ui/modules").await;
    assert!(html.contains("form class=\"upload\""), "may upload");
    assert!(!html.contains("form class=\"trust\""), "no trust form");
    assert!(
        !html.contains("form class=\"distrust\""),
        "no distrust form"
    );
    b.forge_form("/ui/publishers/acme/distrust", &[], None, true)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("p class=\"error\""), "refused: {html}");
    c.page("/ui/modules").await;
    let other = hex::encode(new_key().verifying_key().as_bytes());
    b.forge_form(
        "/ui/publishers",
        &[("name", "mallory"), ("public_key", &other)],
        None,
        true,
    )
    .await
    .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("p class=\"error\""), "refused: {html}");
    let pubs = s.get("/v1/publishers", &s.admin).await;
    assert!(
        pubs.text.contains("\"acme\""),
        "still trusted: {}",
        pubs.text
    );
    assert!(!pubs.text.contains("mallory"), "not trusted: {}", pubs.text);

    // An upload without the CSRF token, by someone who may upload: refused before the API.
    c.page("/ui/modules").await;
    b.forge_form("/ui/modules", &[], Some("module"), false)
        .await
        .expect("forge");
    b.attach("#forged-file", &file).await.expect("file");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("CSRF"), "refused for its CSRF token: {html}");
    let after = digests(&s.get("/v1/modules", &s.admin).await.body);
    assert_eq!(before, after, "nothing uploaded");
    let refused = s.audit("action=console.refused&actor=sa").await;
    assert!(!refused.is_empty(), "the forged post is audited");
    let denied = s.audit("action=api.TrustPublishers&actor=sa").await;
    assert_eq!(
        denied.len(),
        2,
        "both forged posts audited as denials by the API"
    );
    let denied = s.audit("action=api.ManageModules&actor=plain").await;
    assert!(
        denied.len() >= 2,
        "the plain user's page, upload and retire: {denied:?}"
    );
}
