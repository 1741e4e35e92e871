//! Running one command on an open SSH channel: stdin, capped output, timeout, and sudo.
//!
//! Threat: the sudo password leaking on the target. It never goes into the command line
//! (visible in `/proc/*/cmdline` to every local user) or the environment. The command runs as
//! `/usr/bin/sudo -S -p '<nonce>' -- /bin/sh -c '<script>'` (absolute paths, so a `sudo` on
//! the account's `PATH` or a shell function named `sudo` is not what runs); the host writes the password to the channel's
//! stdin only after sudo's stderr shows the random prompt `<nonce>`, i.e. only when sudo is
//! actually reading a password. Without that gate, a sudo that does not ask (NOPASSWD rule,
//! cached timestamp) would hand the password to the command as its stdin. The script starts
//! by printing a second random marker to stderr; the request's own stdin is sent only after
//! that marker, so it can never be consumed by sudo as a password attempt. A second prompt
//! means the password was rejected: the call fails with `AuthFailed` (locale-independent) and
//! the channel is closed. Both markers are removed from stderr.
//!
//! With a key credential there is no password: `sudo -n` is used, which fails unless a
//! NOPASSWD rule allows the command; its error message is returned as ordinary output.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::future::OptionFuture;
use rand::Rng;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use secrecy::ExposeSecret;
use tokio::time::{Instant, timeout, timeout_at};
use zeroize::Zeroizing;

use super::{ExecRequest, ExecResult, SshAuth, SshCredential, SshError};

/// Longest command accepted. Shell quoting can grow it 4x and OpenSSH refuses channel
/// requests over 256 KiB; also bounds what a guest can make the host send.
pub const MAX_COMMAND_LEN: usize = 32 * 1024;

/// Largest stdin accepted per call. Bounds host memory held for a guest-supplied buffer.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

/// Largest per-stream output cap a caller may request. Bounds host memory per call against
/// a target that prints without end.
pub const MAX_OUTPUT_CAP: usize = 64 * 1024 * 1024;

/// Stderr bytes held back while waiting for sudo's markers. Only the last few bytes (a
/// marker's length) are held; this bounds a pathological sudo lecture.
const MAX_GATE_PENDING: usize = 64 * 1024;

/// Time allowed for the best-effort signal/EOF/close after a timeout or failure.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// The command line sent to the server, and the sudo gate if any.
pub(crate) struct Plan {
    pub(crate) wire: String,
    gate: Option<SudoGate>,
    password_line: Option<Zeroizing<Vec<u8>>>,
}

/// Checks a request against the caps and builds the command line.
pub(crate) fn plan(req: &ExecRequest, cred: &SshCredential) -> Result<Plan, SshError> {
    validate(req)?;
    if !req.sudo {
        return Ok(Plan {
            wire: req.command.clone(),
            gate: None,
            password_line: None,
        });
    }
    let gate = SudoGate::new();
    let script = format!(
        "printf %s {} >&2\n{}",
        shell_quote(&gate.ready_str()),
        req.command
    );
    let (wire, password_line) = match &cred.auth {
        SshAuth::Password(password) => {
            let mut line = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
            line.push(b'\n');
            let wire = format!(
                "/usr/bin/sudo -S -p {} -- /bin/sh -c {}",
                shell_quote(&gate.prompt_str()),
                shell_quote(&script)
            );
            (wire, Some(line))
        }
        // Absolute paths: the login shell may be one whose start-up the account shaped.
        SshAuth::PrivateKey(_) => (
            format!("/usr/bin/sudo -n -- /bin/sh -c {}", shell_quote(&script)),
            None,
        ),
    };
    Ok(Plan {
        wire,
        gate: Some(gate),
        password_line,
    })
}

fn validate(req: &ExecRequest) -> Result<(), SshError> {
    let bad = |m: String| Err(SshError::InvalidArgument(m));
    if req.command.trim().is_empty() {
        return bad("command is empty".into());
    }
    if req.command.len() > MAX_COMMAND_LEN {
        return bad(format!("command is longer than {MAX_COMMAND_LEN} bytes"));
    }
    if req.command.contains('\0') {
        return bad("command contains a NUL byte".into());
    }
    if req
        .stdin
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STDIN_BYTES)
    {
        return bad(format!("stdin is larger than {MAX_STDIN_BYTES} bytes"));
    }
    if req.output_cap > MAX_OUTPUT_CAP {
        return bad(format!("output cap is larger than {MAX_OUTPUT_CAP} bytes"));
    }
    Ok(())
}

/// Single-quotes `s` for a POSIX shell: `'` becomes `'\''`, nothing else is special.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a planned command on a freshly opened channel until it closes or `deadline`.
pub(crate) async fn run(
    channel: russh::Channel<Msg>,
    plan: Plan,
    req: &ExecRequest,
    deadline: Instant,
) -> Result<ExecResult, SshError> {
    let (mut rx, tx) = channel.split();
    let stdin = req.stdin.as_deref().unwrap_or_default();
    let mut out = Collected::new(req.output_cap);
    let driven = timeout_at(deadline, async {
        tx.exec(true, plan.wire.as_bytes())
            .await
            .map_err(|e| SshError::Remote(format!("sending exec request: {e}")))?;
        drive(
            &mut rx,
            &tx,
            plan.gate,
            plan.password_line.as_ref().map(|l| l.as_slice()),
            stdin,
            &mut out,
        )
        .await
    })
    .await;
    match driven {
        Ok(Ok(())) => Ok(out.into_result()),
        Ok(Err(e)) => {
            abort(&tx).await;
            Err(e)
        }
        Err(_) => {
            abort(&tx).await;
            Err(SshError::Timeout(format!(
                "command did not finish within {:?}",
                req.timeout
            )))
        }
    }
}

type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send + 'a>>;

/// Reads the channel to its end, feeding stdin concurrently (after the sudo gate opens).
async fn drive<'a>(
    rx: &mut ChannelReadHalf,
    tx: &'a ChannelWriteHalf<Msg>,
    mut gate: Option<SudoGate>,
    password_line: Option<&[u8]>,
    stdin: &'a [u8],
    out: &mut Collected,
) -> Result<(), SshError> {
    let mut writer: Option<WriteFuture<'a>> = match gate {
        None => Some(Box::pin(write_stdin(tx, stdin))),
        Some(_) => None,
    };
    loop {
        let msg = tokio::select! {
            msg = rx.wait() => msg,
            // The writer's own errors (remote closed stdin early) are not the command's
            // failure; the exit status tells.
            Some(_) = OptionFuture::from(writer.as_mut()), if writer.is_some() => {
                writer = None;
                continue;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            ChannelMsg::Data { data } => out.stdout.push(&data),
            ChannelMsg::ExtendedData { data, .. } => match gate.as_mut() {
                Some(g) if !g.is_ready() => {
                    let mut passthrough = Vec::new();
                    let events = g.feed(&data, &mut passthrough);
                    out.stderr.push(&passthrough);
                    for event in events {
                        match event {
                            GateEvent::Prompt => send_password(tx, password_line).await?,
                            GateEvent::Ready => writer = Some(Box::pin(write_stdin(tx, stdin))),
                            GateEvent::Rejected => {
                                return Err(SshError::AuthFailed(
                                    "sudo rejected the password".into(),
                                ));
                            }
                        }
                    }
                }
                _ => out.stderr.push(&data),
            },
            ChannelMsg::ExitStatus { exit_status } => {
                out.exit_status = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                out.exit_signal = Some(signal_str(&signal_name));
            }
            ChannelMsg::Failure => {
                return Err(SshError::Remote("server refused to run the command".into()));
            }
            _ => {}
        }
    }
    if let Some(g) = gate.as_mut() {
        let mut rest = Vec::new();
        g.finish(&mut rest);
        out.stderr.push(&rest);
    }
    Ok(())
}

async fn write_stdin(tx: &ChannelWriteHalf<Msg>, stdin: &[u8]) -> Result<(), russh::Error> {
    if !stdin.is_empty() {
        tx.data(stdin).await?;
    }
    tx.eof().await
}

async fn send_password(
    tx: &ChannelWriteHalf<Msg>,
    password_line: Option<&[u8]>,
) -> Result<(), SshError> {
    // `sudo -n` never prompts, so a prompt without a password cannot happen; if it does,
    // closing stdin makes sudo fail rather than hang.
    let result = match password_line {
        Some(line) => tx.data(line).await,
        None => tx.eof().await,
    };
    result.map_err(|e| SshError::Remote(format!("writing to sudo: {e}")))
}

/// Best effort: stop the remote command and release the channel. sudo relays SIGTERM to the
/// command it runs (it cannot relay SIGKILL), so TERM is the signal that reaches it.
async fn abort(tx: &ChannelWriteHalf<Msg>) {
    let _ = timeout(ABORT_GRACE, async {
        let _ = tx.signal(Sig::TERM).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    })
    .await;
}

fn signal_str(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

/// Output of one command, each stream capped.
struct Collected {
    stdout: Capped,
    stderr: Capped,
    exit_status: Option<i32>,
    exit_signal: Option<String>,
}

impl Collected {
    fn new(cap: usize) -> Self {
        Collected {
            stdout: Capped::new(cap),
            stderr: Capped::new(cap),
            exit_status: None,
            exit_signal: None,
        }
    }

    fn into_result(self) -> ExecResult {
        ExecResult {
            exit_status: self.exit_status,
            exit_signal: self.exit_signal,
            stdout_truncated: self.stdout.truncated,
            stderr_truncated: self.stderr.truncated,
            stdout: self.stdout.buf,
            stderr: self.stderr.buf,
        }
    }
}

/// A buffer that keeps the first `cap` bytes and notes whether more arrived.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Capped {
            buf: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap - self.buf.len();
        if data.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum GateEvent {
    /// sudo asks for the password (first prompt).
    Prompt,
    /// sudo asked again: the password was wrong.
    Rejected,
    /// The command is running as root; stdin may flow.
    Ready,
}

/// Scans stderr for sudo's random prompt and the script's ready marker, removing both.
struct SudoGate {
    prompt: [u8; 32],
    ready: [u8; 32],
    pending: Vec<u8>,
    prompts: usize,
    ready_seen: bool,
}

impl SudoGate {
    fn new() -> Self {
        // Hex nonces: no shell metacharacters and no `%` (sudo expands %-escapes in -p).
        let mut rng = rand::thread_rng();
        let mut prompt = [0u8; 32];
        let mut ready = [0u8; 32];
        hex_into(&rng.r#gen::<[u8; 16]>(), &mut prompt);
        hex_into(&rng.r#gen::<[u8; 16]>(), &mut ready);
        SudoGate {
            prompt,
            ready,
            pending: Vec::new(),
            prompts: 0,
            ready_seen: false,
        }
    }

    fn prompt_str(&self) -> String {
        format!("[sudo {}]", String::from_utf8_lossy(&self.prompt))
    }

    fn ready_str(&self) -> String {
        format!("[ready {}]", String::from_utf8_lossy(&self.ready))
    }

    fn is_ready(&self) -> bool {
        self.ready_seen
    }

    /// Consumes stderr bytes; appends what is not a marker to `passthrough`.
    fn feed(&mut self, data: &[u8], passthrough: &mut Vec<u8>) -> Vec<GateEvent> {
        let (prompt, ready) = (
            self.prompt_str().into_bytes(),
            self.ready_str().into_bytes(),
        );
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        while !self.ready_seen {
            let p = find(&self.pending, &prompt);
            let r = find(&self.pending, &ready);
            let (at, len, event) = match (p, r) {
                (Some(p), r) if r.is_none_or(|r| p < r) => (p, prompt.len(), self.on_prompt()),
                (_, Some(r)) => (r, ready.len(), GateEvent::Ready),
                _ => break,
            };
            passthrough.extend_from_slice(&self.pending[..at]);
            self.pending.drain(..at + len);
            self.ready_seen = event == GateEvent::Ready;
            let stop = event == GateEvent::Rejected;
            events.push(event);
            if stop {
                return events;
            }
        }
        if self.ready_seen {
            passthrough.append(&mut self.pending);
        } else {
            // Keep only what could be the start of a marker split across packets.
            let keep = prompt.len().max(ready.len()) - 1;
            let flush = self
                .pending
                .len()
                .saturating_sub(keep.min(MAX_GATE_PENDING));
            passthrough.extend(self.pending.drain(..flush));
        }
        events
    }

    fn on_prompt(&mut self) -> GateEvent {
        self.prompts += 1;
        if self.prompts == 1 {
            GateEvent::Prompt
        } else {
            GateEvent::Rejected
        }
    }

    /// The channel ended: whatever is held back was not a marker.
    fn finish(&mut self, passthrough: &mut Vec<u8>) {
        passthrough.append(&mut self.pending);
    }
}

fn hex_into(bytes: &[u8; 16], out: &mut [u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn req(command: &str) -> ExecRequest {
        ExecRequest {
            command: command.into(),
            sudo: false,
            stdin: None,
            timeout: Duration::from_secs(5),
            output_cap: 1024,
        }
    }

    fn cred(auth: SshAuth) -> SshCredential {
        SshCredential {
            id: "c1".into(),
            username: "u".into(),
            auth,
        }
    }

    fn password_cred() -> SshCredential {
        cred(SshAuth::Password(SecretString::from("pa'ss word$1")))
    }

    #[test]
    fn quotes_single_quotes_for_sh() {
        assert_eq!(shell_quote("echo 'hi'; $X"), r"'echo '\''hi'\''; $X'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("a'b\"c$d`e\\f\ng")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a'b\"c$d`e\\f\ng");
    }

    #[test]
    fn sudo_plan_keeps_password_out_of_command_line() {
        let p = plan(
            &ExecRequest {
                sudo: true,
                ..req("id -u")
            },
            &password_cred(),
        )
        .unwrap();
        assert!(
            p.wire.starts_with("/usr/bin/sudo -S -p '[sudo "),
            "{}",
            p.wire
        );
        assert!(!p.wire.contains("pa'ss"));
        assert!(!p.wire.contains("pa'\\''ss"));
        assert_eq!(p.password_line.as_deref().unwrap(), b"pa'ss word$1\n");
    }

    #[test]
    fn sudo_with_key_credential_uses_non_interactive_sudo() {
        let key = cred(SshAuth::PrivateKey(SecretString::from("-----BEGIN...")));
        let p = plan(
            &ExecRequest {
                sudo: true,
                ..req("id -u")
            },
            &key,
        )
        .unwrap();
        assert!(
            p.wire.starts_with("/usr/bin/sudo -n -- /bin/sh -c "),
            "{}",
            p.wire
        );
        assert!(p.password_line.is_none());
    }

    #[test]
    fn plain_plan_sends_command_verbatim() {
        let p = plan(&req("echo hi"), &password_cred()).unwrap();
        assert_eq!(p.wire, "echo hi");
        assert!(p.password_line.is_none() && p.gate.is_none());
    }

    #[test]
    fn rejects_requests_over_caps_or_malformed() {
        let c = password_cred();
        let invalid = |r: ExecRequest| matches!(plan(&r, &c), Err(SshError::InvalidArgument(_)));
        assert!(invalid(req("")));
        assert!(invalid(req("  ")));
        assert!(invalid(req("echo \0x")));
        assert!(invalid(req(&"x".repeat(MAX_COMMAND_LEN + 1))));
        assert!(invalid(ExecRequest {
            stdin: Some(vec![0; MAX_STDIN_BYTES + 1]),
            ..req("cat")
        }));
        assert!(invalid(ExecRequest {
            output_cap: MAX_OUTPUT_CAP + 1,
            ..req("true")
        }));
        assert!(!invalid(req(&"x".repeat(MAX_COMMAND_LEN))));
    }

    #[test]
    fn capped_buffer_keeps_prefix_and_flags_truncation() {
        let mut c = Capped::new(5);
        c.push(b"abc");
        assert!(!c.truncated);
        c.push(b"defg");
        c.push(b"more");
        assert_eq!(c.buf, b"abcde");
        assert!(c.truncated);
        let mut exact = Capped::new(3);
        exact.push(b"abc");
        assert!(!exact.truncated);
    }

    #[test]
    fn gate_strips_markers_split_across_packets() {
        let mut g = SudoGate::new();
        let stream = format!("lecture\n{}{}after", g.prompt_str(), g.ready_str()).into_bytes();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for chunk in stream.chunks(3) {
            if g.is_ready() {
                out.extend_from_slice(chunk);
            } else {
                events.extend(g.feed(chunk, &mut out));
            }
        }
        g.finish(&mut out);
        assert_eq!(events, [GateEvent::Prompt, GateEvent::Ready]);
        assert_eq!(String::from_utf8(out).unwrap(), "lecture\nafter");
    }

    #[test]
    fn gate_reports_second_prompt_as_rejection() {
        let mut g = SudoGate::new();
        let mut out = Vec::new();
        let text = format!("{}Sorry, try again.\n{}", g.prompt_str(), g.prompt_str());
        let events = g.feed(text.as_bytes(), &mut out);
        assert_eq!(events, [GateEvent::Prompt, GateEvent::Rejected]);
        assert!(!g.is_ready());
    }

    #[test]
    fn gate_without_prompt_opens_on_ready_marker() {
        let mut g = SudoGate::new();
        let mut out = Vec::new();
        let text = format!("{}err", g.ready_str());
        assert_eq!(g.feed(text.as_bytes(), &mut out), [GateEvent::Ready]);
        assert_eq!(out, b"err");
    }

    #[test]
    fn gate_passes_sudo_failure_text_when_command_never_starts() {
        let mut g = SudoGate::new();
        let mut out = Vec::new();
        assert!(
            g.feed(b"sudo: a password is required\n", &mut out)
                .is_empty()
        );
        g.finish(&mut out);
        assert_eq!(out, b"sudo: a password is required\n");
    }

    #[test]
    fn nonces_differ_per_gate() {
        let (a, b) = (SudoGate::new(), SudoGate::new());
        assert_ne!(a.prompt_str(), b.prompt_str());
        assert_ne!(
            a.prompt_str().trim_start_matches("[sudo "),
            a.ready_str().trim_start_matches("[ready ")
        );
    }
}
