//! Behaviour 1: token authentication (§6, §7).

use crate::harness::*;

#[tokio::test]
async fn missing_header_is_no_ticket_with_empty_body() {
    let h = H::start().await;
    let r = h.raw("GET", "/api2/json/version", &[], None).await;
    assert_eq!((r.status, r.reason.as_str()), (401, "No ticket"));
    assert!(r.body.is_empty(), "401 has an empty body");
}

#[tokio::test]
async fn bad_unknown_disabled_expired_tokens_fail_alike() {
    let extra = r#"
[[access.users]]
userid = "off@pve"
enable = false
[[access.tokens]]
tokenid = "off@pve!tk"
secret = "s-off"
[[access.users]]
userid = "old@pve"
[[access.tokens]]
tokenid = "old@pve!tk"
secret = "s-old"
expire = 1000
"#;
    let h = H::start_with(BASIC, extra).await;
    for hdr in [
        "PVEAPIToken=felhom101@pve!agent=wrong-secret".to_string(),
        "PVEAPIToken=nobody@pve!agent=x".to_string(),
        "PVEAPIToken=off@pve!tk=s-off".to_string(),
        "PVEAPIToken=old@pve!tk=s-old".to_string(),
        "PVEAPIToken=garbage".to_string(),
    ] {
        let r = h
            .raw(
                "GET",
                "/api2/json/version",
                &[("Authorization", &hdr)],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.reason.as_str()),
            (401, "Authentication failed!"),
            "{hdr}"
        );
        assert!(r.body.is_empty());
    }
    // A request the server rejected never reaches the log as authenticated.
    assert!(h.sim.requests().iter().all(|r| r.authid.is_none()));
}

#[tokio::test]
async fn header_splits_at_last_equals_and_accepts_space_form() {
    // A user name may contain '=': PVE splits the header value at the last '='.
    let extra = r#"
[[access.users]]
userid = "a=b@pve"
[[access.tokens]]
tokenid = "a=b@pve!tk"
secret = "s3cr3t-value"
"#;
    let h = H::start_with(BASIC, extra).await;
    let r = h
        .raw(
            "GET",
            "/api2/json/version",
            &[("Authorization", "PVEAPIToken=a=b@pve!tk=s3cr3t-value")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.reason);
    assert_eq!(
        h.sim.requests().last().unwrap().authid.as_deref(),
        Some("a=b@pve!tk")
    );
    // URL-encoded values are decoded; the space form works too.
    let r = h
        .raw(
            "GET",
            "/api2/json/version",
            &[("Authorization", "PVEAPIToken=a%3Db%40pve%21tk=s3cr3t-value")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.reason);
    let ok = h
        .raw(
            "GET",
            "/api2/json/version",
            &[(
                "Authorization",
                &format!("PVEAPIToken {}={}", T101.0, T101.1),
            )],
            None,
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.data()["version"], "9.1.1");
    assert_eq!(
        h.sim.requests().last().unwrap().authid.as_deref(),
        Some("felhom101@pve!agent")
    );
}

#[tokio::test]
async fn failures_are_delayed_by_the_configured_time() {
    let text = BASIC.replace("auth-failure-delay-ms = 0", "auth-failure-delay-ms = 300");
    let h = H::start_with(&text, "").await;
    let t0 = std::time::Instant::now();
    let r = h.raw("GET", "/api2/json/version", &[], None).await;
    assert_eq!(r.status, 401);
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(300),
        "401 must be delayed"
    );
}
