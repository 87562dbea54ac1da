//! The reference fixtures under `tests/data/<set>/<case>/` (written by `scripts/make-*-fixtures.py` with the
//! reference implementations' own functions), for this crate's unit tests: a case's arrays and its `params.json`.

use crate::array::Matrix;
use std::path::PathBuf;

pub struct Case {
    dir: PathBuf,
    pub params: serde_json::Value,
}

impl Case {
    pub fn open(set: &str, case: &str) -> Case {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(set)
            .join(case);
        let text = std::fs::read_to_string(dir.join("params.json")).unwrap();
        Case {
            params: serde_json::from_str(&text).unwrap(),
            dir,
        }
    }

    /// The array `<name>.npy`.
    pub fn matrix(&self, name: &str) -> Matrix {
        crate::array::load_matrix(&self.dir.join(format!("{name}.npy"))).unwrap()
    }

    pub fn usize(&self, name: &str) -> usize {
        self.params[name].as_u64().unwrap() as usize
    }

    pub fn f64(&self, name: &str) -> f64 {
        self.params[name].as_f64().unwrap()
    }
}
