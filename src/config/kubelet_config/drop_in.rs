//! The `--config` file with the `--config-dir` drop-ins laid over it, as upstream's
//! `mergeKubeletConfigurations` does (main thread, at start-up).
//!
//! The `--config` file is read and given upstream's defaults (or, without one, the defaults
//! alone are the base). Then every `*.conf` file of the drop-in directory is read in the order
//! of Go's `filepath.WalkDir`: the entries of each directory sorted by name, a subdirectory's
//! files where its name sorts; other files are skipped. Each drop-in is a whole
//! KubeletConfiguration document (`kind` and `apiVersion` checked, fields decoded strictly,
//! relative paths resolved against the drop-in's own directory) laid over what came before
//! it as upstream lays its JSON: objects and maps merge key by key, lists and scalars
//! replace, and a field the drop-in leaves out keeps its value. Flags come on top later
//! (see [`crate::config::settings`]).
//!
//! Each file's values are checked on their own and errors name the file; checks that compare
//! values run once everything is laid (see [`super::sources`]).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::sources::{Source, Sources};
use super::validate::{validate_fields, InFile};
use super::{read, KubeletConfiguration};
use crate::config::error::ConfigError;
use crate::util::decode;

/// The extension of drop-in files; upstream compares Go's `filepath.Ext` with it.
pub const DROP_IN_EXTENSION: &str = ".conf";

/// The configuration from the `--config` file (if any) and the drop-ins of `dir` (if any),
/// with the sources of its values. Values are checked one by one; the relations between them
/// are left to the caller, which may lay flags on top first.
pub fn read_layers(
    file: Option<&Path>,
    dir: Option<&Path>,
) -> Result<(KubeletConfiguration, Sources), ConfigError> {
    let mut sources = Sources::default();
    let mut config = match file {
        Some(path) => {
            let config = read(path)?;
            validate_fields(&config, &InFile(path))?;
            sources.push(Source::File(path.to_path_buf()), to_json(&config, path)?);
            config
        }
        None => KubeletConfiguration::new(),
    };
    // Upstream decodes the file with its defaults before the drop-ins are merged, so a
    // default that depends on another field follows the file, not the drop-ins.
    config.set_defaults();
    let Some(dir) = dir else {
        return Ok((config, sources));
    };
    let mut merged = to_json(&config, dir)?;
    for path in drop_in_files(dir)? {
        let drop_in = read(&path)?;
        validate_fields(&drop_in, &InFile(&path))?;
        let doc = to_json(&drop_in, &path)?;
        merge_patch(&mut merged, &doc);
        sources.push(Source::File(path), doc);
    }
    let config =
        decode::from_value(merged.clone(), || merged).map_err(|err| ConfigError::Parse {
            file: dir.to_path_buf(),
            reason: format!("the merged drop-ins do not decode: {err}"),
        })?;
    Ok((config, sources))
}

/// The configuration as JSON, the form upstream merges drop-ins in.
fn to_json(config: &KubeletConfiguration, file: &Path) -> Result<Value, ConfigError> {
    serde_json::to_value(config).map_err(|err| ConfigError::Parse {
        file: file.to_path_buf(),
        reason: format!("cannot encode the configuration: {err}"),
    })
}

/// The drop-in files under `dir` in the order upstream applies them (`filepath.WalkDir`):
/// each directory's entries sorted by name, subdirectories walked where their name sorts,
/// symbolic links not followed below `dir`. A file is a drop-in when the part of its name
/// from the last dot is `.conf` (`.conf` alone included, as Go's `filepath.Ext` has it);
/// other files are skipped.
pub fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
    let read_error = |source| ConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        // The entry's own type: a symbolic link is not followed into a directory.
        if entry.file_type().map_err(read_error)?.is_dir() {
            walk(&path, files)?;
        } else if is_drop_in(&entry.file_name().to_string_lossy()) {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether a file name's extension, from its last dot, is `.conf`.
fn is_drop_in(name: &str) -> bool {
    name.rfind('.')
        .is_some_and(|dot| &name[dot..] == DROP_IN_EXTENSION)
}

/// Lays `patch` over `target` as upstream merges a drop-in's JSON: objects merge key by key,
/// anything else replaces what was there, and a `null` leaves the value as it is (upstream
/// decodes the merged document over the configuration it already has).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        if !patch.is_null() {
            target.clone_from(patch);
        }
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch.iter().filter(|(_, value)| !value.is_null()) {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::error::Origin;
    use crate::config::kubelet_config::test_support::HEADER;
    use crate::util::duration::GoDuration;

    /// A scratch directory of config files, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("rkubelet-drop-in-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `text` at `name` (directories created), returning the path.
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }

        /// A KubeletConfiguration document with `body` after the type header.
        fn config(&self, name: &str, body: &str) -> PathBuf {
            self.file(name, &format!("{HEADER}{body}"))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn drop_ins_are_the_conf_files_in_walk_order() {
        let s = Scratch::new("order");
        let d = s.0.join("conf.d");
        for name in [
            "20-b.conf",
            "10-a.conf",
            "15-sub/x.conf",
            "15-sub/y.txt",
            "README",
            ".conf",
            "a.conf.bak",
            "c.CONF",
            "9.conf",
        ] {
            s.file(&format!("conf.d/{name}"), "");
        }
        std::os::unix::fs::symlink(d.join("15-sub"), d.join("16-link")).unwrap();
        std::os::unix::fs::symlink(d.join("9.conf"), d.join("17-file.conf")).unwrap();
        let got: Vec<String> = drop_in_files(&d)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
            .collect();
        // Byte order: '.' < digits; a directory's files where its name sorts; a symbolic
        // link to a directory is not walked, one to a file is read.
        assert_eq!(
            got,
            [
                ".conf",
                "10-a.conf",
                "15-sub/x.conf",
                "17-file.conf",
                "20-b.conf",
                "9.conf"
            ]
        );
        let err = drop_in_files(&s.0.join("missing")).unwrap_err();
        assert!(matches!(err, ConfigError::ReadDir { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
        let not_a_dir = drop_in_files(&d.join("9.conf")).unwrap_err();
        assert!(matches!(not_a_dir, ConfigError::ReadDir { .. }));
    }

    #[test]
    fn merge_patch_merges_objects_and_replaces_the_rest() {
        let cases = [
            (
                json!({"a": 1, "b": 2}),
                json!({"b": 3}),
                json!({"a": 1, "b": 3}),
            ),
            (
                json!({"m": {"x": "1", "y": "2"}}),
                json!({"m": {"y": "3", "z": "4"}}),
                json!({"m": {"x": "1", "y": "3", "z": "4"}}),
            ),
            (
                json!({"l": [1, 2, 3]}),
                json!({"l": [4]}),
                json!({"l": [4]}),
            ),
            (json!({"a": {"b": 1}}), json!({"a": 5}), json!({"a": 5})),
            (
                json!({"a": 5}),
                json!({"a": {"b": 1}}),
                json!({"a": {"b": 1}}),
            ),
            (
                json!({"a": 1}),
                json!({"a": null, "b": {}}),
                json!({"a": 1, "b": {}}),
            ),
            (json!({"a": 1}), json!({}), json!({"a": 1})),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{patch}");
        }
    }

    #[test]
    fn drop_ins_are_laid_over_the_file_in_order() {
        let s = Scratch::new("merge");
        let file = s.config(
            "kubelet.yaml",
            "maxPods: 50\nclusterDNS: [10.0.0.10, 10.0.0.11]\n\
             evictionHard: {memory.available: 100Mi, nodefs.available: 10%}\n\
             authentication: {webhook: {enabled: false}}\nfeatureGates: {A: true}\n\
             registerNode: false\nstaticPodPath: manifests\n",
        );
        let dir = s.0.join("conf.d");
        s.config(
            "conf.d/10-first.conf",
            "maxPods: 60\nclusterDNS: [10.96.0.10]\n\
             evictionHard: {memory.available: 200Mi}\n\
             authentication: {webhook: {cacheTTL: 1m}}\nfeatureGates: {B: false}\n",
        );
        s.config("conf.d/20-second.conf", "maxPods: 70\n");
        s.config(
            "conf.d/30-paths/paths.conf",
            "tlsCertFile: pki/kubelet.crt\n",
        );
        s.file("conf.d/40-ignored.yaml", "not a drop-in: [");
        let (c, sources) = read_layers(Some(&file), Some(&dir)).unwrap();
        assert_eq!(c.max_pods, Some(70), "the last drop-in wins");
        assert_eq!(
            c.cluster_dns,
            Some(vec!["10.96.0.10".to_string()]),
            "lists replace"
        );
        let eviction = c.eviction_hard.as_ref().unwrap();
        assert_eq!(
            eviction["memory.available"], "200Mi",
            "maps merge key by key"
        );
        assert_eq!(eviction["nodefs.available"], "10%");
        assert_eq!(c.authentication.webhook.enabled, Some(false));
        assert_eq!(
            c.authentication.webhook.cache_ttl,
            Some(GoDuration::from_secs(60))
        );
        let gates = c.feature_gates.as_ref().unwrap();
        assert!(gates["A"] && !gates["B"]);
        assert_eq!(
            c.register_node,
            Some(false),
            "a field left out keeps its value"
        );
        assert_eq!(
            c.static_pod_path,
            Some(s.0.join("manifests").display().to_string()),
            "the file's relative paths follow the file"
        );
        assert_eq!(
            c.tls_cert_file,
            Some(dir.join("30-paths/pki/kubelet.crt").display().to_string()),
            "a drop-in's relative paths follow the drop-in"
        );
        // Defaults fill what no file set.
        assert_eq!(c.port, Some(10250));
        let names: Vec<_> = sources.sources().cloned().collect();
        assert_eq!(
            names,
            [
                Source::File(file.clone()),
                Source::File(dir.join("10-first.conf")),
                Source::File(dir.join("20-second.conf")),
                Source::File(dir.join("30-paths/paths.conf")),
            ]
        );
        // An empty directory changes nothing: the file with its defaults.
        let (alone, _) = read_layers(Some(&file), None).unwrap();
        fs::create_dir_all(s.0.join("empty")).unwrap();
        let (empty_dir, _) = read_layers(Some(&file), Some(&s.0.join("empty"))).unwrap();
        assert_eq!(alone, empty_dir);
        assert_eq!(alone.max_pods, Some(50));
    }

    #[test]
    fn dependent_defaults_follow_the_file_not_the_drop_ins() {
        let s = Scratch::new("defaults");
        s.config("d/10.conf", "nodeStatusUpdateFrequency: 20s\n");
        let (c, _) = read_layers(None, Some(&s.0.join("d"))).unwrap();
        assert_eq!(
            c.node_status_update_frequency,
            Some(GoDuration::from_secs(20))
        );
        assert_eq!(
            c.node_status_report_frequency,
            Some(GoDuration::from_secs(300))
        );
        let file = s.config("kubelet.yaml", "nodeStatusUpdateFrequency: 20s\n");
        let (c, _) = read_layers(Some(&file), None).unwrap();
        assert_eq!(
            c.node_status_report_frequency,
            Some(GoDuration::from_secs(20))
        );
    }

    #[test]
    fn a_bad_drop_in_is_an_error_naming_it() {
        let s = Scratch::new("errors");
        let cases: &[(&str, &str, &str)] = &[
            ("fooBar: 1\n", "", "unknown field `fooBar`"),
            ("maxPods: lots\n", "", "maxPods: invalid type"),
            ("maxPods: -1\n", "", "maxPods: invalid value \"-1\""),
            ("", "apiVersion: v1\nkind: Pod\n", "kind: invalid value"),
            (
                "",
                "kind: KubeletConfiguration\n",
                "apiVersion: invalid value",
            ),
            ("", " \n", "the file is empty"),
        ];
        for (i, (body, whole, want)) in cases.iter().enumerate() {
            let dir = s.0.join(format!("case-{i}"));
            s.config(&format!("case-{i}/10-good.conf"), "maxPods: 5\n");
            let bad = if whole.is_empty() {
                s.config(&format!("case-{i}/20-bad.conf"), body)
            } else {
                s.file(&format!("case-{i}/20-bad.conf"), whole)
            };
            let err = read_layers(None, Some(&dir)).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with(&bad.display().to_string()), "{message}");
            assert!(message.contains(want), "{message} lacks {want}");
        }
        let err = read_layers(None, Some(&s.0.join("nowhere"))).unwrap_err();
        assert!(matches!(err, ConfigError::ReadDir { .. }), "{err:?}");
        // Single values are checked per drop-in, so the error names the drop-in.
        s.config("range/10.conf", "imageGCHighThresholdPercent: 101\n");
        let Err(ConfigError::Invalid { origin, .. }) = read_layers(None, Some(&s.0.join("range")))
        else {
            panic!("out of range");
        };
        assert_eq!(
            origin,
            Origin::File {
                file: s.0.join("range/10.conf"),
                field: "imageGCHighThresholdPercent".into()
            }
        );
    }
}
