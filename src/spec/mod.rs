//! Experiment specs: strict YAML parsing into a validated [`Spec`] whose grid is expanded into fully resolved
//! [`Cell`]s. Every error names the file, line, column and offending text, before any stage runs.

pub mod config;
pub mod grid;
pub mod layout;
pub mod metric;
pub mod overrides;

pub use config::RunConfig;
pub use grid::format_value;
pub use layout::ReportLayout;
pub use metric::{PerMetric, ReportMetric};
pub use overrides::Override;

use crate::yamlpos::{Pos, PosIndex, split_serde_error};
use grid::{Assignment, Axis, GridSpec};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// A bad spec: where, what, and the source line it points at.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub message: String,
    pub source_line: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.column,
                self.message
            )?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if let (Some(p), Some(line)) = (self.pos, &self.source_line) {
            // A long line is shown up to a little past the column.
            const SHOWN: usize = 100;
            let skip = p.column.saturating_sub(SHOWN);
            let mut shown: String = line.chars().skip(skip).take(SHOWN + 20).collect();
            if skip > 0 {
                shown.insert(0, '…');
            }
            if line.chars().count() > skip + SHOWN + 20 {
                shown.push('…');
            }
            let gutter = p.line.to_string();
            write!(
                f,
                "\n {gutter} | {shown}\n {} | {}^",
                " ".repeat(gutter.len()),
                " ".repeat(p.column.saturating_sub(1) - skip + usize::from(skip > 0))
            )?;
        }
        Ok(())
    }
}

/// One grid point: its readable name, the axis values that made it (spec order, `seed` last) and its resolved
/// configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub name: String,
    pub axes: Assignment,
    pub config: RunConfig,
}

impl Cell {
    pub fn seed(&self) -> u64 {
        self.config.train.seed
    }
}

/// A cell's name without its seed (`head=mgat,gamma=1,seed=2` → `head=mgat,gamma=1`): what tables average over
/// seeds by and what `mgat diff` joins on. A spec without axes has the one group `base`.
pub fn group_name(cell_name: &str) -> &str {
    let seed = format!("{}=", grid::SEED);
    match cell_name.rsplit_once(',') {
        Some((group, last)) if last.starts_with(&seed) => group,
        None if cell_name.starts_with(&seed) => "base",
        _ => cell_name,
    }
}

/// A parsed, validated and expanded spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// Manual salt mixed into every stage key of this spec.
    pub version: Option<String>,
    pub base: RunConfig,
    /// The `--set` overrides its base was loaded with.
    pub overrides: Vec<Override>,
    /// Grid axis paths in spec order (without `seed`).
    pub axes: Vec<String>,
    pub cells: Vec<Cell>,
    /// How reports lay out this spec's results (the `report:` section with its defaults).
    pub report: ReportLayout,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<Value>,
    base: RunConfig,
    #[serde(default)]
    grid: IndexMap<String, Vec<Value>>,
    #[serde(default)]
    zip: Vec<Vec<String>>,
    #[serde(default)]
    include: Vec<IndexMap<String, Value>>,
    #[serde(default)]
    exclude: Vec<IndexMap<String, Value>>,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
    #[serde(default)]
    report: layout::RawLayout,
}

fn default_seeds() -> Vec<u64> {
    vec![1]
}

/// The longest spec name: it names a folder (`reports/<name>/`) and appears in figure titles.
const MAX_NAME: usize = 100;

impl Spec {
    /// Reads, validates and expands the spec at `path`, with `overrides` (`--set`) set in its base.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Spec, SpecError> {
        let text = crate::inputfile::read_text_bounded(path, crate::inputfile::limit::TEXT_CONFIG)
            .map_err(|e| SpecError {
                file: path.to_path_buf(),
                pos: None,
                message: format!("cannot read spec: {e}"),
                source_line: None,
            })?;
        Self::parse(path, &text, overrides)
    }

    /// Loads several specs, each with `overrides`, refusing two with the same `name`: both would write
    /// `reports/<name>/`.
    pub fn load_all(
        paths: &[impl AsRef<Path>],
        overrides: &[Override],
    ) -> Result<Vec<Spec>, SpecError> {
        let mut specs: Vec<Spec> = Vec::new();
        for path in paths {
            let spec = Spec::load(path.as_ref(), overrides)?;
            if let Some(first) = specs.iter().find(|s| s.name == spec.name) {
                let message = format!(
                    "spec name `{}` is also the name of {}: both would write reports/{}/",
                    spec.name,
                    first.path.display(),
                    spec.name
                );
                return Err(spec.error_at(&["name"], message));
            }
            specs.push(spec);
        }
        Ok(specs)
    }

    /// Validates and expands a spec given as text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str, overrides: &[Override]) -> Result<Spec, SpecError> {
        Parser {
            file: path,
            text,
            index: PosIndex::new(text),
            overrides,
        }
        .parse()
    }

    /// The spec's text as read.
    pub fn source(&self) -> &str {
        &self.text
    }

    /// The cell with this exact name.
    pub fn cell(&self, name: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.name == name)
    }

    /// An error about the node at `path` (YAML path segments) of this spec's file, found after parsing.
    pub fn error_at(&self, path: &[&str], message: String) -> SpecError {
        Parser {
            file: &self.path,
            text: &self.text,
            index: PosIndex::new(&self.text),
            overrides: &[],
        }
        .at(path, message)
    }
}

/// The position of the first alias (`*name` after a space, `[`, `,` or `:`) in `text`.
fn first_alias(text: &str) -> Option<Pos> {
    text.lines().enumerate().find_map(|(n, line)| {
        line.char_indices()
            .find(|&(i, c)| {
                c == '*'
                    && (i == 0 || line[..i].ends_with([' ', '[', ',', ':']))
                    && line[i + 1..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
            .map(|(i, _)| Pos {
                line: n + 1,
                column: i + 1,
            })
    })
}

struct Parser<'a> {
    file: &'a Path,
    text: &'a str,
    index: PosIndex,
    overrides: &'a [Override],
}

impl Parser<'_> {
    fn parse(&self) -> Result<Spec, SpecError> {
        if self.text.starts_with('\u{feff}') {
            return Err(self.error(
                Some(Pos { line: 1, column: 1 }),
                "the file starts with a byte-order mark (U+FEFF); save it as UTF-8 without one"
                    .into(),
            ));
        }
        if let Some(pos) = self.index.too_deep {
            return Err(self.error(Some(pos), crate::yamlpos::too_deep_message()));
        }
        if let Some((pos, message)) = &self.index.syntax {
            return Err(self.error(Some(*pos), message.clone()));
        }
        if let Some(d) = &self.index.duplicate {
            let within = if d.mapping.is_empty() {
                "the spec".to_string()
            } else {
                format!("`{}`", d.mapping.join("."))
            };
            return Err(self.error(
                Some(d.pos),
                format!("duplicate key `{}` in {within}", d.key),
            ));
        }
        let raw: RawSpec = serde_yaml::from_str(self.text).map_err(|e| self.serde_error(&e))?;
        self.check_name(&raw.name)?;
        let version = raw
            .version
            .as_ref()
            .map(|v| self.scalar_text(v, &["version"]))
            .transpose()?;
        self.check_config(&raw.base, &["base"])?;
        let axes: Vec<String> = raw.grid.keys().cloned().collect();
        let base = match self.overrides {
            [] => raw.base,
            _ => self.overridden(&raw.base, &axes)?,
        };
        let base_value =
            serde_yaml::to_value(&base).map_err(|e| self.at(&["base"], e.to_string()))?;

        for (path, values) in &raw.grid {
            self.check_path(&base_value, path, &["grid", path])?;
            for (i, v) in values.iter().enumerate() {
                self.apply(
                    &base_value,
                    &[(path.clone(), v.clone())],
                    &["grid", path, &i.to_string()],
                )?;
            }
        }
        // An exclude value must be a value its field can take, as a grid or include value must.
        for (i, entry) in raw.exclude.iter().enumerate() {
            for (path, v) in entry.iter().filter(|(k, _)| *k != grid::SEED) {
                let at = ["exclude".to_string(), i.to_string(), path.clone()];
                let at: Vec<&str> = at.iter().map(String::as_str).collect();
                if raw.grid.contains_key(path) {
                    self.apply(&base_value, &[(path.clone(), v.clone())], &at)?;
                }
            }
        }
        for (i, entry) in raw.include.iter().enumerate() {
            for (path, v) in entry.iter().filter(|(k, _)| *k != grid::SEED) {
                let at = ["include".to_string(), i.to_string(), path.clone()];
                let at: Vec<&str> = at.iter().map(String::as_str).collect();
                self.check_path(&base_value, path, &at)?;
                self.apply(&base_value, &[(path.clone(), v.clone())], &at)?;
            }
        }

        let grid = GridSpec {
            axes: raw
                .grid
                .iter()
                .map(|(p, vs)| Axis {
                    path: p.clone(),
                    values: vs.clone(),
                })
                .collect(),
            zip: raw.zip.clone(),
            include: raw
                .include
                .iter()
                .map(|m| m.clone().into_iter().collect())
                .collect(),
            exclude: raw
                .exclude
                .iter()
                .map(|m| m.clone().into_iter().collect())
                .collect(),
            seeds: raw.seeds.clone(),
        };
        if raw.seeds.is_empty() {
            return Err(self.at(&["seeds"], "seeds is empty: list at least one seed".into()));
        }
        let points = grid::expand(&grid, |p| {
            get_path(&base_value, p).cloned().unwrap_or(Value::Null)
        })
        .map_err(|e| {
            let at: Vec<&str> = e.path.iter().map(String::as_str).collect();
            self.at(&at, e.message)
        })?;
        let cells = points
            .into_iter()
            .map(|point| {
                let overrides: Vec<(String, Value)> = point
                    .values
                    .iter()
                    .map(|(k, v)| {
                        if k == grid::SEED {
                            ("train.seed".to_string(), v.clone())
                        } else {
                            (k.clone(), v.clone())
                        }
                    })
                    .collect();
                let config = self.apply(&base_value, &overrides, &["grid"])?;
                Ok(Cell {
                    name: point.name,
                    axes: point.values,
                    config,
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let report = raw.report.resolve(&cells).map_err(|e| {
            let at: Vec<&str> = e.at.iter().map(String::as_str).collect();
            self.at(&at, e.message)
        })?;

        Ok(Spec {
            path: self.file.to_path_buf(),
            name: raw.name,
            description: raw.description,
            version,
            base,
            overrides: self.overrides.to_vec(),
            axes,
            cells,
            report,
            text: self.text.to_string(),
        })
    }

    /// `base` with the `--set` overrides, typed and range-checked; an error names the argument to blame.
    fn overridden(&self, base: &RunConfig, axes: &[String]) -> Result<RunConfig, SpecError> {
        let written = serde_yaml::to_value(base).map_err(|e| self.at(&["base"], e.to_string()))?;
        let value = overrides::set_all(&written, self.overrides, axes)
            .map_err(|(o, reason)| self.override_error(o, reason))?;
        // Set one at a time, so that a value of the wrong type is blamed on its own argument.
        for (n, o) in self.overrides.iter().enumerate() {
            let partial = overrides::set_all(&written, &self.overrides[..=n], axes)
                .map_err(|(o, reason)| self.override_error(o, reason))?;
            if let Err(e) = serde_yaml::from_value::<RunConfig>(partial) {
                return Err(self.override_error(o, split_serde_error(&e).1));
            }
        }
        let config: RunConfig = serde_yaml::from_value(value)
            .map_err(|e| self.at(&["base"], split_serde_error(&e).1))?;
        match config.invalid_values().into_iter().next() {
            None => Ok(config),
            Some(bad) => {
                // The override that set the field, or the section it is in (`eval.rerank={k1: 0, …}`).
                let blamed =
                    self.overrides.iter().rev().find(|o| {
                        bad.path == o.path || bad.path.starts_with(&format!("{}.", o.path))
                    });
                let message = format!(
                    "{}: invalid value `{}`: expected {}",
                    bad.path, bad.value, bad.expected
                );
                Err(match blamed {
                    Some(o) => self.override_error(o, message),
                    None => self.at(&["base"], message),
                })
            }
        }
    }

    /// An error in a `--set` argument, named as the user typed it.
    fn override_error(&self, o: &Override, reason: String) -> SpecError {
        SpecError {
            file: self.file.to_path_buf(),
            pos: None,
            message: format!("--set {}: {reason}", o.arg),
            source_line: None,
        }
    }

    /// Sets `overrides` into the base and deserialises and validates the result, pointing errors at `at`.
    fn apply(
        &self,
        base: &Value,
        overrides: &[(String, Value)],
        at: &[&str],
    ) -> Result<RunConfig, SpecError> {
        let mut value = base.clone();
        for (path, v) in overrides {
            if let Some(slot) = get_path_mut(&mut value, path) {
                *slot = v.clone();
            }
        }
        let config: RunConfig = serde_yaml::from_value(value).map_err(|e| {
            let shown = overrides
                .iter()
                .map(|(p, v)| format!("{p} = {}", format_value(v)))
                .collect::<Vec<_>>()
                .join(", ");
            let mut message = split_serde_error(&e).1;
            if let ([(path, _)], true) = (overrides, message.contains("the setting's names")) {
                message = choices(base, path).map_or(message, |c| format!("expected one of {c}"));
            }
            self.at(at, format!("{shown}: {message}"))
        })?;
        // The base is valid, so whatever is out of range now was caused by the overrides at `at`.
        self.check_config(&config, at)?;
        Ok(config)
    }

    /// Reports the first range violation at `at`, or at the violating field itself when `at` is `["base"]`.
    fn check_config(&self, config: &RunConfig, at: &[&str]) -> Result<(), SpecError> {
        let Some(bad) = config.invalid_values().into_iter().next() else {
            return Ok(());
        };
        let message = format!(
            "{}: invalid value `{}`: expected {}",
            bad.path, bad.value, bad.expected
        );
        let mut at = at.to_vec();
        if at == ["base"] {
            at.extend(bad.path.split('.'));
        }
        Err(self.at(&at, message))
    }

    fn check_path(&self, base: &Value, path: &str, at: &[&str]) -> Result<(), SpecError> {
        match get_path(base, path) {
            Some(Value::Mapping(_)) => Err(self.at(
                at,
                format!("`{path}` is a section, not a setting: name a field inside it"),
            )),
            Some(_) if path == "train.seed" => Err(self.at(
                at,
                "`train.seed` is set by `seeds`: list seeds there".into(),
            )),
            Some(_) => Ok(()),
            None => Err(self.at(
                at,
                format!("`{path}` is not a setting of `base` (paths are like `model.gamma`)"),
            )),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), SpecError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !name.starts_with('.');
        if ok {
            return Ok(());
        }
        Err(self.at(&["name"], format!("invalid name `{name}`: expected up to {MAX_NAME} letters, digits, `.`, `_` or `-` (it names reports/<name>/)")))
    }

    fn scalar_text(&self, v: &Value, at: &[&str]) -> Result<String, SpecError> {
        match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(format_value(v)),
            _ => Err(self.at(
                at,
                format!(
                    "invalid value `{}`: expected a string or number",
                    format_value(v)
                ),
            )),
        }
    }

    fn at(&self, path: &[&str], message: String) -> SpecError {
        let path: Vec<String> = path
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect();
        self.error(self.index.find(&path), message)
    }

    fn serde_error(&self, e: &serde_yaml::Error) -> SpecError {
        let (pos, message) = split_serde_error(e);
        // serde_yaml gives an alias bomb no position: point at the first alias.
        match (pos, message.contains("repetition limit exceeded")) {
            (None, true) => self.error(
                first_alias(self.text),
                "aliases (`*name`) expand to too many values: a spec needs no more than a few"
                    .into(),
            ),
            _ => self.error(pos, message),
        }
    }

    fn error(&self, pos: Option<Pos>, message: String) -> SpecError {
        let source_line = pos
            .and_then(|p| self.text.lines().nth(p.line.saturating_sub(1)))
            .map(str::to_string);
        SpecError {
            file: self.file.to_path_buf(),
            pos,
            message,
            source_line,
        }
    }
}

/// The names an enumerated setting accepts (`` `none`, `gat`, `mgat` ``), as serde lists them for an unknown one.
fn choices(base: &Value, path: &str) -> Option<String> {
    let mut probe = base.clone();
    *get_path_mut(&mut probe, path)? = Value::String("\u{1}".into());
    let text = serde_yaml::from_value::<RunConfig>(probe)
        .err()?
        .to_string();
    let list = text.split("expected one of ").nth(1)?;
    Some(list.split(" at line ").next().unwrap_or(list).to_string())
}

/// The value at a dotted path in a YAML mapping tree.
pub fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(root, |node, key| node.as_mapping()?.get(key))
}

pub(crate) fn get_path_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(root, |node, key| node.as_mapping_mut()?.get_mut(key))
}

/// The configuration `config` (a serialised [`RunConfig`]) would be with `value` at the existing setting `path`, or
/// why it would not be one (a value of another type, out of range).
pub fn config_with(config: &Value, path: &str, value: &Value) -> Result<RunConfig, String> {
    let mut probe = config.clone();
    *get_path_mut(&mut probe, path).ok_or_else(|| format!("`{path}` is not a setting"))? =
        value.clone();
    let parsed: RunConfig = serde_yaml::from_value(probe).map_err(|e| e.to_string())?;
    match parsed.invalid_values().first() {
        Some(invalid) => Err(format!(
            "{}: invalid value `{}`: expected {}",
            invalid.path, invalid.value, invalid.expected
        )),
        None => Ok(parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: ablation
base:
  dataset: {name: quickstart}
  model:
    backbone: resnet18
    gamma: 1.0
  train:
    batch_size: 32
    instances: 4
grid:
  model.head: [none, gat, mgat]
  model.gamma: [0.5, 2]
exclude:
  - {model.head: none, model.gamma: 2}
seeds: [1, 2]
";

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(Path::new("exp.yaml"), text, &[])
    }

    fn error_at(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.pos.map_or(0, |p| p.line), e.to_string())
    }

    #[test]
    fn expands_and_resolves_cells() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.cells.len(), 10);
        let cell = spec.cell("head=gat,gamma=2,seed=2").unwrap();
        assert_eq!(cell.config.model.gamma, 2.0);
        assert_eq!(cell.config.model.head, config::Head::Gat);
        assert_eq!(cell.config.train.seed, 2);
        assert_eq!(cell.config.model.backbone, config::Backbone::Resnet18);
        assert_eq!(spec.axes, ["model.head", "model.gamma"]);
    }

    #[test]
    fn unknown_key_reports_line_and_key() {
        let (line, msg) = error_at(&GOOD.replace("    gamma: 1.0", "    gama: 1.0"));
        assert_eq!(line, 6);
        assert!(msg.contains("unknown field `gama`"), "{msg}");
        assert!(msg.starts_with("exp.yaml:6:"), "{msg}");
    }

    #[test]
    fn wrong_type_reports_line() {
        let (line, msg) = error_at(&GOOD.replace("batch_size: 32", "batch_size: big"));
        assert_eq!(line, 8);
        assert!(msg.contains("big") || msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn out_of_range_base_value_reports_its_line_and_text() {
        let (line, msg) = error_at(&GOOD.replace("gamma: 1.0", "gamma: -1"));
        assert_eq!(line, 6);
        assert!(
            msg.contains("model.gamma: invalid value `-1`: expected a number > 0"),
            "{msg}"
        );
        assert!(msg.contains(" 6 |     gamma: -1"), "{msg}");
    }

    #[test]
    fn out_of_range_grid_value_reports_the_grid_line() {
        let (line, msg) = error_at(&GOOD.replace("[0.5, 2]", "[0.5, 0]"));
        assert_eq!(line, 12);
        assert!(msg.contains("model.gamma: invalid value `0`"), "{msg}");
        let (line, _) = error_at(&GOOD.replace("[none, gat, mgat]", "[none, gat, mga]"));
        assert_eq!(line, 11);
    }

    #[test]
    fn k_below_two_and_batch_not_p_times_k() {
        let (line, msg) = error_at(&GOOD.replace("instances: 4", "instances: 1"));
        assert_eq!(line, 9);
        assert!(msg.contains("K >= 2"), "{msg}");
        let (line, msg) = error_at(&GOOD.replace("batch_size: 32", "batch_size: 30"));
        assert_eq!(line, 8);
        assert!(msg.contains("P×K"), "{msg}");
    }

    #[test]
    fn negative_weight_is_rejected() {
        let text = GOOD.replace("    gamma: 1.0\n", "    gamma: 1.0\n    of_weight: -2\n");
        let (line, msg) = error_at(&text);
        assert_eq!(line, 7);
        assert!(msg.contains("of_weight"), "{msg}");
    }

    #[test]
    fn grid_path_missing_from_base_is_an_error() {
        let (line, msg) = error_at(&GOOD.replace("model.gamma: [0.5, 2]", "model.gama: [0.5, 2]"));
        assert_eq!(line, 12);
        assert!(
            msg.contains("`model.gama` is not a setting of `base`"),
            "{msg}"
        );
        let (line, msg) = error_at(&GOOD.replace("model.gamma: [0.5, 2]", "model: [0.5, 2]"));
        assert_eq!(line, 12);
        assert!(msg.contains("section"), "{msg}");
    }

    #[test]
    fn an_exclude_value_of_the_wrong_type_reports_its_line() {
        let (line, msg) = error_at(&GOOD.replace(
            "{model.head: none, model.gamma: 2}",
            "{model.head: 5, model.gamma: 2}",
        ));
        assert_eq!(line, 14, "{msg}");
        assert!(msg.contains("model.head"), "{msg}");
    }

    #[test]
    fn exclude_of_a_non_axis_reports_its_line() {
        let (line, msg) =
            error_at(&GOOD.replace("{model.head: none, model.gamma: 2}", "{train.lr: 0.1}"));
        assert_eq!(line, 14);
        assert!(msg.contains("not a grid axis"), "{msg}");
    }

    #[test]
    fn syntax_error_reports_line() {
        let (line, _) = error_at("name: x\nbase: [\n");
        assert!(line >= 2);
    }

    #[test]
    fn bad_name_is_rejected() {
        let (line, _) = error_at(&GOOD.replace("name: ablation", "name: a/b"));
        assert_eq!(line, 1);
    }

    #[test]
    fn report_layout_defaults_to_last_axis_as_columns() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.report.rows, ["model.head"]);
        assert_eq!(spec.report.columns, ["model.gamma"]);
        assert_eq!(
            spec.report.metrics,
            [ReportMetric::Rank1, ReportMetric::Map]
        );
        assert_eq!(spec.report.sweeps, ["model.gamma"]);
    }

    #[test]
    fn report_layout_as_written() {
        let text =
            format!("{GOOD}report:\n  columns: [model.head]\n  metrics: [mINP]\n  sweeps: []\n");
        let spec = parse(&text).unwrap();
        assert_eq!(spec.report.rows, ["model.gamma"]);
        assert_eq!(spec.report.columns, ["model.head"]);
        assert_eq!(spec.report.metrics, [ReportMetric::Minp]);
        assert!(spec.report.sweeps.is_empty());
    }

    #[test]
    fn report_layout_errors_point_at_the_value() {
        let (line, msg) = error_at(&format!("{GOOD}report:\n  rows: [model.lr]\n"));
        assert_eq!(line, 17);
        assert!(msg.contains("`model.lr` is not an axis"), "{msg}");
        let (line, msg) = error_at(&format!("{GOOD}report:\n  metrics: [rank1, top5]\n"));
        assert_eq!(line, 17);
        assert!(msg.contains("unknown metric `top5`"), "{msg}");
        let (line, msg) = error_at(&format!("{GOOD}report:\n  sweeps:\n    - model.head\n"));
        assert_eq!(line, 18);
        assert!(msg.contains("not a numeric axis"), "{msg}");
        let (_, msg) = error_at(&format!(
            "{GOOD}report:\n  rows: [model.head]\n  columns: []\n"
        ));
        assert!(msg.contains("axis `model.gamma` is neither"), "{msg}");
        let (line, msg) = error_at(&format!(
            "{GOOD}report:\n  baseline: {{model.head: nope}}\n"
        ));
        assert_eq!(line, 17);
        assert!(msg.contains("no cell has model.head = nope"), "{msg}");
        let (_, msg) = error_at(&format!("{GOOD}report:\n  baseline: {{train.lr: 1}}\n"));
        assert!(msg.contains("`train.lr` is not an axis"), "{msg}");
    }

    #[test]
    fn the_baseline_defaults_to_the_plain_backbone() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(
            spec.report.baseline,
            [("model.head".to_string(), "none".to_string())]
        );
        let text = GOOD.replace("[none, gat, mgat]", "[gat, mgat]");
        let spec = parse(&text).unwrap();
        assert!(spec.report.baseline.is_empty());
    }

    #[test]
    fn group_name_drops_the_seed() {
        assert_eq!(group_name("head=mgat,gamma=1,seed=2"), "head=mgat,gamma=1");
        assert_eq!(group_name("seed=3"), "base");
        assert_eq!(group_name("head=mgat"), "head=mgat");
    }
}
