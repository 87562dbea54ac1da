//! The metrics a report can show ([`ReportMetric`]): how specs (`report.metrics`), `reports/paper.yaml` columns and
//! results.csv's columns name them, how tables label them, and where each comes from in an eval stage's
//! `metrics.json`; and [`PerMetric`], one value per metric, indexed by the metric rather than by a position.

use mgat_eval::metrics::MetricsFile;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::{Index, IndexMut};

/// One metric a report can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportMetric {
    Rank1,
    Rank5,
    Rank10,
    Rank20,
    Map,
    Minp,
}

/// How many metrics there are.
const COUNT: usize = 6;

impl ReportMetric {
    /// Every metric, in results.csv's column order.
    pub const ALL: [ReportMetric; COUNT] = [
        ReportMetric::Rank1,
        ReportMetric::Rank5,
        ReportMetric::Rank10,
        ReportMetric::Rank20,
        ReportMetric::Map,
        ReportMetric::Minp,
    ];

    /// The name specs, paper tables and results.csv's header use.
    pub fn name(self) -> &'static str {
        match self {
            ReportMetric::Rank1 => "rank1",
            ReportMetric::Rank5 => "rank5",
            ReportMetric::Rank10 => "rank10",
            ReportMetric::Rank20 => "rank20",
            ReportMetric::Map => "mAP",
            ReportMetric::Minp => "mINP",
        }
    }

    /// The name in table headers and figure axes.
    pub fn label(self) -> &'static str {
        match self {
            ReportMetric::Rank1 => "rank-1",
            ReportMetric::Rank5 => "rank-5",
            ReportMetric::Rank10 => "rank-10",
            ReportMetric::Rank20 => "rank-20",
            ReportMetric::Map => "mAP",
            ReportMetric::Minp => "mINP",
        }
    }

    /// The metric named `name` (exactly as [`ReportMetric::name`] spells it).
    pub fn from_name(name: &str) -> Option<ReportMetric> {
        ReportMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Every name, comma-separated, for error messages.
    pub fn names() -> String {
        ReportMetric::ALL.map(ReportMetric::name).join(", ")
    }

    /// Its value in an eval stage's metrics: a CMC rank beyond the evaluation's `max_rank` has none.
    pub fn of(self, metrics: &MetricsFile) -> Option<f64> {
        match self {
            ReportMetric::Rank1 => metrics.rank(1),
            ReportMetric::Rank5 => metrics.rank(5),
            ReportMetric::Rank10 => metrics.rank(10),
            ReportMetric::Rank20 => metrics.rank(20),
            ReportMetric::Map => Some(metrics.map),
            ReportMetric::Minp => Some(metrics.minp),
        }
    }
}

impl fmt::Display for ReportMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ReportMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ReportMetric {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ReportMetric::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown metric `{name}`: expected one of {}",
                ReportMetric::names()
            ))
        })
    }
}

/// One value per metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerMetric<T>([T; COUNT]);

impl<T> PerMetric<T> {
    /// The values `value(metric)` gives each metric.
    pub fn from_fn(mut value: impl FnMut(ReportMetric) -> T) -> Self {
        PerMetric(ReportMetric::ALL.map(&mut value))
    }

    /// Each metric with its value, in [`ReportMetric::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (ReportMetric, &T)> {
        ReportMetric::ALL.into_iter().zip(&self.0)
    }
}

impl<T> Index<ReportMetric> for PerMetric<T> {
    type Output = T;
    fn index(&self, metric: ReportMetric) -> &T {
        &self.0[metric as usize]
    }
}

impl<T> IndexMut<ReportMetric> for PerMetric<T> {
    fn index_mut(&mut self, metric: ReportMetric) -> &mut T {
        &mut self.0[metric as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_index_their_own_slot() {
        for metric in ReportMetric::ALL {
            assert_eq!(ReportMetric::from_name(metric.name()), Some(metric));
            let one = PerMetric::from_fn(|m| m == metric);
            assert_eq!(one.iter().filter(|(_, v)| **v).count(), 1);
            assert!(one[metric]);
        }
        assert_eq!(ReportMetric::from_name("map"), None, "names are exact");
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = serde_yaml::from_str::<ReportMetric>("top1").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown metric `top1`: expected one of rank1, rank5, rank10, rank20, mAP, mINP"
            ),
            "{err}"
        );
    }

    #[test]
    fn values_come_from_the_metrics_file() {
        let file = MetricsFile {
            num_query: 2,
            num_gallery: 8,
            num_valid_query: 2,
            cmc: [(1, 0.5), (5, 1.0)].into_iter().collect(),
            cmc_curve: vec![0.5, 0.5, 0.75, 1.0, 1.0],
            map: 0.625,
            minp: 0.25,
        };
        let values = PerMetric::from_fn(|m| m.of(&file));
        assert_eq!(values[ReportMetric::Rank1], Some(0.5));
        assert_eq!(values[ReportMetric::Rank5], Some(1.0));
        assert_eq!(values[ReportMetric::Rank10], None, "beyond the curve");
        assert_eq!(values[ReportMetric::Map], Some(0.625));
        assert_eq!(values[ReportMetric::Minp], Some(0.25));
    }
}
