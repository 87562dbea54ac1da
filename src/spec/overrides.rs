//! `--set PATH=VALUE`: a setting of every loaded spec's `base` given on the command line, as Hydra users override a
//! config. The value is YAML (`2`, `cpu`, `[40, 70]`), set before the grid is expanded, so it is checked, typed and
//! range-checked exactly as if the spec's file said it, and it moves keys exactly as that edit would. A setting the
//! spec varies as a grid axis is refused: the axis would override it in every cell.

use serde_yaml::Value;

/// One `--set PATH=VALUE`, as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub path: String,
    pub value: Value,
    /// The argument as typed, for messages and for the command lines of Slurm jobs.
    pub arg: String,
}

impl std::str::FromStr for Override {
    type Err = String;

    fn from_str(arg: &str) -> Result<Override, String> {
        let (path, text) = arg
            .split_once('=')
            .ok_or_else(|| format!("`{arg}`: expected PATH=VALUE, e.g. model.gamma=2"))?;
        let path = path.trim();
        let well_formed = !path.is_empty()
            && path.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !well_formed {
            return Err(format!(
                "`{arg}`: `{path}` is not a setting's path (paths are like `model.gamma`)"
            ));
        }
        let value: Value = serde_yaml::from_str(text)
            .map_err(|e| format!("`{arg}`: the value is not YAML: {e}"))?;
        Ok(Override {
            path: path.to_string(),
            value,
            arg: arg.to_string(),
        })
    }
}

/// `base` (a serialised `RunConfig`) with every override set, or the first override that names no setting of it
/// (or a section, or `train.seed`, which `seeds` sets) or that a grid axis of the spec varies, with the reason.
pub fn set_all<'a>(
    base: &Value,
    overrides: &'a [Override],
    grid_axes: &[String],
) -> Result<Value, (&'a Override, String)> {
    let mut value = base.clone();
    for o in overrides {
        let reason = match super::get_path(&value, &o.path) {
            None => Some(format!(
                "`{}` is not a setting of `base` (paths are like `model.gamma`)",
                o.path
            )),
            Some(Value::Mapping(_)) => Some(format!(
                "`{}` is a section, not a setting: name a field inside it",
                o.path
            )),
            Some(_) if o.path == "train.seed" => {
                Some("`train.seed` is set by the spec's `seeds`".to_string())
            }
            Some(_) if grid_axes.contains(&o.path) => Some(format!(
                "`{}` is a grid axis of this spec, which sets it in every cell; --set changes `base`",
                o.path
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Err((o, reason));
        }
        if let Some(slot) = super::get_path_mut(&mut value, &o.path) {
            *slot = o.value.clone();
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_is_a_path_and_a_yaml_value() {
        let o: Override = "train.lr_steps=[40, 70]".parse().unwrap();
        assert_eq!(o.path, "train.lr_steps");
        assert_eq!(o.value, serde_yaml::from_str::<Value>("[40, 70]").unwrap());
        assert_eq!(o.arg, "train.lr_steps=[40, 70]");
        for (bad, needle) in [
            ("model.gamma", "expected PATH=VALUE"),
            ("=2", "is not a setting's path"),
            ("model..gamma=2", "is not a setting's path"),
            ("model.gamma=[2", "the value is not YAML"),
        ] {
            let err = bad.parse::<Override>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
