use super::*;

fn words(command: &str) -> Vec<String> {
    split(command).unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn allowed(pattern: &str, command: &str, sudo: bool) -> bool {
    Pattern::parse(pattern)
        .unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
        .matches(&words(command), sudo)
}

#[test]
fn splits_plain_and_quoted_words() {
    assert_eq!(
        words("systemctl  status\tnginx"),
        ["systemctl", "status", "nginx"]
    );
    assert_eq!(words("echo 'a b' \"c d\""), ["echo", "a b", "c d"]);
    assert_eq!(words("echo a'b c'd"), ["echo", "ab cd"]);
    assert_eq!(words("echo '' x"), ["echo", "", "x"]);
    assert_eq!(
        words("echo 'x; id' '$(id)' '`id`'"),
        ["echo", "x; id", "$(id)", "`id`"]
    );
    assert_eq!(words("echo \"it's\""), ["echo", "it's"]);
    assert_eq!(
        words("ls -la /var/log key=value"),
        ["ls", "-la", "/var/log", "key=value"]
    );
}

#[test]
fn refuses_every_unquoted_metacharacter() {
    for c in METACHARACTERS {
        let command = format!("echo a{c}b");
        assert_eq!(
            split(&command),
            Err(ArgvError::Metacharacter(*c)),
            "{command}"
        );
    }
    for attack in [
        "systemctl status x; id",
        "systemctl status x && id",
        "systemctl status x || id",
        "systemctl status x | id",
        "systemctl status $(id)",
        "systemctl status `id`",
        "systemctl status x > /etc/passwd",
        "systemctl status x < /etc/shadow",
        "systemctl status x &",
        "systemctl status ${IFS}",
        "systemctl status ~root",
        "systemctl status x # comment",
        "systemctl status {a,b}",
        "systemctl status x\\;id",
    ] {
        assert!(
            matches!(split(attack), Err(ArgvError::Metacharacter(_))),
            "{attack}"
        );
    }
}

#[test]
fn refuses_control_characters_and_substitutions_in_double_quotes() {
    for attack in [
        "echo x\nid",
        "echo x\rid",
        "echo x\0",
        "echo 'a\nb'",
        "echo \"a\x1bb\"",
    ] {
        assert!(
            matches!(split(attack), Err(ArgvError::Control(_))),
            "{attack:?}"
        );
    }
    for attack in ["echo \"$(id)\"", "echo \"`id`\"", "echo \"a\\\"\""] {
        assert!(
            matches!(split(attack), Err(ArgvError::DoubleQuoted(_))),
            "{attack}"
        );
    }
    assert_eq!(split("echo 'x"), Err(ArgvError::Unterminated("single")));
    assert_eq!(split("echo \"x"), Err(ArgvError::Unterminated("double")));
}

#[test]
fn refuses_empty_commands_assignments_and_sudo_words() {
    assert_eq!(split(""), Err(ArgvError::Empty));
    assert_eq!(split(" \t "), Err(ArgvError::Empty));
    assert_eq!(
        split("PATH=/tmp id"),
        Err(ArgvError::Assignment("PATH".into()))
    );
    assert_eq!(
        split("LD_PRELOAD=/x.so ls"),
        Err(ArgvError::Assignment("LD_PRELOAD".into()))
    );
    assert_eq!(split("'A=1' ls"), Err(ArgvError::Assignment("A".into())));
    assert_eq!(words("env A=1")[1], "A=1");
    assert_eq!(words("=x")[0], "=x");
    assert_eq!(split("sudo id"), Err(ArgvError::SudoWord));
    assert_eq!(split("/usr/bin/sudo id"), Err(ArgvError::SudoWord));
}

#[test]
fn caps_words_and_word_length() {
    let many = vec!["a"; MAX_WORDS].join(" ");
    assert_eq!(split(&many).map(|w| w.len()), Ok(MAX_WORDS));
    assert_eq!(split(&format!("{many} a")), Err(ArgvError::TooManyWords));
    let long = "x".repeat(MAX_WORD_BYTES);
    assert!(split(&format!("echo {long}")).is_ok());
    assert_eq!(split(&format!("echo {long}x")), Err(ArgvError::WordTooLong));
    assert_eq!(
        split(&format!("echo '{long}x'")),
        Err(ArgvError::WordTooLong)
    );
}

#[test]
fn quoted_words_run_as_exactly_those_words() {
    let argv: Vec<String> = [
        "printf", "%s|", "x; id", "$(id)", "it's", "", "`id`", "a\\b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(quote_words(&argv))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "x; id|$(id)|it's||`id`|a\\b|"
    );
}

#[test]
fn star_matches_exactly_one_word_and_double_star_the_rest() {
    assert!(allowed(
        "systemctl status *",
        "systemctl status nginx",
        false
    ));
    assert!(!allowed("systemctl status *", "systemctl status", false));
    assert!(!allowed(
        "systemctl status *",
        "systemctl status a b",
        false
    ));
    assert!(allowed(
        "systemctl status *",
        "systemctl status 'x; id'",
        false
    ));
    assert!(allowed("apt list **", "apt list", false));
    assert!(allowed("apt list **", "apt list --upgradable -a", false));
    assert!(!allowed("apt list **", "apt show x", false));
    assert!(allowed("**", "anything at all", false));
    assert!(allowed("uptime", "uptime", false));
    assert!(!allowed("uptime", "uptime -p", false));
}

#[test]
fn star_inside_a_word_globs_within_that_word_only() {
    assert!(allowed(
        "cat /var/log/*.log",
        "cat /var/log/syslog.log",
        false
    ));
    assert!(allowed(
        "cat /var/log/*.log",
        "cat /var/log/a/../../../etc/x.log",
        false
    ));
    assert!(!allowed(
        "cat /var/log/*.log",
        "cat /var/log/x.log /etc/shadow",
        false
    ));
    assert!(allowed(
        "journalctl --unit=*",
        "journalctl --unit=nginx",
        false
    ));
    assert!(allowed("echo '*'", "echo '*'", false));
    assert!(!allowed("echo '*'", "echo x", false));
}

#[test]
fn wildcards_never_match_an_option_the_pattern_did_not_write() {
    assert!(!allowed(
        "tar -czf /backup/x.tgz *",
        "tar -czf /backup/x.tgz --checkpoint-action=exec=sh",
        false
    ));
    assert!(!allowed(
        "systemctl status *.service",
        "systemctl status -x.service",
        false
    ));
    assert!(allowed("ls -*", "ls -la", false));
    assert!(allowed("ls **", "ls -la", false));
}

#[test]
fn sudo_is_part_of_the_pattern() {
    assert!(allowed(
        "sudo systemctl restart nginx",
        "systemctl restart nginx",
        true
    ));
    assert!(!allowed(
        "sudo systemctl restart nginx",
        "systemctl restart nginx",
        false
    ));
    assert!(!allowed(
        "systemctl restart nginx",
        "systemctl restart nginx",
        true
    ));
    assert!(Pattern::parse("sudo **").unwrap().allows_any_sudo());
    assert!(!Pattern::parse("sudo id **").unwrap().allows_any_sudo());
    assert!(!Pattern::parse("**").unwrap().allows_any_sudo());
    // A quoted 'sudo' is an ordinary word, which no command can start with.
    assert!(!Pattern::parse("'sudo' id").unwrap().sudo);
}

#[test]
fn bad_patterns_do_not_parse() {
    for bad in [
        "",
        "sudo",
        "a; b",
        "a | b",
        "** x",
        "echo $HOME",
        "a\nb",
        "x > y",
    ] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        Pattern::parse("sudo  apt  *  **").unwrap().to_string(),
        "sudo apt * **"
    );
}

#[test]
fn glob_backtracks() {
    let p = |s: &str| -> Vec<Piece> {
        s.chars()
            .map(|c| {
                if c == '*' {
                    Piece::Star
                } else {
                    Piece::Literal(c)
                }
            })
            .collect()
    };
    let t = |s: &str| s.chars().collect::<Vec<_>>();
    assert!(glob(&p("*"), &t("")));
    assert!(glob(&p("a*c"), &t("abbbc")));
    assert!(!glob(&p("*.log"), &t("x.logs")));
    assert!(glob(&p("a**b"), &t("ab")));
    assert!(!glob(&p("abc"), &t("abcd")));
}
