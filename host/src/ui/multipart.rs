//! File uploads from the console: the [`Uploaded`] extractor, a signed-in `multipart/form-data`
//! post (the module upload form), its origin and CSRF token checked exactly as
//! [`Posted`](super::auth::Posted) checks a urlencoded form, and the small parser it needs.
//!
//! Threat: an upload as a way around the form rules, or a body that exhausts memory. The
//! origin is checked before the body is read; the body is read up to [`MAX_UPLOAD`] bytes, at
//! most [`MAX_PARTS`] parts with headers of at most [`MAX_PART_HEADERS`] bytes each; a post
//! whose `_csrf` part is not the session's token is refused (403, audited `console.refused`)
//! before any file it carries reaches the API. The parser only splits the body: what the
//! file is (a signed module) is the API's to check.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;

use super::UiState;
use super::auth::{Console, Refused, same_origin};
use super::session::csrf_matches;
use crate::runtime::cache::MAX_COMPONENT_BYTES;

/// Largest upload body accepted: the largest module the API takes, plus room for the other
/// fields and the part headers. Blocks memory exhaustion through the upload form.
pub const MAX_UPLOAD: usize = MAX_COMPONENT_BYTES + (64 << 10);

/// Most parts in one upload. Bounds the parser's work on a body of many tiny parts.
pub const MAX_PARTS: usize = 16;

/// Longest header block of one part. A browser's are a few hundred bytes.
pub const MAX_PART_HEADERS: usize = 4 << 10;

/// Longest boundary (RFC 2046 allows 70 characters).
const MAX_BOUNDARY: usize = 70;

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// The file name, for a file input.
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// A signed-in upload, its origin and CSRF token checked.
pub struct Uploaded {
    pub console: Console,
    pub parts: Vec<Part>,
}

impl Uploaded {
    /// The contents of part `name`, if any.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

impl FromRequest<UiState> for Uploaded {
    type Rejection = Refused;

    async fn from_request(request: Request, ui: &UiState) -> Result<Self, Refused> {
        let (mut parts, body) = request.into_parts();
        let console = Console::from_request_parts(&mut parts, ui).await?;
        let checked = match same_origin(&parts.headers) {
            Err(refused) => Err(refused),
            Ok(()) => read(&parts.headers, body)
                .await
                .and_then(|fields| csrf_checked(&console, fields)),
        };
        match checked {
            Ok(fields) => Ok(Uploaded {
                console,
                parts: fields,
            }),
            Err(refused) => {
                ui.audit_refused(&console, &refused).await?;
                Err(refused)
            }
        }
    }
}

async fn read(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Vec<Part>, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary =
        boundary(content_type).ok_or(Refused::Forbidden("the upload is not a multipart form"))?;
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD)
        .await
        .map_err(|_| Refused::Forbidden("the upload is too large"))?;
    parse(&bytes, &boundary).ok_or(Refused::Forbidden("the upload does not parse"))
}

fn csrf_checked(console: &Console, parts: Vec<Part>) -> Result<Vec<Part>, Refused> {
    let token = parts
        .iter()
        .find(|p| p.name == "_csrf" && p.filename.is_none())
        .and_then(|p| std::str::from_utf8(&p.data).ok());
    if !csrf_matches(&console.session, token) {
        return Err(Refused::Forbidden(
            "the form's CSRF token is missing or wrong; reload the page",
        ));
    }
    Ok(parts)
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let value = params.find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    })?;
    let ok = !value.is_empty()
        && value.len() <= MAX_BOUNDARY
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then_some(value)
}

/// The parts of `body` delimited by `boundary` (RFC 7578); `None` for anything malformed or
/// over the limits.
pub fn parse(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter may open the body without the CRLF before it.
    let opening = &delimiter.as_bytes()[2..];
    let mut rest = body.strip_prefix(opening)?;
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, delimiter.as_bytes())?;
        if parts.len() >= MAX_PARTS {
            return None;
        }
        parts.push(part(&rest[..end])?);
        rest = &rest[end + delimiter.len()..];
    }
}

/// One part: its headers, a blank line, its contents.
fn part(bytes: &[u8]) -> Option<Part> {
    let split = find(bytes, b"\r\n\r\n")?;
    if split > MAX_PART_HEADERS {
        return None;
    }
    let headers = std::str::from_utf8(&bytes[..split]).ok()?;
    let disposition = headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value.trim())
    })?;
    let mut params = disposition.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("form-data") {
        return None;
    }
    let (mut name, mut filename) = (None, None);
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "name" => name = Some(value),
            "filename" => filename = Some(value),
            _ => {}
        }
    }
    Some(Part {
        name: name?,
        filename,
        data: bytes[split + 4..].to_vec(),
    })
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            let file = filename
                .map(|f| format!("; filename=\"{f}\""))
                .unwrap_or_default();
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\n").as_bytes(),
            );
            if filename.is_some() {
                out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn reads_the_boundary_of_a_form_data_type_only() {
        let b = boundary("multipart/form-data; boundary=----WebKitFormBoundaryAbc");
        assert_eq!(b.as_deref(), Some("----WebKitFormBoundaryAbc"));
        let b = boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b\"");
        assert_eq!(b.as_deref(), Some("a b"));
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        let long = format!("multipart/form-data; boundary={}", "a".repeat(71));
        assert_eq!(boundary(&long), None);
    }

    #[test]
    fn splits_fields_and_binary_files() {
        // Binary content with CRLFs and a near-boundary inside stays whole.
        let wasm: &[u8] = b"\0asm\r\n--XY\r\n\xff\r\n";
        let parts = parse(
            &body(&[
                ("_csrf", None, &b"tok"[..]),
                ("module", Some("m.wasm"), wasm),
            ]),
            "XyZ",
        )
        .expect("parses");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "_csrf");
        assert_eq!(parts[0].data, b"tok".to_vec());
        assert_eq!(parts[1].filename.as_deref(), Some("m.wasm"));
        assert_eq!(parts[1].data, wasm.to_vec());
    }

    #[test]
    fn refuses_malformed_and_oversized_bodies() {
        let good = body(&[("a", None, &b"1"[..])]);
        assert!(parse(&good, "XyZ").is_some());
        assert_eq!(parse(&good, "Other"), None, "wrong boundary");
        assert_eq!(parse(&good[..good.len() - 9], "XyZ"), None, "no closing");
        let no_name = b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--";
        assert_eq!(parse(no_name, "XyZ"), None);
        let no_disposition = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--";
        assert_eq!(parse(no_disposition, "XyZ"), None);
        let many: Vec<(&str, Option<&str>, &[u8])> = vec![("a", None, &b"1"[..]); MAX_PARTS + 1];
        assert_eq!(parse(&body(&many), "XyZ"), None, "too many parts");
        let header = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX: {}\r\n\r\n1\r\n--XyZ--",
            "h".repeat(MAX_PART_HEADERS)
        );
        assert_eq!(parse(header.as_bytes(), "XyZ"), None, "headers too long");
    }
}
