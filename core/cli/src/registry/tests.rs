use super::*;

fn s(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn opts(default: Option<&str>, insecure: &[&str]) -> RegistryOptions {
    RegistryOptions::new(default, &s(insecure), false, None).expect("valid options")
}

#[test]
fn option_values_are_validated() {
    for (d, i, want) in [
        (Some("http://r:5000"), vec![], "without a scheme"),
        (Some("r:99999"), vec![], "port"),
        (Some("r:5000/Yocto"), vec![], "namespace"),
        (None, vec!["bad host:1"], "invalid host"),
        (None, vec![""], "empty"),
    ] {
        let e = RegistryOptions::new(d, &s(&i), false, None)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    let o = opts(Some("10.0.2.2:5000/yocto/"), &["r:1", "r:1", "q:2"]);
    assert_eq!(o.default_registry.as_deref(), Some("10.0.2.2:5000/yocto"));
    assert_eq!(o.default_host(), Some("10.0.2.2:5000"));
    // deduplicated, and the private default registry is insecure unless --secure-registry
    assert_eq!(o.insecure_hosts(), ["r:1", "q:2", "10.0.2.2:5000"]);
    let secure = RegistryOptions::new(Some("10.0.2.2:5000"), &[], true, None).expect("ok");
    assert!(secure.insecure_hosts().is_empty());
    assert!(!opts(Some("registry.example.com"), &[]).auto_insecure_default);
}

#[test]
fn podman_dropin_lists_search_order_and_insecure_hosts() {
    let text = podman_dropin(&opts(Some("10.0.2.2:5000"), &["h:1"]));
    assert!(text.contains("unqualified-search-registries = [\"10.0.2.2:5000\", \"docker.io\"]"));
    assert!(text.contains("location = \"h:1\"\ninsecure = true"));
    assert!(text.contains("location = \"10.0.2.2:5000\"\ninsecure = true"));
    // no options: still a file (it replaces an earlier command's settings), with no settings
    let empty = podman_dropin(&RegistryOptions::default());
    assert!(
        !empty.contains("[[registry]]") && !empty.contains("unqualified"),
        "{empty}"
    );
    assert!(empty.starts_with('#'));
}

#[test]
fn docker_daemon_json_keeps_the_baked_settings() {
    let base = r#"{"storage-driver":"overlay2","userland-proxy":false}"#;
    let text = docker_daemon_json(Some(base), &opts(None, &["10.0.2.2:5000"])).expect("json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
    assert_eq!(v["storage-driver"], "overlay2");
    assert_eq!(v["userland-proxy"], false);
    assert_eq!(v["insecure-registries"][0], "10.0.2.2:5000");
    let cleared = docker_daemon_json(Some(base), &RegistryOptions::default()).expect("json");
    let v: serde_json::Value = serde_json::from_str(&cleared).expect("parse");
    assert_eq!(v["insecure-registries"], serde_json::json!([]));
    assert!(docker_daemon_json(Some("[1]"), &RegistryOptions::default()).is_err());
}

#[test]
fn docker_setup_stages_daemon_json_and_passes_hosts_as_arguments() {
    let setup = guest_setup("docker", Some("{}"), &opts(None, &["h:1"]), "r1").expect("setup");
    assert_eq!(setup.pushes.len(), 1);
    assert_eq!(setup.pushes[0].0, GUEST_STAGING_DIR);
    let cmd = &setup.commands[0];
    assert_eq!(cmd[..2], s(&["sh", "-c"]));
    // values are positional parameters, never part of the script text
    assert!(!cmd[2].contains("h:1"));
    assert_eq!(
        cmd[3..],
        s(&["sh", "/run/vcontainer/registry/daemon.json", "h:1"])
    );
    assert!(setup.env.is_empty() && setup.cleanup.is_empty());
}

#[test]
fn auth_file_goes_to_a_per_command_dir_named_by_env() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("auth.json");
    std::fs::write(&p, br#"{"auths":{}}"#).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = RegistryOptions::new(None, &[], false, Some(&p)).expect("valid");

    let docker = guest_setup("docker", None, &o, "abc").expect("setup");
    assert_eq!(
        docker.env,
        [(
            "DOCKER_CONFIG".to_string(),
            "/run/vcontainer/auth/abc".to_string()
        )]
    );
    assert_eq!(docker.cleanup, ["/run/vcontainer/auth/abc"]);
    let (dir, payload) = docker.pushes.last().expect("auth push");
    assert_eq!(dir, "/run/vcontainer/auth/abc");
    assert_eq!(payload.entries()[0].name(), "config.json");
    // nothing of the credentials on any argv
    for argv in &docker.commands {
        assert!(argv.iter().all(|a| !a.contains("auths")));
    }

    let podman = guest_setup("podman", None, &o, "abc").expect("setup");
    assert_eq!(
        podman.env,
        [(
            "REGISTRY_AUTH_FILE".to_string(),
            "/run/vcontainer/auth/abc/auth.json".to_string()
        )]
    );
    assert_eq!(podman.pushes[0].0, PODMAN_DROPIN_DIR);
    assert!(podman.commands.is_empty());
}

#[test]
fn pull_of_an_unqualified_name_tries_the_default_registry_first() {
    let o = opts(Some("10.0.2.2:5000/yocto"), &[]);
    let tries = qualify_pull(&s(&["docker", "pull", "app:1"]), &o).expect("rewritten");
    assert_eq!(
        tries,
        vec![
            vec![
                s(&["docker", "pull", "10.0.2.2:5000/yocto/app:1"]),
                s(&["docker", "tag", "10.0.2.2:5000/yocto/app:1", "app:1"])
            ],
            vec![s(&["docker", "pull", "app:1"])]
        ]
    );
    assert!(qualify_pull(&s(&["docker", "pull", "quay.io/x/y"]), &o).is_none());
    assert!(qualify_pull(&s(&["docker", "run", "app"]), &o).is_none());
    assert!(qualify_pull(&s(&["docker", "pull", "app"]), &RegistryOptions::default()).is_none());
    // podman searches the registry itself when it has no namespace
    let plain = opts(Some("10.0.2.2:5000"), &[]);
    assert!(qualify_pull(&s(&["podman", "pull", "app"]), &plain).is_none());
    assert!(qualify_pull(&s(&["docker", "pull", "app"]), &plain).is_some());
}
