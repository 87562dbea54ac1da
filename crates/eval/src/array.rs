//! Reading evaluation inputs: matrices and id vectors from `.npy` (any integer or float dtype numpy writes, either
//! byte order, C or Fortran order) or text (`.csv`/`.txt`: one matrix row per line, values separated by commas or
//! white space; one id per line). A native-endian float32 C-order `.npy` is memory-mapped rather than copied, so
//! a Market-scale distance matrix (214 MB) costs no read copy.

use mgat_util::fsio::IoError;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A dense row-major f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Values,
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A matrix's values: owned, or a read-only mapping of a file's float32 payload.
#[derive(Debug)]
pub enum Values {
    Owned(Vec<f32>),
    Mapped { map: memmap2::Mmap, len: usize },
}

impl Deref for Values {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Values::Owned(v) => v,
            // SAFETY: the mapping is 4-byte aligned and holds `len` f32s (checked when mapped); any bit pattern is
            // a valid f32; the map is read-only and lives as long as self.
            Values::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), *len)
            },
        }
    }
}

impl Clone for Values {
    fn clone(&self) -> Self {
        Values::Owned(self.to_vec())
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Self {
        Values::Owned(v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: not a valid .npy file: {reason}")]
    BadNpy { path: PathBuf, reason: String },
    #[error("{path}: dtype `{dtype}` is not supported (expected an integer or float type)")]
    Dtype { path: PathBuf, dtype: String },
    #[error("{path}: expected {expected}, found shape {shape:?}")]
    Shape {
        path: PathBuf,
        expected: &'static str,
        shape: Vec<usize>,
    },
    #[error("{path}:{line}: `{text}` is not a number")]
    BadText {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}:{line}: {found} values, but the first row has {expected}")]
    Ragged {
        path: PathBuf,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{path}: value {value} at index {index} is not an integer id")]
    NotAnId {
        path: PathBuf,
        index: usize,
        value: f64,
    },
    #[error("{path}: NaN or infinity at row {row}, column {col}")]
    NotFinite {
        path: PathBuf,
        row: usize,
        col: usize,
    },
}

/// The keys of an `.npy` header's dict literal: each quoted string followed by `:`.
fn header_keys(header: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = header;
    while let Some(open) = rest.find('\'') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('\'') else {
            break;
        };
        let tail = &after[close + 1..];
        if tail.trim_start().starts_with(':') {
            keys.push(&after[..close]);
        }
        rest = tail;
    }
    keys
}

/// Loads a 2-D matrix (f32), refusing NaN and infinities.
pub fn load_matrix(path: &Path) -> Result<Matrix, ArrayError> {
    let (shape, data) = if is_npy(path) {
        read_npy_f32(path)?
    } else {
        let (shape, values) = read_text(path)?;
        (shape, values.into())
    };
    let (rows, cols) = match shape[..] {
        [r, c] => (r, c),
        _ => {
            return Err(ArrayError::Shape {
                path: path.into(),
                expected: "a 2-D matrix",
                shape,
            });
        }
    };
    if let Some(i) = first_non_finite(&data) {
        return Err(ArrayError::NotFinite {
            path: path.into(),
            row: i / cols.max(1),
            col: i % cols.max(1),
        });
    }
    Ok(Matrix { rows, cols, data })
}

/// Loads a vector of integer ids (a 1-D array, or N×1).
pub fn load_ids(path: &Path) -> Result<Vec<i64>, ArrayError> {
    let (shape, values) = if is_npy(path) {
        read_npy_f64(path)?
    } else {
        read_text_f64(path)?
    };
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(ArrayError::Shape {
            path: path.into(),
            expected: "a vector of ids",
            shape,
        });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(ArrayError::NotAnId {
                    path: path.into(),
                    index,
                    value: v,
                })
            }
        })
        .collect()
}

fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "npy")
}

fn first_non_finite(data: &[f32]) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    // Whole chunks are scanned branch-free (vectorised); only a chunk that holds one is searched element-wise.
    let chunk = data
        .par_chunks(CHUNK)
        .position_first(|c| c.iter().fold(false, |bad, v| bad | !v.is_finite()))?;
    let offset = data[chunk * CHUNK..].iter().position(|v| !v.is_finite())?;
    Some(chunk * CHUNK + offset)
}

/// numpy writes headers of a few hundred bytes; anything longer is not a header.
const MAX_NPY_HEADER: usize = 1 << 20;

/// The parsed header of a .npy file.
struct NpyHeader {
    kind: u8,
    size: usize,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
}

fn read_npy_header(path: &Path, file: &mut std::fs::File) -> Result<NpyHeader, ArrayError> {
    let bad = |reason: &str| ArrayError::BadNpy {
        path: path.into(),
        reason: reason.into(),
    };
    let io = |source| ArrayError::Io(IoError::new(path, source));
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(io)?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, prefix) = if magic[6] == 1 {
        let mut b = [0u8; 2];
        file.read_exact(&mut b).map_err(io)?;
        (u16::from_le_bytes(b) as usize, 10)
    } else {
        let mut b = [0u8; 4];
        file.read_exact(&mut b).map_err(io)?;
        (u32::from_le_bytes(b) as usize, 12)
    };
    let file_len = file.metadata().map_err(io)?.len();
    if header_len > MAX_NPY_HEADER || (prefix + header_len) as u64 > file_len {
        return Err(bad(&format!(
            "header length {header_len} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header).map_err(io)?;
    let header = String::from_utf8_lossy(&header);
    // numpy writes exactly these three keys and refuses a header with others.
    let keys = header_keys(&header);
    if let Some(other) = keys
        .iter()
        .find(|k| !["descr", "fortran_order", "shape"].contains(k))
    {
        return Err(bad(&format!(
            "header key `{other}`: expected only descr, fortran_order and shape"
        )));
    }
    let field = |name: &str| -> Option<&str> {
        let start = header.find(&format!("'{name}'"))? + name.len() + 2;
        Some(
            header[start..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start(),
        )
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("no descr"))?;
    let fortran = field("fortran_order")
        .ok_or_else(|| bad("no fortran_order"))?
        .starts_with("True");
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad("bad shape"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = descr.as_bytes();
    let dtype_err = || ArrayError::Dtype {
        path: path.into(),
        dtype: descr.to_string(),
    };
    if bytes.len() < 3 {
        return Err(dtype_err());
    }
    let size: usize = descr[2..].parse().map_err(|_| dtype_err())?;
    let supported = matches!(
        (bytes[1], size),
        (b'f', 2 | 4 | 8) | (b'i' | b'u', 1 | 2 | 4 | 8) | (b'b', 1)
    );
    if !supported {
        return Err(dtype_err());
    }
    // The payload must hold exactly the values the shape claims: a shorter file would be scored as garbage, and a
    // huge claimed shape must not be mapped or allocated.
    let payload = file_len - (prefix + header_len) as u64;
    let needed = shape
        .iter()
        .try_fold(size as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(&format!("shape {shape:?} is too large")))?;
    if needed != payload {
        return Err(bad(&format!(
            "shape {shape:?} of {descr} needs {needed} bytes of data, the file holds {payload}"
        )));
    }
    Ok(NpyHeader {
        kind: bytes[1],
        size,
        big_endian: bytes[0] == b'>',
        fortran,
        shape,
    })
}

/// Reads an .npy file's values as f32, in C order: mapped when the payload is native f32 in C order, else decoded.
fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Values), ArrayError> {
    let io = |source| ArrayError::Io(IoError::new(path, source));
    let mut file = mgat_util::fsio::open_regular(path).map_err(io)?;
    let h = read_npy_header(path, &mut file)?;
    let n: usize = h.shape.iter().product();
    let native_f32 =
        h.kind == b'f' && h.size == 4 && h.big_endian == cfg!(target_endian = "big") && !h.fortran;
    if native_f32 && n > 0 {
        let offset = std::io::Seek::stream_position(&mut file).map_err(io)?;
        // SAFETY: the file is mapped read-only; mgat does not write it while the mapping lives.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(n * 4)
                .map(&file)
        }
        .map_err(io)?;
        if map.as_ptr().align_offset(4) == 0 && map.len() == n * 4 {
            return Ok((h.shape.clone(), Values::Mapped { map, len: n }));
        }
    }
    let values: Vec<f32> = read_npy_values(path, &mut file, &h, n)?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Ok((h.shape.clone(), c_order(values, &h).into()))
}

fn read_npy_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>), ArrayError> {
    let mut file = mgat_util::fsio::open_regular(path)
        .map_err(|source| ArrayError::Io(IoError::new(path, source)))?;
    let h = read_npy_header(path, &mut file)?;
    let n: usize = h.shape.iter().product();
    let values = read_npy_values(path, &mut file, &h, n)?;
    Ok((h.shape.clone(), c_order(values, &h)))
}

fn read_npy_values(
    path: &Path,
    file: &mut std::fs::File,
    h: &NpyHeader,
    n: usize,
) -> Result<Vec<f64>, ArrayError> {
    let mut bytes = vec![0u8; n * h.size];
    file.read_exact(&mut bytes)
        .map_err(|source| ArrayError::Io(IoError::new(path, source)))?;
    Ok(bytes
        .chunks_exact(h.size)
        .map(|c| decode(c, h.kind, h.big_endian))
        .collect())
}

fn decode(chunk: &[u8], kind: u8, big_endian: bool) -> f64 {
    let mut b = [0u8; 8];
    b[..chunk.len()].copy_from_slice(chunk);
    if big_endian {
        b[..chunk.len()].reverse();
    }
    let signed = |bits: u32| {
        let raw = u64::from_le_bytes(b);
        ((raw << (64 - bits)) as i64 >> (64 - bits)) as f64
    };
    match (kind, chunk.len()) {
        (b'f', 2) => f16_to_f64(u16::from_le_bytes([b[0], b[1]])),
        (b'f', 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        (b'f', _) => f64::from_le_bytes(b),
        (b'i', len) => signed(len as u32 * 8),
        _ => u64::from_le_bytes(b) as f64,
    }
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Reorders Fortran-order 2-D data to C order.
fn c_order<T: Copy>(data: Vec<T>, h: &NpyHeader) -> Vec<T> {
    match (h.fortran, &h.shape[..]) {
        (true, &[rows, cols]) => (0..rows * cols)
            .map(|i| data[(i % cols) * rows + i / cols])
            .collect(),
        _ => data,
    }
}

fn read_text(path: &Path) -> Result<(Vec<usize>, Vec<f32>), ArrayError> {
    let (shape, values) = read_text_f64(path)?;
    Ok((shape, values.into_iter().map(|v| v as f32).collect()))
}

/// Text: one row per non-empty line; a file of one value per line is a vector.
fn read_text_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>), ArrayError> {
    let io = |source| ArrayError::Io(IoError::new(path, source));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut mgat_util::fsio::open_regular(path).map_err(io)?,
        &mut text,
    )
    .map_err(io)?;
    let mut values = Vec::new();
    let (mut rows, mut cols) = (0usize, None);
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let before = values.len();
        for field in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
        {
            let v: f64 = field.parse().map_err(|_| ArrayError::BadText {
                path: path.into(),
                line: i + 1,
                text: field.to_string(),
            })?;
            values.push(v);
        }
        let found = values.len() - before;
        match cols {
            None => cols = Some(found),
            Some(expected) if expected != found => {
                return Err(ArrayError::Ragged {
                    path: path.into(),
                    line: i + 1,
                    found,
                    expected,
                });
            }
            Some(_) => {}
        }
        rows += 1;
    }
    let shape = match cols {
        Some(1) => vec![rows],
        Some(c) => vec![rows, c],
        None => vec![0],
    };
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn a_header_with_another_key_is_refused_as_numpy_does() {
        let dir = mgat_testutil::tempdir();
        let good = npy("<f4", false, "(1, 2)", &[0; 8]);
        std::fs::write(dir.join("a.npy"), &good).unwrap();
        assert_eq!(load_matrix(&dir.join("a.npy")).unwrap().cols, 2);
        let text = String::from_utf8_lossy(&good).replace("'shape'", "'extra': 1, 'shape'");
        let mut bad = good[..8].to_vec();
        let header = &text[10..text.find('\n').unwrap() + 1];
        bad.extend((header.len() as u16).to_le_bytes());
        bad.extend(header.as_bytes());
        bad.extend([0; 8]);
        std::fs::write(dir.join("b.npy"), &bad).unwrap();
        let err = load_matrix(&dir.join("b.npy")).unwrap_err().to_string();
        assert!(err.contains("header key `extra`"), "{err}");
        assert_eq!(
            header_keys("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"),
            ["descr", "fortran_order", "shape"]
        );
    }

    #[test]
    fn reads_the_reference_cases_in_every_encoding() {
        let case = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/reid-cases/m1_basic"
        ));
        let npy = load_matrix(&case.join("distmat.npy")).unwrap();
        let csv = load_matrix(&case.join("distmat.csv")).unwrap();
        assert_eq!((npy.rows, npy.cols), (50, 300));
        assert_eq!(npy, csv);
        assert_eq!(
            load_ids(&case.join("g_pids.npy")).unwrap(),
            load_ids(&case.join("g_pids.txt")).unwrap()
        );
    }

    #[test]
    fn decodes_dtypes_byte_orders_and_fortran_order() {
        let dir = mgat_testutil::tempdir();
        let write = |name: &str, bytes: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let be: Vec<u8> = [1.5f64, -2.0, 3.25, 4.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let m = load_matrix(&write("be.npy", npy(">f8", false, "(2, 2)", &be))).unwrap();
        assert_eq!(m.data[..], [1.5, -2.0, 3.25, 4.0]);
        let f: Vec<u8> = [1.0f32, 3.0, 2.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = load_matrix(&write("f.npy", npy("<f4", true, "(2, 2)", &f))).unwrap();
        assert_eq!(m.data[..], [1.0, 2.0, 3.0, 4.0]);
        let ids: Vec<u8> = [-1i16, 0, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            load_ids(&write("i.npy", npy("<i2", false, "(3,)", &ids))).unwrap(),
            [-1, 0, 7]
        );
        let half: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            load_ids(&write("h.npy", npy("<f2", false, "(2,)", &half))).unwrap(),
            [1, -2]
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = mgat_testutil::tempdir();
        let p = dir.join("d.csv");
        std::fs::write(&p, "1,2\n3,nan\n").unwrap();
        assert!(
            load_matrix(&p)
                .unwrap_err()
                .to_string()
                .contains("row 1, column 1")
        );
        std::fs::write(&p, "1,2\n3\n").unwrap();
        assert!(
            load_matrix(&p)
                .unwrap_err()
                .to_string()
                .contains("d.csv:2: 1 values")
        );
        std::fs::write(&p, "1,x\n").unwrap();
        assert!(
            load_matrix(&p)
                .unwrap_err()
                .to_string()
                .contains("`x` is not a number")
        );
        std::fs::write(&p, "1.5\n").unwrap();
        assert!(
            load_ids(&p)
                .unwrap_err()
                .to_string()
                .contains("not an integer id")
        );
        let c = dir.join("c.npy");
        std::fs::write(&c, npy("<c8", false, "(1,)", &[0; 8])).unwrap();
        assert!(
            load_ids(&c)
                .unwrap_err()
                .to_string()
                .contains("dtype `<c8`")
        );
        assert!(
            load_ids(&dir.join("missing.txt"))
                .unwrap_err()
                .to_string()
                .contains("missing.txt")
        );
    }

    #[test]
    fn headers_that_claim_more_or_less_than_the_file_holds_are_refused() {
        let dir = mgat_testutil::tempdir();
        let write = |name: &str, bytes: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let four: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let short = write("short.npy", npy("<f4", false, "(2, 3)", &four));
        let err = load_matrix(&short).unwrap_err().to_string();
        assert!(
            err.contains("short.npy") && err.contains("needs 24 bytes") && err.contains("holds 16"),
            "{err}"
        );
        let huge = write(
            "huge.npy",
            npy("<f4", false, "(4000000000000, 4000000000000)", &four),
        );
        assert!(
            load_matrix(&huge)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        let big = write("big.npy", npy("<f8", false, "(100000000000,)", &four));
        assert!(
            load_ids(&big)
                .unwrap_err()
                .to_string()
                .contains("needs 800000000000 bytes")
        );
        let mut bad_len = npy("<f4", false, "(2, 2)", &four);
        bad_len[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        let err = load_matrix(&write("len.npy", bad_len))
            .unwrap_err()
            .to_string();
        assert!(err.contains("header length 65535"), "{err}");
    }
}
