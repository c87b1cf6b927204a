use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkubelet-credprov-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    dir
}

/// A plugin script that counts its runs in `<dir>/runs`, keeps its request in
/// `<dir>/request` and answers `answer`.
fn plugin(dir: &Path, name: &str, answer: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\ncat > {dir}/request\necho run >> {dir}/runs\necho \"$EXTRA\" > {dir}/env\ncat <<'EOF'\n{answer}\nEOF\n",
        dir = dir.display()
    );
    let path = dir.join("bin").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn config(dir: &Path, yaml: &str) -> Result<CredentialProviders, ProviderError> {
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    CredentialProviders::load(&dir.join("config.yaml"), &dir.join("bin"))
}

const CONFIG: &str = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-login
    matchImages: ["*.dkr.ecr.*.amazonaws.com", "registry.example:5000/team"]
    defaultCacheDuration: 12h
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["get-credentials"]
    env:
      - name: EXTRA
        value: from-config
"#;

#[test]
fn match_images_as_upstream_urls_match() {
    let cases = [
        (
            "*.dkr.ecr.*.amazonaws.com",
            "123.dkr.ecr.us-east-1.amazonaws.com/app:v1",
            true,
        ),
        (
            "*.dkr.ecr.*.amazonaws.com",
            "dkr.ecr.us-east-1.amazonaws.com/app",
            false,
        ),
        ("*.azurecr.io", "team.azurecr.io/app", true),
        ("*.azurecr.io", "a.team.azurecr.io/app", false),
        (
            "registry.example:5000/team",
            "registry.example:5000/team/app:1",
            true,
        ),
        (
            "registry.example:5000/team",
            "registry.example:5000/other/app",
            false,
        ),
        ("registry.example:5000", "registry.example/app", false),
        ("registry.example", "registry.example:5000/app", false),
        ("https://gcr.io", "gcr.io/project/app", true),
        ("gcr.io", "gcr.io/project/app@sha256:abcd", true),
        ("*.gcr.io", "gcr.io/project/app", false),
        ("pkg.dev", "us-docker.pkg.dev/p/r/i", false),
        ("*-docker.pkg.dev", "us-docker.pkg.dev/p/r/i", true),
    ];
    for (glob, image, want) in cases {
        assert_eq!(urls_match(glob, image), want, "{glob} vs {image}");
    }
    assert_eq!(registry_of("nginx:1.25"), "docker.io");
    assert_eq!(registry_of("library/nginx"), "docker.io");
    assert_eq!(registry_of("localhost/app"), "localhost");
    assert_eq!(
        registry_of("registry.example:5000/team/app"),
        "registry.example:5000"
    );
}

#[test]
fn a_plugins_answer_becomes_credentials_and_is_cached_per_key_type() {
    let dir = scratch("answer");
    plugin(
        &dir,
        "ecr-login",
        r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1h","auth":{"*.dkr.ecr.*.amazonaws.com":{"username":"AWS","password":"token-1"},"other.example":{"username":"x","password":"y"}}}"#,
    );
    let providers = config(&dir, CONFIG).unwrap();
    let image = "123.dkr.ecr.us-east-1.amazonaws.com/app:v1";
    let creds = providers.credentials(image);
    assert_eq!(
        creds.len(),
        1,
        "only the keys matching the image: {creds:?}"
    );
    assert_eq!(creds[0].get_username(), "AWS");
    assert_eq!(creds[0].get_password(), "token-1");
    assert_eq!(creds[0].get_server_address(), "*.dkr.ecr.*.amazonaws.com");
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("request")).unwrap()).unwrap();
    assert_eq!(
        request,
        serde_json::json!({"kind": "CredentialProviderRequest",
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "image": image})
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("env")).unwrap().trim(),
        "from-config"
    );
    // Another image of the same registry: the cached answer (cacheKeyType Registry).
    assert_eq!(
        providers
            .credentials("123.dkr.ecr.us-east-1.amazonaws.com/db:2")
            .len(),
        1
    );
    assert_eq!(runs(&dir), 1);
    // An image no matchImages entry covers never runs the plugin.
    assert!(providers
        .credentials("docker.io/library/busybox")
        .is_empty());
    assert_eq!(runs(&dir), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_keys_zero_durations_and_bad_answers() {
    let dir = scratch("keys");
    // cacheKeyType Image with the provider's default duration: per image.
    plugin(
        &dir,
        "ecr-login",
        r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","auth":{"registry.example:5000":{"username":"u","password":"p"}}}"#,
    );
    let providers = config(&dir, CONFIG).unwrap();
    assert_eq!(
        providers.credentials("registry.example:5000/team/a").len(),
        1
    );
    assert_eq!(
        providers.credentials("registry.example:5000/team/a").len(),
        1
    );
    assert_eq!(runs(&dir), 1);
    assert_eq!(
        providers.credentials("registry.example:5000/team/b").len(),
        1
    );
    assert_eq!(runs(&dir), 2);
    // cacheDuration 0: never cached.
    plugin(
        &dir,
        "ecr-login",
        r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Global","cacheDuration":"0s","auth":{"registry.example:5000":{"username":"u","password":"p"}}}"#,
    );
    let providers = config(&dir, CONFIG).unwrap();
    providers.credentials("registry.example:5000/team/a");
    providers.credentials("registry.example:5000/team/a");
    assert_eq!(runs(&dir), 4);
    // A mismatched apiVersion, a bad key type, a failing plugin: no credentials, no panic.
    for answer in [
        r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","cacheKeyType":"Image","auth":{}}"#,
        r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Pod","auth":{}}"#,
        "not json",
    ] {
        plugin(&dir, "ecr-login", answer);
        let providers = config(&dir, CONFIG).unwrap();
        assert!(
            providers
                .credentials("registry.example:5000/team/a")
                .is_empty(),
            "{answer}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_configs_are_rejected_naming_the_field() {
    let dir = scratch("invalid");
    plugin(&dir, "ecr-login", "{}");
    let cases = [
        (
            CONFIG.replace("kind: CredentialProviderConfig", "kind: Other"),
            "kind",
        ),
        (
            CONFIG.replace("kubelet.config.k8s.io/v1\n", "kubelet.config.k8s.io/v9\n"),
            "apiVersion",
        ),
        (
            CONFIG.replace("    defaultCacheDuration: 12h\n", ""),
            "defaultCacheDuration is required",
        ),
        (
            CONFIG.replace("defaultCacheDuration: 12h", "defaultCacheDuration: -1h"),
            "non-negative",
        ),
        (
            CONFIG.replace("name: ecr-login", "name: missing-plugin"),
            "did not exist",
        ),
        (
            CONFIG.replace("name: ecr-login", "name: ../ecr-login"),
            "cannot contain",
        ),
        (
            CONFIG.replace("    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", ""),
            "apiVersion is required",
        ),
        (
            CONFIG.replace(
                "credentialprovider.kubelet.k8s.io/v1\n",
                "credentialprovider.kubelet.k8s.io/v2\n",
            ),
            "unsupported apiVersion",
        ),
        (
            CONFIG.replace(
                "    args:",
                "    tokenAttributes: {serviceAccountTokenAudience: x}\n    args:",
            ),
            "tokenAttributes",
        ),
        (
            CONFIG.replace("    args:", "    unknownField: 1\n    args:"),
            "unknownField",
        ),
        (
            CONFIG.replace(
                "matchImages: [\"*.dkr.ecr.*.amazonaws.com\", \"registry.example:5000/team\"]",
                "matchImages: []",
            ),
            "matchImages",
        ),
        (
            format!("{CONFIG}{}", &CONFIG[CONFIG.find("  - name").unwrap()..]),
            "duplicate provider name",
        ),
    ];
    for (text, want) in cases {
        let e = config(&dir, &text).expect_err(want).to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(e.contains("config.yaml"), "names the file: {e}");
    }
    std::fs::remove_dir_all(dir.join("bin")).unwrap();
    let e = config(&dir, CONFIG).unwrap_err().to_string();
    assert!(e.contains("plugin binary directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
