//! The registry glue without a VM: option checks, the podman drop-ins and docker daemon.json
//! it writes, CA certs, and credentials that become auth entries, never arguments.

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
    let text = registries_dropin(&opts(Some("10.0.2.2:5000"), &["h:1"]), "docker.io");
    assert!(text.contains("unqualified-search-registries = [\"10.0.2.2:5000\", \"docker.io\"]"));
    assert!(text.contains("location = \"h:1\"\ninsecure = true"));
    assert!(text.contains("location = \"10.0.2.2:5000\"\ninsecure = true"));
    // no options: still a file (it replaces an earlier command's settings), with no settings
    let empty = registries_dropin(&RegistryOptions::default(), "docker.io");
    assert!(
        !empty.contains("[[registry]]") && !empty.contains("unqualified"),
        "{empty}"
    );
    assert!(empty.starts_with('#'));
}

#[test]
fn docker_daemon_json_keeps_the_baked_settings() {
    let base = r#"{"storage-driver":"overlay2","userland-proxy":false}"#;
    let text = daemon_json(Some(base), &opts(None, &["10.0.2.2:5000"])).expect("json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
    assert_eq!(v["storage-driver"], "overlay2");
    assert_eq!(v["userland-proxy"], false);
    assert_eq!(v["insecure-registries"][0], "10.0.2.2:5000");
    let cleared = daemon_json(Some(base), &RegistryOptions::default()).expect("json");
    let v: serde_json::Value = serde_json::from_str(&cleared).expect("parse");
    assert_eq!(v["insecure-registries"], serde_json::json!([]));
    assert!(daemon_json(Some("[1]"), &RegistryOptions::default()).is_err());
}

use crate::test_specs::{docker, podman};

/// [`default_registry_plan`] for `plan` with `opts`, for the runtime of `spec`.
fn prefixed(
    plan: &vcontainer_abi::runtime::CommandPlan,
    opts: &RegistryOptions,
    spec: &vcontainer_abi::runtime::RuntimeSpec,
) -> Option<DefaultRegistry> {
    let setup = guest_setup(spec, opts, "r", None).expect("setup");
    default_registry_plan(plan, &setup)
}

fn plan(args: &[&str]) -> vcontainer_abi::runtime::CommandPlan {
    let dialect = vcontainer_runtime_kit::Dialect {
        binary: "docker",
        remove_after_exit: false,
    };
    vcontainer_runtime_kit::plan(&dialect, &s(args)).expect("plan")
}

fn podman_plan(args: &[&str]) -> vcontainer_abi::runtime::CommandPlan {
    let dialect = vcontainer_runtime_kit::Dialect {
        binary: "podman",
        remove_after_exit: true,
    };
    vcontainer_runtime_kit::plan(&dialect, &s(args)).expect("plan")
}

#[test]
fn docker_setup_stages_daemon_json_and_passes_hosts_as_arguments() {
    let setup = guest_setup(&docker(), &opts(None, &["h:1"]), "r1", None).expect("setup");
    let stage = setup.config.stage_dir();
    assert!(stage.starts_with(GUEST_STAGING_DIR), "{stage}");
    let payload = setup.config.payload();
    let names: Vec<&str> = payload.entries().iter().map(|e| e.name()).collect();
    assert!(names.contains(&"daemon.json"), "{names:?}");
    let cmds = setup.config.commands();
    let reload = cmds.last().expect("reload");
    assert_eq!(reload[..2], s(&["sh", "-c"]));
    // values are positional parameters, never part of the script text
    assert!(!reload[2].contains("h:1"));
    assert_eq!(
        reload[3..],
        s(&["sh", &format!("{stage}/daemon.json"), "h:1"])
    );
    // the plugin's own script applies it
    assert_eq!(reload[2], "apply-daemon-json");
    assert!(setup.env.is_empty() && setup.cleanup.is_empty() && setup.auth_push.is_none());
}

#[test]
fn fingerprint_changes_with_the_options_and_only_with_them() {
    let a = guest_setup(&podman(), &opts(None, &["h:1"]), "r1", None).expect("setup");
    let b = guest_setup(&podman(), &opts(None, &["h:1"]), "r2", None).expect("setup");
    let c = guest_setup(&podman(), &opts(None, &["h:2"]), "r1", None).expect("setup");
    assert_eq!(a.config.fingerprint(), b.config.fingerprint());
    assert_ne!(a.config.fingerprint(), c.config.fingerprint());
    // a VM that was just booted has the default options' configuration
    let d = guest_setup(&podman(), &RegistryOptions::default(), "r", None).expect("setup");
    assert_eq!(d.config.fingerprint(), a.boot_config.fingerprint());
    assert_ne!(a.config.fingerprint(), a.boot_config.fingerprint());
}

#[test]
fn install_script_renames_every_item_into_place() {
    let setup = guest_setup(&podman(), &opts(None, &["h:1"]), "r", None).expect("setup");
    let cmds = setup.config.commands();
    let install = &cmds[0];
    assert!(install[2].contains("mv -f -T \"$dest.vc-new\" \"$dest\""));
    assert_eq!(install[4], setup.config.stage_dir());
    assert_eq!(
        install[5..],
        s(&[
            "f",
            "i0",
            "/etc/containers/registries.conf.d/50-vcontainer.conf",
            "d",
            "i1",
            "/etc/containers/certs.d"
        ])
    );
}

#[test]
fn ca_cert_goes_to_certs_d_of_the_registry_and_makes_it_secure() {
    let d = tempfile::tempdir().expect("tmp");
    let pem = d.path().join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let o = opts(Some("10.0.2.2:5443"), &[])
        .with_ca_cert(&pem)
        .expect("valid cert");
    assert!(o.insecure_hosts().is_empty(), "a CA cert means TLS");
    for (runtime, dir) in [
        (docker(), "/etc/docker/certs.d"),
        (podman(), "/etc/containers/certs.d"),
    ] {
        let setup = guest_setup(&runtime, &o, "r", None).expect("setup");
        let tree = setup
            .config
            .items
            .iter()
            .find_map(|i| match i {
                ConfigItem::Tree { dest, files } if dest == dir => Some(files.clone()),
                _ => None,
            })
            .expect("certs tree");
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0].0, "10.0.2.2:5443/ca.crt");
        let names: Vec<String> = setup
            .config
            .payload()
            .entries()
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("/10.0.2.2:5443/ca.crt")),
            "{names:?}"
        );
    }
    // without a default registry, the registry the image names
    let o2 = RegistryOptions::default().with_ca_cert(&pem).expect("cert");
    let setup = guest_setup(&docker(), &o2, "r", Some("reg.example:5000/a/b:1")).expect("ok");
    assert!(format!("{:?}", setup.config.items).contains("reg.example:5000/ca.crt"));
    let e = guest_setup(&docker(), &o2, "r", Some("alpine")).expect_err("no registry");
    assert!(
        e.to_string().contains("--ca-cert applies to one registry"),
        "{e}"
    );
    // bad files are refused with the path
    std::fs::write(d.path().join("junk"), "hello").expect("write");
    for (path, want) in [
        (d.path().join("missing"), "file not found"),
        (d.path().to_path_buf(), "regular file"),
        (d.path().join("junk"), "not a PEM certificate"),
    ] {
        let e = RegistryOptions::default()
            .with_ca_cert(&path)
            .expect_err(want)
            .to_string();
        assert!(e.starts_with("--ca-cert "), "{e}");
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn credentials_become_an_auth_entry_never_an_argument() {
    let o = opts(Some("10.0.2.2:5000"), &[])
        .with_credentials(Some("tester"), Some("s3cret pass"))
        .expect("creds");
    for (runtime, file, var) in [
        (docker(), "config.json", "DOCKER_CONFIG"),
        (podman(), "auth.json", "REGISTRY_AUTH_FILE"),
    ] {
        let setup = guest_setup(&runtime, &o, "abc", None).expect("setup");
        let (dir, payload) = setup.auth_push.as_ref().expect("auth pushed");
        assert_eq!(dir, "/run/vcontainer/auth/abc");
        let entry = &payload.entries()[0];
        assert_eq!(entry.name(), file);
        let crate::vimport::payload::PayloadEntry::Bytes { data, mode, .. } = entry else {
            panic!("bytes entry");
        };
        assert_eq!(*mode, 0o600);
        let v: serde_json::Value = serde_json::from_slice(data).expect("json");
        assert_eq!(
            v["auths"]["10.0.2.2:5000"]["auth"],
            "dGVzdGVyOnMzY3JldCBwYXNz"
        );
        assert_eq!(setup.env[0].0, var);
        for argv in setup.config.commands() {
            assert!(argv.iter().all(|a| !a.contains("s3cret")));
        }
    }
    for (u, p, want) in [
        (Some("u"), None, "needs --registry-password"),
        (None, Some("p"), "needs --registry-user"),
        (Some("a:b"), Some("p"), "without ':'"),
    ] {
        let e = RegistryOptions::default()
            .with_credentials(u, p)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "{e}");
        assert!(!e.contains("\"p\""), "{e}");
    }
    let no_host = RegistryOptions::default()
        .with_credentials(Some("u"), Some("p"))
        .expect("creds");
    assert!(guest_setup(&docker(), &no_host, "r", Some("bb:1")).is_err());
}

#[test]
fn config_file_entries_win_over_credentials_with_a_note() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("auth.json");
    std::fs::write(
        &p,
        br#"{"auths":{"10.0.2.2:5000":{"auth":"b2xkOm9sZA=="},"other:1":{"auth":"eDp5"}}}"#,
    )
    .expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = RegistryOptions::new(Some("10.0.2.2:5000"), &[], false, Some(&p))
        .expect("valid")
        .with_credentials(Some("new"), Some("pw"))
        .expect("creds");
    let setup = guest_setup(&docker(), &o, "r", None).expect("setup");
    assert!(setup.notices.iter().any(|n| n.contains("take precedence")));
    let (_, payload) = setup.auth_push.as_ref().expect("auth");
    let crate::vimport::payload::PayloadEntry::Bytes { data, .. } = &payload.entries()[0] else {
        panic!("bytes");
    };
    let v: serde_json::Value = serde_json::from_slice(data).expect("json");
    assert_eq!(v["auths"]["10.0.2.2:5000"]["auth"], "b2xkOm9sZA==");
    assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
}

#[test]
fn auth_file_goes_to_a_per_command_dir_named_by_env() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("auth.json");
    std::fs::write(&p, br#"{"auths":{}}"#).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = RegistryOptions::new(None, &[], false, Some(&p)).expect("valid");

    let docker = guest_setup(&docker(), &o, "abc", None).expect("setup");
    assert_eq!(
        docker.env,
        [(
            "DOCKER_CONFIG".to_string(),
            "/run/vcontainer/auth/abc".to_string()
        )]
    );
    assert_eq!(docker.cleanup, ["/run/vcontainer/auth/abc"]);
    let (dir, payload) = docker.auth_push.as_ref().expect("auth push");
    assert_eq!(dir, "/run/vcontainer/auth/abc");
    assert_eq!(payload.entries()[0].name(), "config.json");
    // nothing of the credentials on any argv
    for argv in docker.config.commands() {
        assert!(argv.iter().all(|a| !a.contains("auths")));
    }

    let podman = guest_setup(&podman(), &o, "abc", None).expect("setup");
    assert_eq!(
        podman.env,
        [(
            "REGISTRY_AUTH_FILE".to_string(),
            "/run/vcontainer/auth/abc/auth.json".to_string()
        )]
    );
    assert!(podman.config.daemon_json.is_none());
}

#[test]
fn default_registry_applies_to_every_command_naming_an_unqualified_image() {
    let o = opts(Some("10.0.2.2:5000/yocto"), &[]);
    let tries = prefixed(&plan(&["pull", "-q", "app:1"]), &o, &docker()).expect("rewritten");
    assert_eq!(
        tries,
        DefaultRegistry::Pull(vec![
            vec![
                s(&["docker", "pull", "-q", "10.0.2.2:5000/yocto/app:1"]),
                s(&["docker", "tag", "10.0.2.2:5000/yocto/app:1", "app:1"])
            ],
            vec![s(&["docker", "pull", "-q", "app:1"])]
        ])
    );
    for args in [
        &["run", "--rm", "app:1", "echo"][..],
        &["create", "--name", "c", "app:1"],
        &["vrun", "app:1", "echo", "hi"],
    ] {
        assert_eq!(
            prefixed(&plan(args), &o, &docker()),
            Some(DefaultRegistry::PrePull {
                check: s(&["docker", "image", "inspect", "app:1"]),
                pull: s(&["docker", "pull", "10.0.2.2:5000/yocto/app:1"]),
                tag: s(&["docker", "tag", "10.0.2.2:5000/yocto/app:1", "app:1"]),
            }),
            "{args:?}"
        );
    }
    for args in [
        &["pull", "quay.io/x/y"][..],
        &["run", "localhost/x"],
        &["run", "app@sha256:0123456789abcdef"],
        &["run", "0123456789abcdef"],
        &["push", "app:1"],
        &["images"],
    ] {
        assert!(prefixed(&plan(args), &o, &docker()).is_none(), "{args:?}");
    }
    assert!(prefixed(
        &plan(&["pull", "app"]),
        &RegistryOptions::default(),
        &docker()
    )
    .is_none());
    // podman searches a plain registry host itself (unqualified-search-registries)
    let plain = opts(Some("10.0.2.2:5000"), &[]);
    assert!(prefixed(&podman_plan(&["pull", "app"]), &plain, &podman()).is_none());
    assert!(prefixed(&podman_plan(&["run", "app"]), &plain, &podman()).is_none());
    assert!(prefixed(&podman_plan(&["run", "app"]), &o, &podman()).is_some());
    assert!(prefixed(&plan(&["pull", "app"]), &plain, &docker()).is_some());
}
