//! A spec's `report:` section: which axes form the rows and columns of its summary tables, which metrics they
//! show, and which numeric axes get a sweep figure, with the defaults used where the section is silent.

use super::grid::SEED;
use super::metric::ReportMetric;
use super::{Cell, format_value};
use serde::Deserialize;
use serde_yaml::Value;

/// The baseline of the "Δ vs baseline" table when the spec names none: the plain backbone, where it is a cell.
const DEFAULT_BASELINE: (&str, &str) = ("model.head", "none");

/// The `report:` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLayout {
    #[serde(default)]
    rows: Option<Vec<String>>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    metrics: Option<Vec<ReportMetric>>,
    #[serde(default)]
    sweeps: Option<Vec<String>>,
    /// The cells every other cell is compared with in the "Δ vs baseline" table: axis → value.
    #[serde(default)]
    baseline: Option<serde_yaml::Mapping>,
}

/// The resolved layout: every axis is either a row or a column axis.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportLayout {
    /// Every non-seed path the cells assign, in order of first appearance (grid axes, then include-only paths).
    pub axes: Vec<String>,
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    pub metrics: Vec<ReportMetric>,
    /// Numeric axes plotted as x: one line per combination of the other axes.
    pub sweeps: Vec<String>,
    /// Axis → value (as formatted in results.csv) selecting the baseline cells of the "Δ vs baseline" table;
    /// empty for no such table.
    pub baseline: Vec<(String, String)>,
}

/// A layout problem: the YAML path of the offending node and the message.
pub struct LayoutError {
    pub at: Vec<String>,
    pub message: String,
}

impl RawLayout {
    /// Resolves defaults against the cells: rows = all axes but the last, columns = the last (with two or more
    /// axes); metrics = rank-1 and mAP; sweeps = every axis whose values are all numbers, more than one;
    /// baseline = `model.head: none` when that is a value of an axis.
    pub fn resolve(&self, cells: &[Cell]) -> Result<ReportLayout, LayoutError> {
        let axes = axes_of(cells);
        self.check_names("rows", self.rows.as_deref(), &axes)?;
        self.check_names("columns", self.columns.as_deref(), &axes)?;
        let rest = |taken: &[String]| -> Vec<String> {
            axes.iter()
                .filter(|a| !taken.contains(a))
                .cloned()
                .collect()
        };
        let (rows, columns) = match (&self.rows, &self.columns) {
            (Some(r), Some(c)) => (r.clone(), c.clone()),
            (Some(r), None) => (r.clone(), rest(r)),
            (None, Some(c)) => (rest(c), c.clone()),
            (None, None) if axes.len() >= 2 => {
                let (last, head) = axes
                    .split_last()
                    .map_or((vec![], vec![]), |(l, h)| (vec![l.clone()], h.to_vec()));
                (head, last)
            }
            (None, None) => (axes.clone(), vec![]),
        };
        if let Some((i, twice)) = columns.iter().enumerate().find(|(_, c)| rows.contains(c)) {
            return Err(err(
                &["columns", &i.to_string()],
                format!("`{twice}` is already a row axis"),
            ));
        }
        if let Some(missing) = axes
            .iter()
            .find(|a| !rows.contains(a) && !columns.contains(a))
        {
            let at = if self.rows.is_some() {
                "rows"
            } else {
                "columns"
            };
            return Err(err(
                &[at],
                format!(
                    "axis `{missing}` is neither a row nor a column: seeds are the only axis a table averages over"
                ),
            ));
        }
        let metrics = self
            .metrics
            .clone()
            .unwrap_or_else(|| vec![ReportMetric::Rank1, ReportMetric::Map]);
        let numeric: Vec<&String> = axes.iter().filter(|a| is_numeric(cells, a)).collect();
        let sweeps = match &self.sweeps {
            Some(s) => {
                self.check_names("sweeps", Some(s), &axes)?;
                if let Some((i, bad)) = s.iter().enumerate().find(|(_, a)| !numeric.contains(a)) {
                    return Err(err(
                        &["sweeps", &i.to_string()],
                        format!("`{bad}` is not a numeric axis with two or more values"),
                    ));
                }
                s.clone()
            }
            None => numeric.into_iter().cloned().collect(),
        };
        let baseline = self.baseline(cells, &axes)?;
        Ok(ReportLayout {
            axes,
            rows,
            columns,
            metrics,
            sweeps,
            baseline,
        })
    }

    fn baseline(
        &self,
        cells: &[Cell],
        axes: &[String],
    ) -> Result<Vec<(String, String)>, LayoutError> {
        let has = |axis: &str, value: &str| {
            cells
                .iter()
                .flat_map(|c| &c.axes)
                .any(|(p, v)| p == axis && format_value(v) == value)
        };
        let Some(map) = &self.baseline else {
            return Ok(match has(DEFAULT_BASELINE.0, DEFAULT_BASELINE.1) {
                true => vec![(DEFAULT_BASELINE.0.into(), DEFAULT_BASELINE.1.into())],
                false => Vec::new(),
            });
        };
        let mut out = Vec::new();
        for (key, value) in map {
            let axis = format_value(key);
            let value = format_value(value);
            if !axes.contains(&axis) {
                return Err(err(
                    &["baseline", &axis],
                    format!(
                        "`{axis}` is not an axis of this spec: expected one of {}",
                        axes.join(", ")
                    ),
                ));
            }
            if !has(&axis, &value) {
                return Err(err(
                    &["baseline", &axis],
                    format!("no cell has {axis} = {value}"),
                ));
            }
            out.push((axis, value));
        }
        Ok(out)
    }

    fn check_names(
        &self,
        field: &str,
        names: Option<&[String]>,
        axes: &[String],
    ) -> Result<(), LayoutError> {
        for (i, name) in names.unwrap_or_default().iter().enumerate() {
            if !axes.contains(name) {
                let known = if axes.is_empty() {
                    "this spec has no axes besides seeds".to_string()
                } else {
                    format!("expected one of {}", axes.join(", "))
                };
                return Err(err(
                    &[field, &i.to_string()],
                    format!("`{name}` is not an axis of this spec: {known}"),
                ));
            }
        }
        Ok(())
    }
}

fn err(path: &[&str], message: String) -> LayoutError {
    let mut at = vec!["report".to_string()];
    at.extend(path.iter().map(|s| s.to_string()));
    LayoutError { at, message }
}

fn axes_of(cells: &[Cell]) -> Vec<String> {
    let mut axes: Vec<String> = Vec::new();
    for (path, _) in cells.iter().flat_map(|c| &c.axes) {
        if path != SEED && !axes.contains(path) {
            axes.push(path.clone());
        }
    }
    axes
}

fn is_numeric(cells: &[Cell], axis: &str) -> bool {
    let mut distinct: Vec<String> = Vec::new();
    for (_, v) in cells
        .iter()
        .flat_map(|c| &c.axes)
        .filter(|(p, _)| p == axis)
    {
        if !matches!(v, Value::Number(_)) {
            return false;
        }
        let text = format_value(v);
        if !distinct.contains(&text) {
            distinct.push(text);
        }
    }
    distinct.len() >= 2
}
