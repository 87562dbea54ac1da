//! Why a stage's key differs from another's, as typed reasons (modelled on cargo's `DirtyReason`): what `mgat
//! explain` prints for a stage that would run, by comparing its key inputs with the closest entry in the cache.

use super::{KeyInputs, StageConfig, StageKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// One difference between two stages' key inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// The key schema (the meaning of the inputs) changed.
    Schema { from: u32, to: u32 },
    /// The code of this kind (its compute crates, their dependencies, the compiler or the features) changed.
    Code { kind: StageKind },
    /// The CPU's floating-point class changed (another CPU computes other bits).
    Numerics {
        from: Option<String>,
        to: Option<String>,
    },
    /// The spec's `version` salt changed.
    Salt {
        from: Option<String>,
        to: Option<String>,
    },
    /// The dataset's `datasets.lock` digest changed.
    Dataset {
        from: Option<String>,
        to: Option<String>,
    },
    /// The output this stage reads from its `kind` input has other bytes.
    UpstreamOutput { kind: StageKind },
    /// The `kind` input this stage reads is not computed yet, so its output cannot be compared.
    UpstreamPending { kind: StageKind },
    /// A configuration field the kind reads (dotted path inside the kind's configuration, e.g. `train.lr`).
    Config {
        field: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        match self {
            KeyChange::Schema { from, to } => write!(f, "key schema {from} → {to}"),
            KeyChange::Code { kind } => write!(f, "code of kind {} changed", kind.name()),
            KeyChange::Numerics { from, to } => {
                write!(f, "CPU floating-point class {} → {}", show(from), show(to))
            }
            KeyChange::Salt { from, to } => write!(f, "version salt {} → {}", show(from), show(to)),
            KeyChange::Dataset { from, to } => {
                write!(f, "dataset digest {} → {}", show(from), show(to))
            }
            KeyChange::UpstreamOutput { kind } => {
                write!(f, "upstream {} output changed", kind.name())
            }
            KeyChange::UpstreamPending { kind } => {
                write!(f, "upstream {} is not computed yet", kind.name())
            }
            KeyChange::Config { field, from, to } => {
                write!(f, "{field} {} → {}", show(from), show(to))
            }
        }
    }
}

/// Every difference from `old` to `new`, in a fixed order (schema, code, salt, dataset, upstream, config).
/// `pending` lists the kinds whose outputs `new` consumes but which are not computed yet.
pub fn key_changes(old: &KeyInputs, new: &KeyInputs, pending: &[StageKind]) -> Vec<KeyChange> {
    let mut out = Vec::new();
    if old.schema != new.schema {
        out.push(KeyChange::Schema {
            from: old.schema,
            to: new.schema,
        });
    }
    if old.fingerprint != new.fingerprint {
        out.push(KeyChange::Code { kind: new.kind });
    }
    if old.numerics != new.numerics {
        out.push(KeyChange::Numerics {
            from: old.numerics.clone(),
            to: new.numerics.clone(),
        });
    }
    if old.version != new.version {
        out.push(KeyChange::Salt {
            from: old.version.clone(),
            to: new.version.clone(),
        });
    }
    if old.lock_digest != new.lock_digest {
        out.push(KeyChange::Dataset {
            from: old.lock_digest.clone(),
            to: new.lock_digest.clone(),
        });
    }
    for kind in pending {
        out.push(KeyChange::UpstreamPending { kind: *kind });
    }
    for (kind, digest) in &new.upstream {
        if old.upstream.get(kind) != Some(digest) {
            out.push(KeyChange::UpstreamOutput { kind: *kind });
        }
    }
    let (a, b) = (config_fields(&old.config), config_fields(&new.config));
    let fields: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for field in fields {
        let (from, to) = (a.get(field).cloned(), b.get(field).cloned());
        if from != to {
            out.push(KeyChange::Config {
                field: field.clone(),
                from,
                to,
            });
        }
    }
    out
}

/// The leaves of a kind's configuration by dotted path inside it (`train.lr`, not `train.train.lr`).
fn config_fields(config: &StageConfig) -> BTreeMap<String, String> {
    let value = serde_json::to_value(config).unwrap_or_default();
    let inner = match &value {
        Value::Object(m) if m.len() == 1 => m.values().next().cloned().unwrap_or_default(),
        _ => value,
    };
    let mut out = BTreeMap::new();
    flatten(&inner, "", &mut out);
    out
}

fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v.as_object() {
        Some(map) => {
            for (k, child) in map {
                let path = match prefix {
                    "" => k.clone(),
                    _ => format!("{prefix}.{k}"),
                };
                flatten(child, &path, out);
            }
        }
        None => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::keys::train_key;

    fn inputs(lr: f64, fingerprint: &str, index_digest: &str) -> KeyInputs {
        let mut key = train_key(&crate::spec::RunConfig::for_tests(), None);
        key.train.lr = lr;
        KeyInputs {
            schema: 1,
            kind: StageKind::Train,
            config: StageConfig::Train(key),
            upstream: BTreeMap::from([(StageKind::Index, index_digest.into())]),
            lock_digest: Some("sha256:1".into()),
            fingerprint: fingerprint.into(),
            numerics: Some("cpu-a".into()),
            version: None,
        }
    }

    #[test]
    fn each_changed_component_is_one_typed_reason() {
        let changes = key_changes(&inputs(0.01, "x", "a"), &inputs(0.02, "y", "b"), &[]);
        assert_eq!(
            changes,
            vec![
                KeyChange::Code {
                    kind: StageKind::Train
                },
                KeyChange::UpstreamOutput {
                    kind: StageKind::Index
                },
                KeyChange::Config {
                    field: "train.lr".into(),
                    from: Some("0.01".into()),
                    to: Some("0.02".into())
                },
            ]
        );
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "code of kind train changed",
                "upstream index output changed",
                "train.lr 0.01 → 0.02"
            ]
        );
        assert!(key_changes(&inputs(0.1, "x", "a"), &inputs(0.1, "x", "a"), &[]).is_empty());
        let other_cpu = KeyInputs {
            numerics: Some("cpu-b".into()),
            ..inputs(0.1, "x", "a")
        };
        assert_eq!(
            key_changes(&inputs(0.1, "x", "a"), &other_cpu, &[])
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["CPU floating-point class cpu-a → cpu-b"]
        );
        assert_ne!(inputs(0.1, "x", "a").key(), other_cpu.key());
    }
}
