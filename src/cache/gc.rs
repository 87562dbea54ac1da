//! What `mgat cache gc` keeps: the roots. An entry is referenced when a stage of the plan of every spec in
//! `experiments/` resolves to its key, or, for a stage whose key cannot be resolved yet (an entry it consumes is
//! gone), when the entry was computed from that stage's configuration with whatever upstream outputs: those are the
//! results it would otherwise compute again. Every entry a running mgat process is using is a root too
//! ([`live`](super::live)), whatever spec it came from.

use super::{Cache, Lookup};
use crate::plan::{KeyInputs, Plan, StageKey, StageKind};
use std::collections::HashSet;

/// The entries a plan references.
pub struct Roots<'a> {
    resolved: HashSet<(StageKind, &'a str)>,
    unresolved: Vec<&'a KeyInputs>,
    live: &'a super::live::Collector,
    cache: &'a Cache,
}

impl<'a> Roots<'a> {
    pub fn of(plan: &'a Plan, live: &'a super::live::Collector, cache: &'a Cache) -> Self {
        Self {
            resolved: plan
                .stages
                .iter()
                .filter_map(|s| s.key.as_ref().map(|k| (s.kind, k.as_str())))
                .collect(),
            unresolved: plan
                .stages
                .iter()
                .filter(|s| s.key.is_none())
                .map(|s| &s.inputs)
                .collect(),
            live,
            cache,
        }
    }

    /// How many stages with a known key the plan references.
    pub fn resolved(&self) -> usize {
        self.resolved.len()
    }

    /// Whether the entry of `kind` named `name` (a folder of the cache) is referenced.
    pub fn hold(&self, kind: StageKind, name: &str) -> bool {
        self.resolved.contains(&(kind, name))
            || self.live.live.contains(&(kind, name.to_string()))
            || matches!(StageKey::parse(name).map(|key| self.cache.lookup(kind, &key)), Ok(Lookup::Present(m))
                if self.unresolved.iter().any(|i| KeyInputs { upstream: Default::default(), ..m.inputs.clone() } == **i))
    }
}
