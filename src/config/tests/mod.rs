//! Tests of the configuration contract: example file, defaults, exact error messages with
//! key and line:column, secrets and path resolution.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::values::{parse_duration, parse_fingerprint, parse_schedule};
use super::*;

mod jobs;
mod secrets;
use secrets::TempDir;

const CFG: &str = "/etc/felhom-agent/config.toml";
const FP_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const FP_BYTES: [u8; 32] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];

/// Minimal valid config; line 7 onwards is `extra`.
fn min(extra: &str) -> String {
    format!(
        "[pve]\nurl = \"https://pve1.example:8006\"\ntoken-id = \"felhom-ctl@pve!ctl\"\n\
         fingerprint = \"{FP_HEX}\"\n[backup]\nstorage = \"pbs-main\"\n{extra}"
    )
}

fn ok(text: &str) -> Config {
    parse(text, Path::new(CFG)).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse(text, Path::new(CFG)).unwrap_err().to_string()
}

fn example_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn example_config_parses_with_expected_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.pve.url, "https://pve1.example:8006");
    assert_eq!(c.pve.api_base(), "https://pve1.example:8006/api2/json");
    assert_eq!(c.pve.token_id, "felhom-ctl@pve!ctl");
    assert_eq!(c.pve.token_user(), "felhom-ctl@pve");
    assert_eq!(c.pve.token_name(), "ctl");
    assert_eq!(
        c.pve.token_secret_file,
        Some(PathBuf::from("/etc/felhom-agent/token"))
    );
    assert_eq!(c.pve.fingerprint.unwrap()[..3], [0xAA, 0xBB, 0xCC]);
    assert_eq!(c.pve.ca_file, None);
    assert_eq!(c.pve.timeout, Duration::from_secs(30));
    assert_eq!(c.guest.vmid, None);
    assert_eq!(c.backup.storage, "pbs-main");
    assert_eq!(c.backup.mode, BackupMode::Snapshot);
    assert_eq!(c.backup.compress, Compress::Zstd);
    assert_eq!(
        c.backup.notes_template.as_deref(),
        Some("{{guestname}} via felhom-agent")
    );
    assert!(!c.backup.protected);
    assert_eq!(c.backup.task_timeout, Duration::from_secs(6 * 3600));
    assert_eq!(
        c.backup.schedule.as_ref().unwrap().fields(),
        ["0", "2", "*", "*", "*"]
    );
    assert_eq!(c.backup.timezone, None);
    assert_eq!(c.backup.splay, Duration::from_secs(900));
    assert_eq!(c.backup.catch_up, Duration::from_secs(12 * 3600));
    assert_eq!(c.quiesce.hooks, vec![]);
    assert_eq!(c.quiesce.release, Release::ConsistencyPoint);
    assert!(!c.quiesce.in_stop_mode);
    assert_eq!(c.state.dir, None);
    assert_eq!(c.health.listen.to_string(), "127.0.0.1:9742");
    assert_eq!(c.health.bearer_token_file, None);
    assert_eq!(c.health.max_backup_age, Duration::from_secs(26 * 3600));
    assert_eq!(c.health.max_consecutive_failures, 2);
    assert_eq!(c.backup.retention, None);
    assert_eq!(c.snapshots.schedule, None);
    assert_eq!(c.snapshots.prefix, "felhom");
    assert!(!c.snapshots.vmstate);
    assert_eq!(c.snapshots.description, "[felhom-agent]");
    assert!(!c.snapshots.quiesce);
    assert_eq!(
        c.snapshots.retention,
        RetentionPolicy {
            keep_last: 3,
            keep_hourly: 24,
            keep_daily: 7,
            ..RetentionPolicy::default()
        }
    );
    assert_eq!(
        c.self_check.schedule.as_ref().map(Schedule::fields),
        Some(["0", "*/6", "*", "*", "*"])
    );
    assert_eq!(c.self_check.foreign_vmids, Vec::<u32>::new());
    assert_eq!(c.self_check.on_violation, OnViolation::Report);
}

/// `#key = value` lines in the example are optional settings; uncommented, the file must still
/// parse, and then every documented key must appear in it with a comment above.
fn uncomment_example() -> String {
    example_text()
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_with_optional_settings_enabled_parses_and_covers_every_key() {
    let text = uncomment_example();
    let c = ok(&text);
    assert_eq!(c.guest.vmid, Some(101));
    assert_eq!(
        c.backup.timezone.as_ref().and_then(|t| t.iana_name()),
        Some("Europe/Budapest")
    );
    assert_eq!(
        c.pve.ca_file,
        Some(PathBuf::from("/etc/felhom-agent/pve-root-ca.pem"))
    );
    assert_eq!(
        c.quiesce.hooks,
        vec![Hook {
            name: "app".into(),
            pre: Some(Command::Argv(vec![
                "systemctl".into(),
                "stop".into(),
                "app.service".into()
            ])),
            post: Some(Command::Argv(vec![
                "systemctl".into(),
                "start".into(),
                "app.service".into()
            ])),
            timeout: Duration::from_secs(120),
            on_error: OnError::Abort,
        }]
    );
    assert_eq!(c.state.dir, Some(PathBuf::from("/var/lib/felhom-agent")));
    assert_eq!(
        c.health.bearer_token_file,
        Some(PathBuf::from("/etc/felhom-agent/health-token"))
    );
    assert_eq!(
        c.backup.retention,
        Some(RetentionPolicy {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            ..RetentionPolicy::default()
        })
    );
    assert_eq!(
        c.snapshots.retention.to_property_string(),
        "keep-last=3,keep-hourly=24,keep-daily=7"
    );
    assert_eq!(c.self_check.foreign_vmids, vec![200, 305]);

    let root = toml::de::DeTable::parse(&text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for key in documented_keys() {
        let parts: Vec<&str> = key.split('.').collect();
        let mut table = root.get_ref();
        for part in &parts[..parts.len() - 1] {
            let v = table
                .get(*part)
                .unwrap_or_else(|| panic!("{key}: no [{part}]"));
            table = match v.get_ref() {
                toml::de::DeValue::Table(t) => t,
                toml::de::DeValue::Array(a) => a[0].get_ref().as_table().unwrap(),
                _ => panic!("{key}: {part} is not a table"),
            };
        }
        let leaf = parts[parts.len() - 1];
        let (k, _) = table
            .get_key_value(leaf)
            .unwrap_or_else(|| panic!("{key} missing from config.example.toml"));
        let (line, _) = doc::line_col(&text, k.span().start);
        assert!(
            lines[line - 2].starts_with("# "),
            "{key} has no comment above it"
        );
    }
}

#[test]
fn documented_keys_are_dotted_and_unique() {
    let keys = documented_keys();
    assert_eq!(keys.len(), 54);
    for key in [
        "backup.mode",
        "quiesce.hooks.pre",
        "backup.retention.keep-yearly",
        "snapshots.retention.keep-last",
        "snapshots.description",
        "self-check.foreign-vmids",
    ] {
        assert!(keys.contains(&key), "{key}");
    }
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len());
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ok(&min(""));
    assert_eq!(c.pve.fingerprint, Some(FP_BYTES));
    assert_eq!(c.pve.token_secret_file, None);
    assert_eq!(c.backup.mode, BackupMode::Snapshot);
    assert_eq!(c.backup.compress, Compress::Zstd);
    assert_eq!(c.backup.notes_template, None);
    assert_eq!(
        c.backup.schedule.as_ref().map(Schedule::as_str),
        Some("0 2 * * *")
    );
    assert_eq!(c.backup.task_timeout, Duration::from_secs(21600));
    assert_eq!(c.quiesce.release, Release::ConsistencyPoint);
    assert_eq!(c.health.listen.to_string(), "127.0.0.1:9742");
    assert_eq!(c.health.max_consecutive_failures, 2);
}

#[test]
fn values_of_every_kind_are_converted() {
    let c = ok(&min(
        "mode = \"stop\"\ncompress = 0\nschedule = \"@weekly\"\nnotes-template = \"\"\n\
         protected = true\nsplay = \"0s\"\ntask-timeout = \"1h30m\"\n\
         [guest]\nvmid = 999999999\n[quiesce]\nrelease = \"task-end\"\nin-stop-mode = true\n\
         [[quiesce.hooks]]\nname = \"db\"\npost = [\"echo done; sync\"]\nshell = true\n\
         on-error = \"continue\"\ntimeout = \"1d\"\n\
         [health]\nlisten = \"[::1]:0\"\nmax-consecutive-failures = 5\n",
    ));
    assert_eq!(c.backup.mode.as_str(), "stop");
    assert_eq!(c.backup.compress.as_str(), "0");
    assert_eq!(c.backup.schedule.as_ref().unwrap().as_str(), "@weekly");
    assert_eq!(
        c.backup.schedule.as_ref().unwrap().fields(),
        ["0", "0", "*", "*", "0"]
    );
    assert_eq!(c.backup.notes_template, None);
    assert!(c.backup.protected);
    assert_eq!(c.backup.splay, Duration::ZERO);
    assert_eq!(c.backup.task_timeout, Duration::from_secs(5400));
    assert_eq!(c.guest.vmid, Some(999_999_999));
    assert_eq!(c.quiesce.release, Release::TaskEnd);
    assert!(c.quiesce.in_stop_mode);
    let h = &c.quiesce.hooks[0];
    assert_eq!(h.pre, None);
    assert_eq!(h.post, Some(Command::Shell("echo done; sync".into())));
    assert_eq!(h.on_error, OnError::Continue);
    assert_eq!(h.timeout, Duration::from_secs(86400));
    assert_eq!(c.health.listen.to_string(), "[::1]:0");
    assert_eq!(c.health.max_consecutive_failures, 5);
    assert_eq!(ok(&min("compress = \"1\"")).backup.compress, Compress::On);
    assert_eq!(ok(&min("schedule = \"\"")).backup.schedule, None);
}

#[test]
fn bad_enum_value_names_key_line_column_and_choices() {
    assert_eq!(
        err(&min("mode = \"snap\"\n")),
        "/etc/felhom-agent/config.toml:7:8: backup.mode: unknown variant \"snap\", expected one \
         of snapshot, stop, suspend"
    );
    assert_eq!(
        err(&min("compress = 9\n")),
        "/etc/felhom-agent/config.toml:7:12: backup.compress: unknown variant, expected one of \
         0, 1, gzip, lzo, zstd"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_a_hint() {
    assert_eq!(
        err(&min("mdoe = \"stop\"\n")),
        "/etc/felhom-agent/config.toml:7:1: backup.mdoe: unknown key \"mdoe\" (did you mean \
         \"mode\"?); valid keys here: storage, mode, compress, notes-template, protected, \
         task-timeout, lockwait, schedule, timezone, splay, catch-up, retention"
    );
    // The first unknown key in document order is reported.
    let e = err(&min("zzz = 1\naaa = 2\n"));
    assert!(
        e.starts_with("/etc/felhom-agent/config.toml:7:1: backup.zzz: unknown key \"zzz\";"),
        "{e}"
    );
}

#[test]
fn typoed_section_is_rejected() {
    let text = "[pve]\nurl = \"https://pve1.example:8006\"\n\n[bakup]\nstorage = \"x\"\n";
    assert_eq!(
        err(text),
        "/etc/felhom-agent/config.toml:4:2: bakup: unknown section \"bakup\" (did you mean \
         \"backup\"?); valid sections here: pve, guest, backup, quiesce, snapshots, self-check, state, \
         health"
    );
}

#[test]
fn missing_required_keys_point_at_their_section() {
    let text = "[pve]\nurl = \"https://pve1.example:8006\"\ntoken-id = \"a@pve!ctl\"\n";
    assert_eq!(
        err(text),
        "/etc/felhom-agent/config.toml:1:2: pve.fingerprint: TLS needs pve.fingerprint (SHA-256 \
         of the node's certificate, see `pvenode cert info`) or pve.ca-file (e.g. a copy of \
         /etc/pve/pve-root-ca.pem), or both; there is no insecure mode"
    );
    let text = format!(
        "{}[backup]\n",
        &min("")[..min("").find("[backup]").unwrap()]
    );
    assert_eq!(
        err(&text),
        "/etc/felhom-agent/config.toml:5:2: backup.storage: missing required key: the PVE \
         storage to back up to, e.g. storage = \"pbs-main\""
    );
    // A whole missing section is reported at 1:1.
    assert_eq!(
        err("[backup]\nstorage = \"pbs\"\n"),
        "/etc/felhom-agent/config.toml:1:1: pve.url: missing required key: the PVE API base, \
         e.g. url = \"https://pve1.example:8006\""
    );
}

#[test]
fn semantic_errors_point_at_the_value() {
    let cases: &[(&str, &str)] = &[
        (
            "task-timeout = \"90\"\n",
            "7:16: backup.task-timeout: invalid duration \"90\" (missing unit after the last \
             number): expected a number followed by a unit d, h, m or s, largest unit first, e.g. \
             \"30s\", \"2m\", \"6h\", \"1h30m\", \"1d\"",
        ),
        (
            "task-timeout = \"0s\"\n",
            "7:16: backup.task-timeout: duration \"0s\" must be greater than zero",
        ),
        (
            "lockwait = \"90s\"\n",
            "7:12: backup.lockwait: duration \"90s\" is not a whole number of minutes (vzdump's \
             lockwait unit), e.g. \"30m\"",
        ),
        (
            "protected = \"yes\"\n",
            "7:13: backup.protected: expected true or false, found string",
        ),
        (
            "storage2 = 1\n",
            "7:1: backup.storage2: unknown key \"storage2\" (did you mean \"storage\"?); valid \
             keys here: storage, mode, compress, notes-template, protected, task-timeout, \
             lockwait, schedule, timezone, splay, catch-up, retention",
        ),
        (
            "schedule = \"0 2 * *\"\n",
            "7:12: backup.schedule: invalid schedule \"0 2 * *\": found 4 fields, expected 5 \
             (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), \
             @hourly/@daily/@weekly/@monthly, or \"\" to disable",
        ),
        (
            "schedule = \"61 2 * * *\"\n",
            "7:12: backup.schedule: invalid schedule \"61 2 * * *\": minute field \"61\": 61 is \
             out of range (allowed 0-59)",
        ),
        (
            "[guest]\nvmid = 99\n",
            "8:8: guest.vmid: VMID 99 is out of range: expected 100 to 999999999",
        ),
        (
            "[state]\ndir = \"var/lib\"\n",
            "8:7: state.dir: path \"var/lib\" must be absolute (start with /)",
        ),
        (
            "[health]\nlisten = \"localhost\"\n",
            "8:10: health.listen: invalid address \"localhost\": expected IP:PORT, e.g. \
             \"127.0.0.1:9742\" or \"[::1]:9742\"",
        ),
        (
            "[health]\nmax-consecutive-failures = 0\n",
            "8:28: health.max-consecutive-failures: 0 is out of range: expected an integer of at \
             least 1",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(&min(extra)), format!("{CFG}:{want}"), "for {extra:?}");
    }
    let e = err(&min("timezone = \"Mars/Olympus\"\n"));
    assert!(
        e.starts_with(&format!(
            "{CFG}:7:12: backup.timezone: unknown time zone \"Mars/Olympus\" "
        )),
        "{e}"
    );
}

#[test]
fn pve_section_errors() {
    let pve = |line: &str| {
        format!(
            "[pve]\nurl = \"https://pve1.example:8006\"\ntoken-id = \"felhom-ctl@pve!ctl\"\n\
             {line}\n[backup]\nstorage = \"pbs-main\"\n"
        )
    };
    assert_eq!(
        err(&pve("fingerprint = \"AA:BB\"")),
        format!(
            "{CFG}:4:15: pve.fingerprint: invalid SHA-256 fingerprint (found 2 colon-separated \
             groups): expected 32 colon-separated hex bytes (AA:BB:…:FF, as shown by `pvenode \
             cert info`) or 64 hex digits"
        )
    );
    assert_eq!(
        err(&pve("ca-file = \"ca.pem\"")),
        format!("{CFG}:4:11: pve.ca-file: path \"ca.pem\" must be absolute (start with /)")
    );
    assert_eq!(
        err(&pve("ca-file = \"/ca.pem\"\ntimeout = 30")),
        format!("{CFG}:5:11: pve.timeout: expected a string, found integer")
    );
    let http = "[pve]\nurl = \"http://pve1.example:8006\"\n";
    assert_eq!(
        err(http),
        format!(
            "{CFG}:2:7: pve.url: URL \"http://pve1.example:8006\" must use https:// (TLS is always \
             verified; there is no insecure mode)"
        )
    );
    assert_eq!(
        err("[pve]\nurl = \"https://pve1:8006/api2/json\"\n"),
        format!(
            "{CFG}:2:7: pve.url: URL \"https://pve1:8006/api2/json\" must be the API base without \
             /api2/json (it is appended), e.g. \"https://pve1:8006\""
        )
    );
    assert_eq!(
        err("[pve]\nurl = \"https://pve1.example:8006\"\ntoken-id = \"felhom-ctl@pve\"\n"),
        format!(
            "{CFG}:3:12: pve.token-id: invalid API token id \"felhom-ctl@pve\": missing \
             '!TOKENNAME'; expected USER@REALM!TOKENNAME, e.g. \"felhom-ctl@pve!ctl\""
        )
    );
    // Inline tables and dotted keys are the same document.
    let c = ok(
        "pve = { url = \"https://[::1]:8006/\", token-id = \"u@pam!t1\", ca-file = \"/ca\" }\n\
         backup.storage = \"local\"\n",
    );
    assert_eq!(c.pve.url, "https://[::1]:8006");
    assert_eq!(c.pve.fingerprint, None);
}

#[test]
fn token_id_containing_a_secret_is_not_echoed() {
    let secret = "8a1e0c3f-6d1b-4c55-9f1e-2b6a7c8d9e0f";
    let text = format!(
        "[pve]\nurl = \"https://pve1.example:8006\"\ntoken-id = \"felhom-ctl@pve!ctl={secret}\"\n"
    );
    let e = err(&text);
    assert!(!e.contains(secret), "{e}");
    assert!(
        e.starts_with(&format!("{CFG}:3:12: pve.token-id: must not contain '='")),
        "{e}"
    );
}

#[test]
fn hook_errors() {
    let hook = |body: &str| min(&format!("[[quiesce.hooks]]\n{body}\n"));
    let cases: &[(&str, &str)] = &[
        (
            "name = \"\"\npre = [\"true\"]",
            "8:8: quiesce.hooks[0].name: must not be empty",
        ),
        (
            "pre = [\"true\"]",
            "7:1: quiesce.hooks[0].name: missing required key: a unique hook name, e.g. name = \"app\"",
        ),
        (
            "name = \"a\"",
            "7:1: quiesce.hooks[0].pre: a hook needs pre or post (or both): the command as an \
             argv array, e.g. pre = [\"systemctl\", \"stop\", \"app.service\"]",
        ),
        (
            "name = \"a\"\npre = []",
            "9:7: quiesce.hooks[0].pre: must not be empty; leave the key out instead",
        ),
        (
            "name = \"a\"\npre = [\"\", \"x\"]",
            "9:7: quiesce.hooks[0].pre: the program (first element) must not be empty",
        ),
        (
            "name = \"a\"\npre = [\"true\", 1]",
            "9:16: quiesce.hooks[0].pre: expected a string, found integer",
        ),
        (
            "name = \"a\"\nshell = true\npost = [\"a\", \"b\"]",
            "10:8: quiesce.hooks[0].post: with shell = true, post must be a one-element array \
             holding the script run by /bin/sh -c, e.g. [\"systemctl stop app && sync\"]",
        ),
        (
            "name = \"a\"\npre = [\"true\"]\ntimeout = \"0m\"",
            "10:11: quiesce.hooks[0].timeout: duration \"0m\" must be greater than zero",
        ),
        (
            "name = \"a\"\npre = [\"true\"]\non-error = \"ignore\"",
            "10:12: quiesce.hooks[0].on-error: unknown variant \"ignore\", expected one of abort, \
             continue",
        ),
        (
            "name = \"a\"\npre = [\"true\"]\nnmae = 1",
            "10:1: quiesce.hooks[0].nmae: unknown key \"nmae\" (did you mean \"name\"?); valid \
             keys here: name, pre, post, timeout, on-error, shell",
        ),
        (
            "name = \"a\"\npre = [\"true\"]\n[[quiesce.hooks]]\nname = \"a\"\npost = [\"x\"]",
            "11:8: quiesce.hooks[1].name: duplicate hook name \"a\" (first used on line 8)",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(err(&hook(body)), format!("{CFG}:{want}"), "for {body:?}");
    }
    assert_eq!(
        err(&min("[quiesce.hooks]\nname = \"a\"\n")),
        format!(
            "{CFG}:7:1: quiesce.hooks: expected an array of tables ([[quiesce.hooks]]), found table"
        )
    );
}

#[test]
fn syntax_errors_are_parse_errors_with_a_guessed_key() {
    let e = parse(&min("mode = snapshot\n"), Path::new(CFG)).unwrap_err();
    let ConfigError::Parse { line, key, .. } = &e else {
        panic!("not a parse error: {e:?}");
    };
    assert_eq!((*line, key.as_str()), (7, "backup.mode"));
    assert!(e.to_string().starts_with(&format!("{CFG}:7:")), "{e}");

    let e = parse(&min("storage = \"again\"\n"), Path::new(CFG)).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Parse { line: 7, column: 1, key, message, .. }
            if key == "backup.storage" && message.contains("duplicate key")),
        "{e:?}"
    );
}

#[test]
fn load_reports_io_and_encoding_errors() {
    let dir = TempDir::new("load");
    let missing = dir.0.join("nope.toml");
    let e = load(&missing).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Io { path, .. } if *path == missing),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{e}"
    );

    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, b"[pve]\nurl = \"\xff\"\n").unwrap();
    assert_eq!(
        load(&bad).unwrap_err().to_string(),
        format!(
            "{}:2:8: (document): the file is not valid UTF-8",
            bad.display()
        )
    );
}

#[test]
fn durations() {
    for (s, secs) in [
        ("30s", 30),
        ("2m", 120),
        ("6h", 21600),
        ("1h30m", 5400),
        ("1d", 86400),
    ] {
        assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)), "{s}");
    }
    assert_eq!(parse_duration("1d2h3m4s"), Ok(Duration::from_secs(93784)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for s in [
        "",
        "90",
        "1.5h",
        "1 h",
        "h",
        "1h1h",
        "30m1h",
        "1w",
        "-1s",
        "1H",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(s).is_err(), "{s:?} accepted");
    }
    assert!(
        parse_duration("1w")
            .unwrap_err()
            .contains("unknown unit 'w'")
    );
}

#[test]
fn fingerprint_forms() {
    let colon_upper: String = FP_HEX
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(parse_fingerprint(&colon_upper), Ok(FP_BYTES));
    assert_eq!(parse_fingerprint(&colon_upper.to_lowercase()), Ok(FP_BYTES));
    assert_eq!(parse_fingerprint(FP_HEX), Ok(FP_BYTES));
    assert_eq!(parse_fingerprint(&FP_HEX.to_uppercase()), Ok(FP_BYTES));
    let mixed = format!("{}{}", &FP_HEX[..32], FP_HEX[32..].to_uppercase());
    assert_eq!(parse_fingerprint(&mixed), Ok(FP_BYTES));
    let rejected = [
        FP_HEX[..62].to_owned(),
        format!("{FP_HEX}00"),
        format!("{}g", &FP_HEX[..63]),
        colon_upper[3..].to_owned(),
        colon_upper.replacen(':', "-", 1),
        format!("{}:", &colon_upper),
        colon_upper.replacen("01:", "1:0", 1),
        format!("+{}", &FP_HEX[1..]),
        "sha256:".to_owned() + FP_HEX,
    ];
    for s in rejected {
        assert!(parse_fingerprint(&s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn schedules() {
    for s in [
        "0 2 * * *",
        "*/15 * * * *",
        "0 0-6/2 1,15 jan-mar mon-fri",
        "30 4 * * 7",
        "@daily",
        "@hourly",
        "@monthly",
    ] {
        assert!(parse_schedule(s).is_ok(), "{s:?} rejected");
    }
    for s in [
        "0 2 * * * *",
        "@yearly",
        "0 24 * * *",
        "0 2 0 * *",
        "0 2 * 13 *",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 2 * * funday",
        "a b c d e",
        "0,,1 * * * *",
    ] {
        assert!(parse_schedule(s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn token_ids() {
    use super::values::check_token_id;
    for s in [
        "felhom-ctl@pve!ctl",
        "root@pam!a1",
        "a.b@ldap-x!t_1.x",
        "u!x@pve!tok",
    ] {
        assert_eq!(check_token_id(s), Ok(()), "{s}");
    }
    for s in [
        "felhom@pve",
        "felhom!ctl",
        "@pve!ctl",
        "a b@pve!ctl",
        "a@p!ctl",
        "a@pve!1x",
        "a@pve!c",
        "a@pve!",
    ] {
        assert!(check_token_id(s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn resolve_path_precedence_cli_env_default() {
    let env_set = |k: &str| (k == CONFIG_ENV).then(|| "/from/env.toml".to_owned());
    let env_empty = |k: &str| (k == CONFIG_ENV).then(String::new);
    let env_none = |_: &str| None;
    let cli = Path::new("/from/cli.toml");
    assert_eq!(
        resolve_path_with(Some(cli), &env_set),
        PathBuf::from("/from/cli.toml")
    );
    assert_eq!(
        resolve_path_with(None, &env_set),
        PathBuf::from("/from/env.toml")
    );
    assert_eq!(
        resolve_path_with(None, &env_empty),
        PathBuf::from(DEFAULT_PATH)
    );
    assert_eq!(
        resolve_path_with(None, &env_none),
        PathBuf::from("/etc/felhom-agent/config.toml")
    );
}

#[test]
fn state_dir_resolution() {
    let env = |k: &str| (k == "STATE_DIRECTORY").then(|| "/var/lib/a:/var/lib/b".to_owned());
    let none = |_: &str| None;
    assert_eq!(
        StateConfig::default().resolve_dir(&env),
        PathBuf::from("/var/lib/a")
    );
    assert_eq!(
        StateConfig::default().resolve_dir(&none),
        PathBuf::from(DEFAULT_STATE_DIR)
    );
    let set = StateConfig {
        dir: Some("/srv/st".into()),
    };
    assert_eq!(set.resolve_dir(&env), PathBuf::from("/srv/st"));
}

#[test]
fn fsfreeze_keys_parse_with_defaults_locations_and_limits() {
    let c = ok(&min(""));
    assert!(c.quiesce.fsfreeze.is_empty());
    assert_eq!(c.quiesce.max_freeze, Duration::from_secs(30));
    assert!(!c.quiesce.fsfreeze_force);
    let c = ok(&min(
        "[quiesce]\nfsfreeze = [\"/srv/data/\", \"/srv/db\"]\nmax-freeze = \"2m\"\nfsfreeze-force = true\n",
    ));
    let paths: Vec<&Path> = c
        .quiesce
        .fsfreeze
        .iter()
        .map(|f| f.path.as_path())
        .collect();
    assert_eq!(paths, vec![Path::new("/srv/data"), Path::new("/srv/db")]);
    let f = &c.quiesce.fsfreeze[1];
    assert_eq!(
        (f.line, f.column, f.file.as_path()),
        (8, 27, Path::new(CFG))
    );
    assert_eq!(c.quiesce.max_freeze, Duration::from_secs(120));
    assert!(c.quiesce.fsfreeze_force);
    for (body, want) in [
        (
            "fsfreeze = [\"srv\"]",
            "8:13: quiesce.fsfreeze: path \"srv\" must be absolute (start with /)",
        ),
        (
            "fsfreeze = [\"/a\", \"/a/\"]",
            "8:19: quiesce.fsfreeze: /a is listed twice (first on line 8)",
        ),
        (
            "max-freeze = \"0s\"",
            "8:14: quiesce.max-freeze: duration \"0s\" must be greater than zero",
        ),
        (
            "max-freeze = \"11m\"",
            "8:14: quiesce.max-freeze: 660s is too long: at most 600s (600s = 10m); writers to a \
             frozen filesystem hang until the thaw",
        ),
    ] {
        let e = err(&min(&format!("[quiesce]\n{body}\n")));
        assert_eq!(e, format!("{CFG}:{want}"), "{body}");
    }
}
