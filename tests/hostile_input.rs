//! Hostile input for every parser and decoder, in the normal test suite: proptest runs the same
//! invariant checks as the cargo-fuzz targets (`felhom_agent::fuzzing`, run by `scripts/fuzz`)
//! on random bytes and on structure-aware near-valid inputs, 256 cases each; plus fixed cases
//! for truncated, wrongly typed and deeply nested API responses.

use felhom_agent::fuzzing;
use felhom_agent::pve::ApiError;
use felhom_agent::pve::client::decode;
use felhom_agent::pve::types::{TaskStatus, Version};
use felhom_agent::retention::{Item, Policy};
use jiff::tz::{Offset, TimeZone};
use proptest::prelude::*;
use serde_json::Value;

const EXAMPLE_CONFIG: &str = include_str!("../config.example.toml");

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn upid_like() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9-]{0,8}",
        "[0-9a-fA-F]{7,9}",
        "[0-9a-fA-F]{7,10}",
        "[0-9a-fA-F]{7,9}",
        "(vzdump|qmsnapshot|imgdel|[^:]{0,6})",
        "(101|101@local||[^:]{0,5})",
        "(root@pam|backup@pve!guestd|[^:]{0,6})",
        "(:|::|)",
    )
        .prop_map(|(n, pid, ps, st, t, id, u, tail)| {
            format!("UPID:{n}:{pid}:{ps}:{st}:{t}:{id}:{u}{tail}")
        })
}

fn log_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("INFO: started backup task 'abc'".to_string()),
        Just("INFO: create storage snapshot 'vzdump'".to_string()),
        Just("INFO: creating vzdump archive '/x.tar.zst'".to_string()),
        Just("INFO: resuming guest".to_string()),
        Just("TASK OK".to_string()),
        "(INFO|WARN|ERROR|TASK ERROR): [ -~]{0,30}",
        (0u32..130, "[0-9. a-z]{0,24}")
            .prop_map(|(p, d)| format!("INFO: {p:3}% (1.0 GiB of 2.0 GiB) in {d}, read: 1 MiB/s")),
        "[0-9]{300,330}".prop_map(|d| format!("INFO:  50% (1 GiB of 2 GiB) in {d}s, read: x")),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from(
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:"
        )),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    "(data|total|upid|status|exitstatus|vmid|n|t|ctime|mark|volid|net0|agent|[a-z]{1,5})",
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn guest_config_line() -> impl Strategy<Value = String> {
    (
        "(net[0-9]{1,2}|agent|smbios1|name|hostname|lock|[a-z]{1,6})",
        "(virtio=|e1000=|model=e1000,macaddr=|name=eth0,hwaddr=|enabled=|uuid=|freeze-fs=|)",
        "[0-9a-fA-F:]{0,20}",
        "(,bridge=vmbr0|,freeze-fs-on-backup=0|,=|,,|)",
    )
        .prop_map(|(k, p, v, s)| format!("{k}: {p}{v}{s}"))
}

fn zone() -> impl Strategy<Value = TimeZone> {
    prop_oneof![
        Just(TimeZone::UTC),
        (-25i8..=25).prop_map(|h| TimeZone::fixed(Offset::constant(h))),
        Just(TimeZone::get("Europe/Budapest").unwrap_or(TimeZone::UTC)),
    ]
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let ts = prop_oneof![
        4 => (0i64..200_000).prop_map(|m| 1_700_000_000 + m * 300),
        1 => any::<i64>(),
    ];
    prop::collection::vec((ts, any::<bool>(), prop::bool::weighted(0.9)), 0..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (timestamp, protected, owned))| Item {
                id: format!("s{i}"),
                timestamp,
                protected: protected && i % 3 == 0,
                owned,
            })
            .collect()
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    let n = prop_oneof![8 => 0u32..6, 1 => Just(u32::MAX)];
    (n.clone(), n.clone(), n.clone(), n.clone(), n.clone(), n).prop_map(|(l, h, d, w, m, y)| {
        Policy {
            keep_last: l,
            keep_hourly: h,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_yearly: y,
        }
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn config_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::config(&data);
    }

    #[test]
    fn config_example_mutated(cut in 0usize..4096, at in 0usize..4096, byte in any::<u8>()) {
        let mut text = EXAMPLE_CONFIG.as_bytes().to_vec();
        let at = at % text.len();
        text[at] = byte;
        text.truncate(cut % (text.len() + 1));
        fuzzing::config(&text);
    }

    #[test]
    fn upid_bytes(data in prop::collection::vec(any::<u8>(), 0..80)) {
        fuzzing::upid(&data);
    }

    #[test]
    fn upid_near_valid(s in upid_like()) {
        fuzzing::upid(s.as_bytes());
    }

    #[test]
    fn tasklog_lines(sel in any::<u8>(), lines in prop::collection::vec(log_line(), 0..30)) {
        let mut data = vec![sel];
        data.extend_from_slice(lines.join("\n").as_bytes());
        fuzzing::tasklog(&data);
    }

    #[test]
    fn api_decode_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::api_decode(&data);
    }

    #[test]
    fn api_decode_json(v in json_value(), total in any::<Option<i64>>(), cut in any::<u16>()) {
        let mut env = serde_json::json!({ "data": v });
        if let Some(t) = total {
            env["total"] = t.into();
        }
        let body = serde_json::to_vec(&env).unwrap();
        fuzzing::api_decode(&body);
        // Truncated anywhere: still an error or a value, never a panic.
        fuzzing::api_decode(&body[..usize::from(cut) % (body.len() + 1)]);
    }

    #[test]
    fn retention_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::retention(&data);
    }

    #[test]
    fn retention_plans(items in items(), policy in policy(), tz in zone()) {
        fuzzing::check_plan(&items, &policy, &tz);
    }

    #[test]
    fn guest_config_lines(lines in prop::collection::vec(guest_config_line(), 0..12)) {
        fuzzing::guest_config(lines.join("\n").as_bytes());
    }

    #[test]
    fn guest_config_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::guest_config(&data);
    }
}

const CALL: &str = "GET /nodes/pve1/qemu/101/status/current";

fn decode_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &[u8]) -> String {
    match decode::<T>(CALL, body) {
        Err(ApiError::Decode { call, message }) => {
            assert_eq!(call, CALL);
            message
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    // serde_json stops at 128 levels; a million brackets must not reach the stack.
    let deep = "[".repeat(1_000_000);
    let body = format!(r#"{{"data":{deep}"#);
    assert_eq!(
        decode_err::<Value>(body.as_bytes()),
        "recursion limit exceeded at line 1 column 135"
    );
    let objects = r#"{"a":"#.repeat(200_000);
    let body = format!(r#"{{"data":{objects}"#);
    assert_eq!(
        decode_err::<Value>(body.as_bytes()),
        "recursion limit exceeded at line 1 column 639"
    );
    // Inside a typed struct an unknown field is skipped without recursion (serde_json keeps
    // its own stack for that), so the depth costs no stack: it ends at EOF, or decodes when
    // closed (the body cap bounds the skip's memory).
    assert_eq!(
        decode_err::<TaskStatus>(body.as_bytes()),
        "EOF while parsing a value at line 1 column 1000008"
    );
    let closed = format!(
        r#"{{"data":{{"x":{}1{},"upid":"u","node":"pve1","pid":1,"pstart":1,"starttime":1,"type":"vzdump","id":"101","user":"root@pam","status":"running"}}}}"#,
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    assert!(decode::<TaskStatus>(CALL, closed.as_bytes()).is_ok());
    // 100 levels is within the limit: decodes as a generic value.
    let ok = format!(r#"{{"data":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
    assert!(decode::<Value>(CALL, ok.as_bytes()).is_ok());
}

#[test]
fn truncated_and_wrongly_typed_bodies_name_the_call() {
    let full = br#"{"data":{"version":"9.1.1","release":"9.1","repoid":"abc"}}"#;
    assert_eq!(
        decode_err::<Version>(&full[..30]),
        "EOF while parsing a string at line 1 column 30"
    );
    assert_eq!(
        decode_err::<Version>(br#"{"data":{"version":9}}"#),
        "invalid type: integer `9`, expected a string at line 1 column 20"
    );
    assert_eq!(
        decode_err::<Version>(br#"{"data":"OK"}"#),
        "invalid type: string \"OK\", expected struct Version at line 1 column 12"
    );
    assert_eq!(
        decode_err::<Version>(b""),
        "EOF while parsing a value at line 1 column 0"
    );
    let e = decode::<Version>(CALL, br#"{"data":[]}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "GET /nodes/pve1/qemu/101/status/current: unexpected response: invalid length 0, \
         expected struct Version with 3 elements at line 1 column 10; is this a supported PVE version? otherwise \
         report a felhom-agent bug"
    );
}

#[test]
fn regression_infinite_progress_duration_in_task_log() {
    // A 400-digit duration used to become an infinite elapsed time, a NaN poll wait and a
    // panic in Duration::from_secs_f64.
    let mut data = vec![0x80u8];
    data.extend_from_slice(b"INFO: started backup task 'x'\n");
    data.extend_from_slice(
        format!("INFO:  50% (1 GiB of 2 GiB) in {}s", "9".repeat(400)).as_bytes(),
    );
    fuzzing::tasklog(&data);
}
