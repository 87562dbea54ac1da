//! [`DeviceChoice`]: a device as specs, the command line, placements and manifests name it, typed from the spec to
//! the manifest.

use std::fmt;

/// `auto`, `cpu`, `cuda` (which is `cuda:0`) or `cuda:N`. The one parser of device names; the model crate opens
/// one (`mgat_model::params::open_device`). A manifest records the concrete device a stage ran on (`cpu` or
/// `cuda:N`, never `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceChoice {
    /// CUDA device 0 when the binary has CUDA and a device is present, else the CPU.
    Auto,
    Cpu,
    Cuda(u32),
}

impl DeviceChoice {
    /// CUDA ordinals are small; a larger one is a typo.
    pub const MAX_CUDA: u32 = 1023;

    /// What a name must be, for error messages.
    pub const EXPECTED: &'static str = "auto, cpu, cuda or cuda:N (N ≤ 1023)";

    pub fn parse(name: &str) -> Option<DeviceChoice> {
        match name {
            "auto" => Some(DeviceChoice::Auto),
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" => Some(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .filter(|&i| i <= Self::MAX_CUDA)
                .map(DeviceChoice::Cuda),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        Self::parse(name)
            .ok_or_else(|| format!("`{name}` is not a device: expected {}", Self::EXPECTED))
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Refused inside the deserializer's own call, so that a YAML or JSON error points at the value itself.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = DeviceChoice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DeviceChoice::EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<DeviceChoice, E> {
                name.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_to_one_spelling() {
        let shown = |n: &str| DeviceChoice::parse(n).map(|c| c.to_string());
        assert_eq!(shown("cuda").as_deref(), Some("cuda:0"));
        assert_eq!(shown("cuda:3").as_deref(), Some("cuda:3"));
        assert_eq!(shown("auto").as_deref(), Some("auto"));
        assert_eq!(shown("cpu").as_deref(), Some("cpu"));
        for bad in [
            "gpu",
            "cuda:",
            "cuda:x",
            "cuda:-1",
            "cuda:1024",
            "cuda:99999999999999999999",
            "CPU",
            " cpu",
        ] {
            assert_eq!(DeviceChoice::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn it_is_stored_as_its_name() {
        let json = serde_json::to_string(&DeviceChoice::Cuda(2)).unwrap();
        assert_eq!(json, "\"cuda:2\"");
        assert_eq!(
            serde_json::from_str::<DeviceChoice>(&json).unwrap(),
            DeviceChoice::Cuda(2)
        );
        let err = serde_json::from_str::<DeviceChoice>("\"gpu\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`gpu` is not a device"), "{err}");
    }
}
