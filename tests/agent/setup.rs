//! Configuration and TLS problems: exit 2 naming the problem; a fingerprint mismatch fails
//! closed before any request carries the token.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_config_names_key_and_line() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.write_config(
        &env.config_text("felhom101@pve!agent", "")
            .replace("mode = \"snapshot\"", "mode = \"snap\""),
    );
    let r = env.run(&["check-config"]).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("backup.mode") && r.stderr.contains("config.toml:10:"),
        "{}",
        r.stderr
    );
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 2);
    assert!(env.sim.requests().is_empty());
    env.write_config(&(env.config_text("felhom101@pve!agent", "") + "\n[backup]\nbogus = 1\n"));
    assert_eq!(env.run(&["check-config"]).await.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_secret_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    std::fs::set_permissions(
        env.dir.join("token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("readable by group/other") && r.stderr.contains("chmod 600"),
        "{}",
        r.stderr
    );
    assert!(env.sim.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_mismatch_fails_closed_and_names_the_presented_one() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let wrong = "AB:".repeat(31) + "AB";
    env.write_config(
        &env.config_text("felhom101@pve!agent", "")
            .replace(&env.sim.fingerprint(), &wrong),
    );
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&env.sim.fingerprint()),
        "names the presented fingerprint: {}",
        r.stdout
    );
    assert!(
        env.sim.requests().is_empty(),
        "no request reached the server"
    );
    // A renewed certificate mid-life is the same story: rotate, and the old pin fails closed.
    env.write_config(&env.config_text("felhom101@pve!agent", ""));
    let new_fp = env.sim.rotate_cert().unwrap();
    let r = env.run(&["discover"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&new_fp), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_mode_works_and_discover_proves_identity() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    std::fs::write(env.dir.join("ca.pem"), env.sim.ca_pem()).unwrap();
    let ca = format!("ca-file = \"{}\"\n", env.dir.join("ca.pem").display());
    let text = env.config_text("felhom101@pve!agent", "").replace(
        &format!("fingerprint = \"{}\"\n", env.sim.fingerprint()),
        &ca,
    );
    env.write_config(&text.replace(
        &env.sim.url(),
        &env.sim.url().replace("127.0.0.1", "localhost"),
    ));
    let r = env.run(&["discover", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(
        (j["vmid"].as_u64(), j["node"].as_str(), j["type"].as_str()),
        (Some(101), Some("pve1"), Some("qemu"))
    );
    assert!(j["proof"].as_str().unwrap().contains("SMBIOS UUID"));
}
