use super::*;

fn grant() -> Grant {
    Grant {
        credentials: ["ops".to_string()].into(),
        targets: ["web-1".to_string()].into(),
        commands: vec![
            "apt list **".to_string(),
            "uptime".to_string(),
            "sudo systemctl restart nginx".to_string(),
        ],
        paths: vec!["/var/log".to_string()],
        rotations: ["ops".to_string()].into(),
        raw_shell: false,
        ..Grant::default()
    }
}

/// The grant's answer for `command` on web-1 with ops: the rule that refused, if any.
fn exec(g: &Grant, command: &str, sudo: bool) -> Result<(), &'static str> {
    let line = g.command_line(command).map_err(|d| d.rule)?;
    g.authorize(&Request::Exec {
        target: "web-1",
        credential: "ops",
        command,
        line: &line,
        sudo,
    })
    .map_err(|d| d.rule)
}

#[test]
fn rotation_needs_its_own_grant_and_a_granted_admin_and_target() {
    let rotate = |credential, target, admin| Request::Rotate {
        target,
        credential,
        admin,
    };
    assert!(grant().authorize(&rotate("ops", "web-1", "ops")).is_ok());
    let no_rotation = Grant {
        rotations: BTreeSet::new(),
        ..grant()
    };
    assert_eq!(
        no_rotation
            .authorize(&rotate("ops", "web-1", "ops"))
            .map_err(|d| d.rule),
        Err("grant.rotations")
    );
    let rule = |r| grant().authorize(&r).map_err(|d| d.rule);
    assert_eq!(rule(rotate("ops", "db-1", "ops")), Err("grant.targets"));
    assert_eq!(
        rule(rotate("ops", "web-1", "root")),
        Err("grant.credentials")
    );
}

#[test]
fn denies_credential_outside_grant() {
    let d = grant().authorize(&Request::Acquire { credential: "root" });
    assert_eq!(d.map_err(|d| d.rule), Err("grant.credentials"));
    assert!(
        grant()
            .authorize(&Request::Acquire { credential: "ops" })
            .is_ok()
    );
}

#[test]
fn denies_exec_on_target_outside_grant() {
    let line = CommandLine::Argv(vec!["uptime".into()]);
    let r = Request::Exec {
        target: "db-1",
        credential: "ops",
        command: "uptime",
        line: &line,
        sudo: false,
    };
    assert_eq!(
        grant().authorize(&r).map_err(|d| d.rule),
        Err("grant.targets")
    );
}

#[test]
fn denies_command_matching_no_pattern() {
    let g = grant();
    assert_eq!(exec(&g, "apt list --upgradable", false), Ok(()));
    assert_eq!(exec(&g, "rm -rf /", false), Err("grant.commands"));
    assert_eq!(exec(&g, "uptime; id", false), Err("grant.commands"));
    assert_eq!(exec(&g, "apt list x; id", false), Err("grant.commands"));
    assert_eq!(exec(&g, "apt list $(id)", false), Err("grant.commands"));
}

#[test]
fn sudo_is_allowed_only_by_a_sudo_pattern() {
    let g = grant();
    assert_eq!(exec(&g, "systemctl restart nginx", true), Ok(()));
    assert_eq!(
        exec(&g, "systemctl restart nginx", false),
        Err("grant.commands")
    );
    assert_eq!(exec(&g, "uptime", true), Err("grant.commands"));
    assert_eq!(
        exec(&g, "sudo systemctl restart nginx", false),
        Err("grant.commands")
    );
    assert!(g.has_sudo_patterns());
    let plain = Grant {
        commands: vec!["**".into()],
        ..grant()
    };
    assert!(!plain.has_sudo_patterns());
    assert_eq!(exec(&plain, "id", true), Err("grant.commands"));
}

#[test]
fn empty_command_list_allows_no_command() {
    let g = Grant {
        commands: vec![],
        ..grant()
    };
    assert_eq!(exec(&g, "id", false), Err("grant.commands"));
    assert_eq!(exec(&g, "id", true), Err("grant.commands"));
}

#[test]
fn raw_shell_sends_text_and_needs_sudo_star_star_for_sudo() {
    let g = Grant {
        raw_shell: true,
        commands: vec![],
        ..grant()
    };
    assert_eq!(
        g.command_line("a | b"),
        Ok(CommandLine::Raw("a | b".into()))
    );
    assert_eq!(exec(&g, "id; uptime", false), Ok(()));
    assert_eq!(exec(&g, "id; uptime", true), Err("grant.commands"));
    let root = Grant {
        commands: vec!["sudo **".into()],
        ..g
    };
    assert_eq!(exec(&root, "id; uptime", true), Ok(()));
}

#[test]
fn stored_patterns_with_shell_syntax_match_nothing() {
    let g = Grant {
        commands: vec!["cat /var/log/* | grep x".into(), "uptime".into()],
        ..grant()
    };
    assert_eq!(exec(&g, "uptime", false), Ok(()));
    assert_eq!(exec(&g, "cat /var/log/x", false), Err("grant.commands"));
}

#[test]
fn argv_words_are_quoted_on_the_wire() {
    let g = grant();
    let line = g.command_line("echo 'x; id'").unwrap();
    assert_eq!(line.shell_text(), "'echo' 'x; id'");
}

#[test]
fn grant_without_raw_shell_field_still_parses() {
    let g: Grant = serde_json::from_str(r#"{"credentials":["a"],"commands":["uptime"]}"#).unwrap();
    assert!(!g.raw_shell);
    let text = serde_json::to_string(&Grant {
        raw_shell: true,
        ..grant()
    })
    .unwrap();
    assert!(text.contains(r#""raw_shell":true"#), "{text}");
    assert!(text.contains("sudo systemctl restart nginx"), "{text}");
}

#[test]
fn dotdot_never_escapes_the_granted_prefix() {
    let p = normalize_path("/var/log/../../etc/shadow").unwrap_or_default();
    assert_eq!(p, "/etc/shadow");
    let r = Request::Transfer {
        target: "web-1",
        credential: "ops",
        path: &p,
    };
    assert_eq!(
        grant().authorize(&r).map_err(|d| d.rule),
        Err("grant.paths")
    );
    assert_eq!(normalize_path("/../../etc").as_deref(), Some("/etc"));
}

#[test]
fn path_prefix_matches_on_component_boundaries() {
    assert!(path_under("/var/log/syslog", "/var/log"));
    assert!(path_under("/var/log", "/var/log/"));
    assert!(!path_under("/var/logs/x", "/var/log"));
    assert!(normalize_path("relative/path").is_none());
    assert!(normalize_path("/a\0b").is_none());
}
