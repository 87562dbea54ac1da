//! Grid expansion: axes (dotted paths into `base`) combined by product, `zip` groups that advance together,
//! `exclude` partial assignments removed, `include` cells added, and every point crossed with the seeds. Each point
//! gets a stable readable name from its values in spec order (`head=mgat,gamma=1,seed=2`).

use serde_yaml::Value;
use std::collections::HashSet;

/// The axis name seeds are listed under in cell names, `exclude` and `include`.
pub const SEED: &str = "seed";

#[derive(Debug, Clone)]
pub struct Axis {
    pub path: String,
    pub values: Vec<Value>,
}

/// A partial or full assignment of values to paths, in order.
pub type Assignment = Vec<(String, Value)>;

#[derive(Debug, Clone, Default)]
pub struct GridSpec {
    pub axes: Vec<Axis>,
    pub zip: Vec<Vec<String>>,
    pub include: Vec<Assignment>,
    pub exclude: Vec<Assignment>,
    pub seeds: Vec<u64>,
}

/// One expanded grid point: its name and every assigned value (grid axes, extra include paths, then `seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub values: Assignment,
}

/// What is wrong with a grid, with the spec path (as YAML path segments) of the offending node.
#[derive(Debug, Clone, PartialEq)]
pub struct GridError {
    pub path: Vec<String>,
    pub message: String,
}

fn err(path: &[&str], message: String) -> GridError {
    GridError {
        path: path.iter().map(|s| s.to_string()).collect(),
        message,
    }
}

/// The most cells a spec may expand to (before `exclude`): far beyond any real experiment, and small enough that
/// planning stays quick and bounded in memory.
pub const MAX_CELLS: u64 = 100_000;

/// Expands `grid` into its points. `base_value` gives the base configuration's value at a path, used for the axes an
/// `include` entry leaves unset. A grid of more than [`MAX_CELLS`] cells is refused before anything is expanded.
pub fn expand(
    grid: &GridSpec,
    base_value: impl Fn(&str) -> Value,
) -> Result<Vec<Point>, GridError> {
    check_axes(grid)?;
    let dims = dimensions(grid)?;
    let cells = dims
        .iter()
        .try_fold(grid.seeds.len() as u64, |n, d| {
            n.checked_mul(d.len() as u64)
        })
        .and_then(|n| n.checked_add(grid.include.len() as u64 * grid.seeds.len().max(1) as u64));
    if cells.is_none_or(|n| n > MAX_CELLS) {
        let sizes: Vec<String> = dims.iter().map(|d| d.len().to_string()).collect();
        return Err(err(
            &["grid"],
            format!(
                "the grid expands to {} cells ({} × {} seeds); mgat plans at most {MAX_CELLS}",
                cells.map_or("more than 2^64".to_string(), |n| n.to_string()),
                sizes.join(" × "),
                grid.seeds.len()
            ),
        ));
    }
    let axis_paths: Vec<&str> = grid.axes.iter().map(|a| a.path.as_str()).collect();
    check_assignments(&grid.exclude, "exclude", |key| {
        key == SEED || axis_paths.contains(&key)
    })?;
    let short = short_names(&axis_paths);

    let mut points = Vec::new();
    let mut seen = HashSet::new();
    for combo in product(&dims) {
        for &seed in &grid.seeds {
            let mut values = combo.clone();
            values.sort_by_key(|(path, _)| axis_paths.iter().position(|p| p == path));
            values.push((SEED.to_string(), seed_value(seed)));
            if grid.exclude.iter().any(|ex| matches(&values, ex)) {
                continue;
            }
            push_point(&mut points, &mut seen, values, &short);
        }
    }
    for entry in &grid.include {
        let seeds: Vec<Value> = match entry.iter().find(|(k, _)| k == SEED) {
            Some((_, v)) => vec![v.clone()],
            None => grid.seeds.iter().map(|&s| seed_value(s)).collect(),
        };
        for seed in seeds {
            let mut values: Assignment = axis_paths
                .iter()
                .map(|&p| {
                    let v = lookup(entry, p).cloned().unwrap_or_else(|| base_value(p));
                    (p.to_string(), v)
                })
                .collect();
            values.extend(
                entry
                    .iter()
                    .filter(|(k, _)| k != SEED && !axis_paths.contains(&k.as_str()))
                    .cloned(),
            );
            values.push((SEED.to_string(), seed));
            push_point(&mut points, &mut seen, values, &short);
        }
    }
    if points.is_empty() {
        return Err(err(
            &["grid"],
            "the grid has no cells left (every combination is excluded, or seeds is empty)".into(),
        ));
    }
    Ok(points)
}

fn check_axes(grid: &GridSpec) -> Result<(), GridError> {
    for axis in &grid.axes {
        if axis.path == SEED || axis.path == "train.seed" {
            return Err(err(
                &["grid", &axis.path],
                "seeds are an axis of their own: list them under `seeds`".into(),
            ));
        }
        if axis.values.is_empty() {
            return Err(err(
                &["grid", &axis.path],
                format!("axis `{}` has no values", axis.path),
            ));
        }
        let mut names = HashSet::new();
        for (i, v) in axis.values.iter().enumerate() {
            if !names.insert(format_value(v)) {
                let msg = format!(
                    "axis `{}` lists the value `{}` twice",
                    axis.path,
                    format_value(v)
                );
                return Err(err(&["grid", &axis.path, &i.to_string()], msg));
            }
        }
    }
    let mut seeds = HashSet::new();
    for (i, s) in grid.seeds.iter().enumerate() {
        if !seeds.insert(s) {
            return Err(err(
                &["seeds", &i.to_string()],
                format!("seed {s} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Each dimension is a list of partial assignments: a lone axis gives one value per entry, a zip group one value of
/// each of its axes per entry. Dimensions are ordered by the first grid position of their axes.
fn dimensions(grid: &GridSpec) -> Result<Vec<Vec<Assignment>>, GridError> {
    let axis = |path: &str| grid.axes.iter().find(|a| a.path == path);
    let mut grouped: HashSet<&str> = HashSet::new();
    for (g, group) in grid.zip.iter().enumerate() {
        let gs = g.to_string();
        if group.len() < 2 {
            return Err(err(
                &["zip", &gs],
                "a zip group names at least two grid axes".into(),
            ));
        }
        for (i, path) in group.iter().enumerate() {
            let Some(a) = axis(path) else {
                return Err(err(
                    &["zip", &gs, &i.to_string()],
                    format!("`{path}` is not an axis of `grid`"),
                ));
            };
            if !grouped.insert(path) {
                return Err(err(
                    &["zip", &gs, &i.to_string()],
                    format!("axis `{path}` is in more than one zip group"),
                ));
            }
            let first = axis(&group[0]).map_or(0, |a| a.values.len());
            if a.values.len() != first {
                let msg = format!(
                    "zipped axes must have equal lengths: `{}` has {} values, `{path}` has {}",
                    group[0],
                    first,
                    a.values.len()
                );
                return Err(err(&["zip", &gs, &i.to_string()], msg));
            }
        }
    }
    let mut dims = Vec::new();
    let mut done: HashSet<&str> = HashSet::new();
    for a in &grid.axes {
        if done.contains(a.path.as_str()) {
            continue;
        }
        let members: Vec<&Axis> = match grid.zip.iter().find(|g| g.contains(&a.path)) {
            Some(group) => group.iter().filter_map(|p| axis(p)).collect(),
            None => vec![a],
        };
        done.extend(members.iter().map(|m| m.path.as_str()));
        let dim = (0..a.values.len())
            .map(|i| {
                members
                    .iter()
                    .map(|m| (m.path.clone(), m.values[i].clone()))
                    .collect()
            })
            .collect();
        dims.push(dim);
    }
    Ok(dims)
}

fn check_assignments(
    entries: &[Assignment],
    section: &str,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), GridError> {
    for (i, entry) in entries.iter().enumerate() {
        if entry.is_empty() {
            return Err(err(
                &[section, &i.to_string()],
                format!("an `{section}` entry needs at least one axis"),
            ));
        }
        for (key, _) in entry {
            if !allowed(key) {
                let msg = format!(
                    "`{key}` is not a grid axis (or `seed`); `{section}` matches grid axes only"
                );
                return Err(err(&[section, &i.to_string(), key], msg));
            }
        }
    }
    Ok(())
}

fn product(dims: &[Vec<Assignment>]) -> Vec<Assignment> {
    dims.iter().fold(vec![Vec::new()], |acc, dim| {
        acc.iter()
            .flat_map(|prefix| {
                dim.iter().map(move |entry| {
                    let mut next = prefix.clone();
                    next.extend(entry.iter().cloned());
                    next
                })
            })
            .collect()
    })
}

fn push_point(
    points: &mut Vec<Point>,
    seen: &mut HashSet<String>,
    values: Assignment,
    short: &dyn Fn(&str) -> String,
) {
    let name = values
        .iter()
        .map(|(p, v)| format!("{}={}", short(p), format_value(v)))
        .collect::<Vec<_>>()
        .join(",");
    if seen.insert(name.clone()) {
        points.push(Point { name, values });
    }
}

/// Names an axis by its last path segment, or by its full path where two axes share that segment.
fn short_names(axis_paths: &[&str]) -> impl Fn(&str) -> String + use<> {
    let paths: Vec<String> = axis_paths.iter().map(|p| p.to_string()).collect();
    move |p: &str| short_name(p, &paths)
}

/// How cell names, tables and figure files call `axis` among `axes`: its last path segment (`gamma`), or the whole
/// path when another axis ends the same way (`model.width` beside `train.width`).
pub fn short_name(axis: &str, axes: &[impl AsRef<str>]) -> String {
    let last = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    let l = last(axis);
    let clashes = axes.iter().filter(|a| last(a.as_ref()) == l).count();
    if clashes > 1 { axis.to_string() } else { l }
}

fn lookup<'a>(entry: &'a Assignment, path: &str) -> Option<&'a Value> {
    entry.iter().find(|(k, _)| k == path).map(|(_, v)| v)
}

fn matches(values: &Assignment, pattern: &Assignment) -> bool {
    pattern
        .iter()
        .all(|(k, v)| lookup(values, k).is_some_and(|have| format_value(have) == format_value(v)))
}

fn seed_value(seed: u64) -> Value {
    Value::Number(seed.into())
}

/// The canonical text of a value in a cell name: integral numbers without a fraction (`1.0` → `1`), floats in their
/// shortest round-trip form, sequences joined with `+`, mappings as `key:value` joined with `+`
/// (`k1:20+k2:6+lambda:0.3`).
pub fn format_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Sequence(items) if items.is_empty() => "[]".into(),
        Value::Sequence(items) => items.iter().map(format_value).collect::<Vec<_>>().join("+"),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| format!("{}:{}", format_value(k), format_value(v)))
            .collect::<Vec<_>>()
            .join("+"),
        Value::Tagged(t) => format_value(&t.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    fn axis(path: &str, values: &[&str]) -> Axis {
        Axis {
            path: path.into(),
            values: values.iter().map(|s| v(s)).collect(),
        }
    }

    fn names(points: &[Point]) -> Vec<String> {
        points.iter().map(|p| p.name.clone()).collect()
    }

    fn base(_: &str) -> Value {
        v("0.5")
    }

    #[test]
    fn product_is_first_axis_outermost_and_seeds_innermost() {
        let grid = GridSpec {
            axes: vec![
                axis("model.head", &["none", "mgat"]),
                axis("model.gamma", &["1.0", "2"]),
            ],
            seeds: vec![1, 2],
            ..Default::default()
        };
        let points = expand(&grid, base).unwrap();
        assert_eq!(points.len(), 8);
        assert_eq!(points[0].name, "head=none,gamma=1,seed=1");
        assert_eq!(points[1].name, "head=none,gamma=1,seed=2");
        assert_eq!(points[2].name, "head=none,gamma=2,seed=1");
        assert_eq!(points[7].name, "head=mgat,gamma=2,seed=2");
    }

    #[test]
    fn zip_advances_axes_together() {
        let grid = GridSpec {
            axes: vec![
                axis("model.gamma", &["0.1", "1"]),
                axis("model.head", &["gat", "mgat"]),
                axis("train.lr", &["0.1", "0.2"]),
            ],
            zip: vec![vec!["model.gamma".into(), "train.lr".into()]],
            seeds: vec![3],
            ..Default::default()
        };
        let points = expand(&grid, base).unwrap();
        assert_eq!(
            names(&points),
            [
                "gamma=0.1,head=gat,lr=0.1,seed=3",
                "gamma=0.1,head=mgat,lr=0.1,seed=3",
                "gamma=1,head=gat,lr=0.2,seed=3",
                "gamma=1,head=mgat,lr=0.2,seed=3",
            ]
        );
    }

    #[test]
    fn exclude_drops_matching_points_and_include_adds_with_base_defaults() {
        let grid = GridSpec {
            axes: vec![
                axis("model.head", &["none", "mgat"]),
                axis("model.gamma", &["1", "2"]),
            ],
            exclude: vec![vec![
                ("model.head".into(), v("none")),
                ("model.gamma".into(), v("2.0")),
            ]],
            include: vec![
                vec![("model.head".into(), v("gat"))],
                vec![
                    ("model.head".into(), v("mgat")),
                    ("model.of_weight".into(), v("0")),
                    ("seed".into(), v("9")),
                ],
            ],
            seeds: vec![1, 2],
            ..Default::default()
        };
        let points = expand(&grid, base).unwrap();
        assert_eq!(points.len(), 6 + 2 + 1);
        assert!(
            !names(&points)
                .iter()
                .any(|n| n.starts_with("head=none,gamma=2"))
        );
        assert!(names(&points).contains(&"head=gat,gamma=0.5,seed=2".to_string()));
        assert_eq!(
            points.last().unwrap().name,
            "head=mgat,gamma=0.5,of_weight=0,seed=9"
        );
    }

    #[test]
    fn exclude_by_seed_and_duplicate_include_is_dropped() {
        let grid = GridSpec {
            axes: vec![axis("model.head", &["none", "mgat"])],
            exclude: vec![vec![("seed".into(), v("2"))]],
            include: vec![vec![("model.head".into(), v("mgat"))]],
            seeds: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(
            names(&expand(&grid, base).unwrap()),
            ["head=none,seed=1", "head=mgat,seed=1", "head=mgat,seed=2"]
        );
    }

    #[test]
    fn empty_grid_is_one_cell_per_seed() {
        let grid = GridSpec {
            seeds: vec![4, 5],
            ..Default::default()
        };
        assert_eq!(names(&expand(&grid, base).unwrap()), ["seed=4", "seed=5"]);
    }

    #[test]
    fn ambiguous_last_segments_use_full_paths() {
        let grid = GridSpec {
            axes: vec![axis("train.width", &["64"]), axis("model.width", &["16"])],
            seeds: vec![1],
            ..Default::default()
        };
        assert_eq!(
            names(&expand(&grid, base).unwrap()),
            ["train.width=64,model.width=16,seed=1"]
        );
    }

    #[test]
    fn grid_errors_point_at_the_offending_node() {
        let bad_zip = GridSpec {
            axes: vec![axis("model.gamma", &["1", "2"]), axis("train.lr", &["1"])],
            zip: vec![vec!["model.gamma".into(), "train.lr".into()]],
            seeds: vec![1],
            ..Default::default()
        };
        assert_eq!(expand(&bad_zip, base).unwrap_err().path, ["zip", "0", "1"]);
        let unknown_zip = GridSpec {
            zip: vec![vec!["a".into(), "b".into()]],
            seeds: vec![1],
            ..Default::default()
        };
        assert_eq!(
            expand(&unknown_zip, base).unwrap_err().path,
            ["zip", "0", "0"]
        );
        let bad_exclude = GridSpec {
            axes: vec![axis("model.gamma", &["1"])],
            exclude: vec![vec![("model.head".into(), v("none"))]],
            seeds: vec![1],
            ..Default::default()
        };
        assert_eq!(
            expand(&bad_exclude, base).unwrap_err().path,
            ["exclude", "0", "model.head"]
        );
        let dup = GridSpec {
            axes: vec![axis("model.gamma", &["1", "1.0"])],
            seeds: vec![1],
            ..Default::default()
        };
        assert_eq!(
            expand(&dup, base).unwrap_err().path,
            ["grid", "model.gamma", "1"]
        );
        let all_gone = GridSpec {
            exclude: vec![vec![("seed".into(), v("1"))]],
            seeds: vec![1],
            ..Default::default()
        };
        assert!(
            expand(&all_gone, base)
                .unwrap_err()
                .message
                .contains("no cells")
        );
    }

    #[test]
    fn values_format_canonically() {
        assert_eq!(format_value(&v("1.0")), "1");
        assert_eq!(format_value(&v("0.1")), "0.1");
        assert_eq!(format_value(&v("[40, 70]")), "40+70");
        assert_eq!(format_value(&v("mgat")), "mgat");
    }
}
