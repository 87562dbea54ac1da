//! Reads what rustc recorded about one compilation: the `--extern` libraries of the running compilation, and the
//! dep-info file (`<crate>-<hash>.d`) rustc wrote beside each of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A file rustc read, and how it is named in a fingerprint: repo-relative, or `$OUT_DIR/…` for build-script output
/// (whose folder name changes with the build, not with the code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct File {
    pub label: String,
    pub path: PathBuf,
}

/// What one crate's compilation read: its files, and the environment variables it read (`NAME=value`, or `NAME`
/// when unset), sorted.
pub struct DepInfo {
    pub files: Vec<File>,
    pub env: Vec<String>,
}

/// Environment variables whose values name where the build happens, not what it computes.
const LOCATION_VARS: [&str; 4] = [
    "OUT_DIR",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_TARGET_TMPDIR",
];

/// Crate name → library path, from `--extern name=path` (or `--extern=name=path`) arguments.
pub fn externs(args: &[String]) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = match arg.strip_prefix("--extern") {
            Some("") => iter.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some((name, path)) = value.and_then(|v| v.split_once('=')) {
            out.insert(name.to_string(), PathBuf::from(path));
        }
    }
    out
}

/// The dep-info of the library at `lib` (`…/deps/libNAME-HASH.rlib` or `.rmeta` → `…/deps/NAME-HASH.d`).
pub fn read(lib: &Path) -> Result<DepInfo, String> {
    let stem = lib
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a library file name", lib.display()))?;
    let name = stem.strip_prefix("lib").unwrap_or(stem);
    let path = lib.with_file_name(format!("{name}.d"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read its dep-info {}: {e}", path.display()))?;
    let cwd = std::env::current_dir().unwrap_or_default();
    Ok(parse(&text, &cwd))
}

/// Parses a dep-info file: the prerequisites of its first rule, and its `# env-dep:` lines.
pub fn parse(text: &str, cwd: &Path) -> DepInfo {
    let mut env_vars = BTreeMap::new();
    for line in text.lines() {
        if let Some(dep) = line.strip_prefix("# env-dep:") {
            let (name, value) = dep
                .split_once('=')
                .map_or((dep, None), |(n, v)| (n, Some(v)));
            env_vars.insert(name.to_string(), value.map(unescape_env));
        }
    }
    let out_dir = env_vars
        .get("OUT_DIR")
        .cloned()
        .flatten()
        .map(PathBuf::from);
    let first_rule = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap_or_default();
    let prerequisites = split_rule(first_rule);
    let mut files: Vec<File> = prerequisites
        .into_iter()
        .map(|p| {
            let path = PathBuf::from(&p);
            File {
                label: label(&path, out_dir.as_deref(), cwd),
                path,
            }
        })
        .collect();
    files.sort();
    files.dedup();
    let env = env_vars
        .into_iter()
        .filter(|(name, _)| !LOCATION_VARS.contains(&name.as_str()))
        .map(|(name, value)| value.map_or(name.clone(), |v| format!("{name}={v}")))
        .collect();
    DepInfo { files, env }
}

/// The prerequisites of a `target: a b\ c` rule (a backslash escapes a space).
fn split_rule(line: &str) -> Vec<String> {
    let Some(colon) = find_rule_colon(line) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = line[colon + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' | '\t' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The colon ending a rule's target: the first `: ` (a target path may hold a colon only escaped or not followed by
/// a space).
fn find_rule_colon(line: &str) -> Option<usize> {
    line.find(": ")
        .or_else(|| line.strip_suffix(':').map(str::len))
}

/// rustc escapes newlines in env-dep values as `\n` and backslashes as `\\`.
fn unescape_env(value: &str) -> String {
    value.replace("\\n", "\n").replace("\\\\", "\\")
}

/// How a file is named in the fingerprint (see [`File`]).
fn label(path: &Path, out_dir: Option<&Path>, cwd: &Path) -> String {
    if let Some(rest) = out_dir.and_then(|o| path.strip_prefix(o).ok()) {
        return format!("$OUT_DIR/{}", rest.display());
    }
    let text = path.to_string_lossy();
    if let Some((_, rest)) = text
        .split_once("/build/")
        .and_then(|(_, r)| r.split_once("/out/"))
    {
        return format!("$OUT_DIR/{rest}");
    }
    match path.strip_prefix(cwd) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a dep-info file as rustc 1.95 writes it for a crate with an `include_bytes!`, a build-script
    // output and an `env!`.
    const SAMPLE: &str = "/w/target/release/deps/mgat_data-1.d: crates/data/src/lib.rs crates/data/src/a\\ b.bin /w/target/release/build/mgat-data-9/out/gen.rs /w/crates/data/table.txt\n\
\n\
/w/target/release/deps/libmgat_data-1.rlib: crates/data/src/lib.rs\n\
\n\
crates/data/src/lib.rs:\n\
\n\
# env-dep:OUT_DIR=/w/target/release/build/mgat-data-9/out\n\
# env-dep:MGAT_TABLE=v2\n\
# env-dep:UNSET_ONE\n";

    #[test]
    fn files_and_env_come_from_the_first_rule_and_env_dep_lines() {
        let info = parse(SAMPLE, Path::new("/w"));
        let labels: Vec<&str> = info.files.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "$OUT_DIR/gen.rs",
                "crates/data/src/a b.bin",
                "crates/data/src/lib.rs",
                "crates/data/table.txt"
            ]
        );
        assert_eq!(info.env, ["MGAT_TABLE=v2", "UNSET_ONE"]);
    }

    #[test]
    fn externs_take_both_argument_forms() {
        let args: Vec<String> = [
            "--extern",
            "a=/d/liba-1.rmeta",
            "--extern=b=/d/libb-2.rlib",
            "--cfg",
            "feature=\"x\"",
            "--extern",
            "noprelude:c",
        ]
        .map(String::from)
        .to_vec();
        let found = externs(&args);
        assert_eq!(found.get("a"), Some(&PathBuf::from("/d/liba-1.rmeta")));
        assert_eq!(found.get("b"), Some(&PathBuf::from("/d/libb-2.rlib")));
        assert_eq!(found.len(), 2);
    }
}
