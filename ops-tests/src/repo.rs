//! Paths and parsed files of the repository.

use std::path::{Path, PathBuf};

/// The workspace root (this crate's parent folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("ops-tests sits inside the workspace").to_path_buf()
}

/// A file of the repository, by path relative to the root.
pub fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

pub fn read(rel: &str) -> String {
    let p = path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

pub fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// Files of a folder of the repository whose names end with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(path(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *{suffix} file in {dir}");
    out
}

/// The dashboards Grafana provisions (grafana/dashboards/*.json), by file name.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    files("grafana/dashboards", ".json").into_iter().map(|f| (f.clone(), json(&f))).collect()
}

/// `TOPICS=("name:partitions" ...)` of a shell script, as (name, partitions).
pub fn shell_topics(rel: &str) -> Vec<(String, i32)> {
    let text = read(rel);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("TOPICS=("))
        .unwrap_or_else(|| panic!("{rel} has no TOPICS=( ... ) line"));
    let inner = line.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(l, _)| l).unwrap();
    inner
        .split_whitespace()
        .map(|t| {
            let t = t.trim_matches('"');
            let (name, parts) = t.split_once(':').unwrap_or_else(|| panic!("{rel}: {t:?} is not name:partitions"));
            (name.to_owned(), parts.parse().unwrap_or_else(|_| panic!("{rel}: bad partition count in {t:?}")))
        })
        .collect()
}

/// A string field of a YAML mapping, by a path of keys.
pub fn ystr<'a>(v: &'a serde_yaml::Value, keys: &[&str]) -> &'a str {
    let mut cur = v;
    for k in keys {
        cur = cur.get(*k).unwrap_or_else(|| panic!("missing key {k:?} (path {keys:?})"));
    }
    cur.as_str().unwrap_or_else(|| panic!("{keys:?} is not a string: {cur:?}"))
}
