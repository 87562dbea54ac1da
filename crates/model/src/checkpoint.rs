//! Checkpoint files as users bring them: safetensors, or PyTorch's zip-pickled `.pth`/`.pt` state dict exactly as
//! torchvision saves it in `~/.cache/torch/hub/checkpoints/`. Either is read into named tensors, every read bounded
//! by the file's own size, and [`fit`] tells which backbone a file's tensors belong to.
//!
//! A `.pth` is parsed with candle's pickle reader (which only rebuilds tensors, never runs code). A state dict
//! nested under `state_dict` or `model` (the usual training checkpoints) is found, and a `module.` prefix
//! (`nn.DataParallel`) is dropped.

use super::params::{ModelError, Params};
use super::resnet::ResNet;
use crate::config::Backbone;
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file formats mgat reads weights from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    Safetensors,
    /// `torch.save` of a state dict (zip container, torch ≥ 1.6).
    TorchZip,
}

impl CheckpointFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::TorchZip => "PyTorch zip pickle",
        }
    }
}

/// A checkpoint's tensors by name.
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: CheckpointFormat,
    pub tensors: BTreeMap<String, Tensor>,
}

/// Reads a checkpoint in either format, chosen by the file's first bytes (not its extension).
pub fn read(path: &Path, device: &Device) -> Result<Checkpoint, ModelError> {
    let bad = |message: String| ModelError::Checkpoint {
        path: path.into(),
        message,
    };
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(mgat_util::fsio::IoError::at(path))?;
    let got = file
        .read(&mut magic)
        .map_err(mgat_util::fsio::IoError::at(path))?;
    let (format, tensors) = match &magic[..got] {
        b"PK\x03\x04" => (CheckpointFormat::TorchZip, read_torch_zip(path, device)?),
        [0x80, ..] => {
            return Err(bad(
                "a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch \
                 (`torch.save(torch.load(f), f)`)"
                    .into(),
            ));
        }
        _ => {
            let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
                bad(format!(
                    "neither safetensors nor a PyTorch zip checkpoint ({e})"
                ))
            })?;
            (CheckpointFormat::Safetensors, tensors.into_iter().collect())
        }
    };
    Ok(Checkpoint {
        path: path.into(),
        format,
        tensors: strip_data_parallel_prefix(tensors),
    })
}

/// `module.x` → `x` when every name has the prefix (a model saved from inside `nn.DataParallel`).
fn strip_data_parallel_prefix(tensors: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    if tensors.is_empty() || !tensors.keys().all(|k| k.starts_with("module.")) {
        return tensors;
    }
    tensors
        .into_iter()
        .map(|(k, v)| (k["module.".len()..].to_string(), v))
        .collect()
}

fn read_torch_zip(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let bad = |message: String| ModelError::Checkpoint {
        path: path.into(),
        message,
    };
    let file = std::fs::File::open(path).map_err(mgat_util::fsio::IoError::at(path))?;
    let file_len = file
        .metadata()
        .map_err(mgat_util::fsio::IoError::at(path))?
        .len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let pickle_name = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or_else(|| bad("no `data.pkl` in the archive: not a torch.save file".into()))?;
    let pickle = read_entry(&mut zip, &pickle_name, file_len).map_err(bad)?;
    if pickle.len() as u64 > MAX_PICKLE {
        return Err(bad(format!(
            "`data.pkl` is {} bytes; a state dict's pickle holds names and shapes, well under {MAX_PICKLE}",
            pickle.len()
        )));
    }
    let dir = PathBuf::from(pickle_name.trim_end_matches(".pkl"));
    let stored = read_state_dict(&pickle, &dir).map_err(bad)?;
    drop(pickle);
    refuse_overlapping_views(&stored, file_len).map_err(bad)?;
    // Each storage member is read once, however many tensors view it.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for tensor in stored {
        let name = &tensor.name;
        let path = &tensor.info.path;
        if !storages.contains_key(path) {
            let bytes = read_entry(&mut zip, path, file_len)
                .map_err(|m| bad(format!("tensor `{name}`: {m}")))?;
            storages.insert(path.clone(), bytes);
        }
        let built = tensor_from_storage(&tensor, &storages[path], device)
            .map_err(|m| bad(format!("tensor `{name}`: {m}")))?;
        tensors.insert(tensor.name, built);
    }
    if tensors.is_empty() {
        return Err(bad(
            "no tensors found: expected a state dict (name → tensor), as `torch.save(model.state_dict(), f)` writes"
                .into(),
        ));
    }
    Ok(tensors)
}

/// Refuses a state dict whose tensors, each built as its own copy, would take more than
/// [`TENSOR_BYTES_PER_FILE_BYTE`] bytes per byte of the file.
fn refuse_overlapping_views(stored: &[StoredTensor], file_len: u64) -> Result<(), String> {
    let limit = file_len.saturating_mul(TENSOR_BYTES_PER_FILE_BYTE);
    let total = stored.iter().fold(0u64, |sum, t| {
        let elements = t
            .info
            .layout
            .dims()
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64));
        sum.saturating_add(elements.saturating_mul(t.info.dtype.size_in_bytes() as u64))
    });
    if total > limit {
        return Err(format!(
            "its {} tensors would take {total} bytes, more than {TENSOR_BYTES_PER_FILE_BYTE}× the file's {file_len}: \
             they view the same storage over and over, which a model's state dict does not",
            stored.len()
        ));
    }
    Ok(())
}

/// One archive member, refused when it claims more bytes than the whole file holds (torch stores members
/// uncompressed, so a member can never be larger than its file).
fn read_entry<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    file_len: u64,
) -> Result<Vec<u8>, String> {
    let entry = zip
        .by_name(name)
        .map_err(|e| format!("archive member `{name}`: {e}"))?;
    let size = entry.size();
    if size > file_len {
        return Err(format!(
            "archive member `{name}` claims {size} bytes, more than the file's {file_len}"
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("archive member `{name}`: {e}"))?;
    Ok(bytes)
}

/// The largest `data.pkl` read: a state dict's pickle holds names and shapes only (a ResNet-50's is about 40 KB; a
/// training checkpoint's optimizer state adds a few times that).
const MAX_PICKLE: u64 = 8 << 20;
/// The most tensor bytes a checkpoint may materialise, per byte of file. Tensors that view one storage each become
/// their own copy; a state dict's tensors cover their storages about once, so a file that asks for more (20,000
/// tensors each viewing the same 400 KB) is not a model's weights.
const TENSOR_BYTES_PER_FILE_BYTE: u64 = 4;

/// A tensor the pickle describes, with the element offset exactly as the pickle wrote it.
struct StoredTensor {
    name: String,
    info: TensorInfo,
    /// torch's storage offset in elements, read before candle multiplies it by the element size (a product that
    /// wraps for offsets near 2⁶²); `None` when the call is not one the reader can see into.
    element_offset: Option<i64>,
}

/// The state dict's tensors in a pickle, once [`pickle_budget::check`](crate::pickle_budget::check) has bounded
/// what parsing it builds.
fn read_state_dict(pickle: &[u8], dir: &Path) -> Result<Vec<StoredTensor>, String> {
    crate::pickle_budget::check(pickle)?;
    parse_pickle(pickle).map(|object| state_dict_tensors(object, dir))
}

/// Runs candle's pickle reader on an in-memory pickle. Its reader indexes tuples without checking their length, so a
/// malformed file is caught here and reported rather than allowed to abort the process.
fn parse_pickle(bytes: &[u8]) -> Result<Object, String> {
    let parse = || -> candle_core::Result<Object> {
        let mut stack = Stack::empty();
        stack.read_loop(&mut std::io::Cursor::new(bytes))?;
        stack.finalize()
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(e)) => Err(format!("malformed pickle in `data.pkl`: {e}")),
        Err(_) => Err("malformed pickle in `data.pkl`".into()),
    }
}

/// The (name, storage) pairs of the state dict in `object`: the top-level dict, or the dict under `state_dict` or
/// `model` when the top level holds no tensors. Entries that are not tensors (`_metadata`, step counters) are skipped.
fn state_dict_tensors(object: Object, dir: &Path) -> Vec<StoredTensor> {
    let Object::Dict(entries) = object else {
        return Vec::new();
    };
    let mut nested = Vec::new();
    let mut found = Vec::new();
    for (key, value) in entries {
        let key_text = match &key {
            Object::Unicode(s) => Some(s.clone()),
            _ => None,
        };
        if matches!(key_text.as_deref(), Some("state_dict" | "model"))
            && matches!(value, Object::Dict(_))
        {
            nested.push(value);
            continue;
        }
        let element_offset = match &value {
            Object::Reduce { callable, args } => rebuild_offset(callable, args),
            _ => None,
        };
        let converted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            value.into_tensor_info(key, dir)
        }));
        if let (Some(name), Ok(Ok(Some(info)))) = (key_text, converted) {
            found.push(StoredTensor {
                name,
                info,
                element_offset,
            });
        }
    }
    match (found.is_empty(), nested.into_iter().next()) {
        (true, Some(inner)) => state_dict_tensors(inner, dir),
        _ => found,
    }
}

/// The storage offset argument of the `_rebuild_tensor_v2` call that `callable(args)` makes, seen through the
/// wrappers candle's reader unwraps (`_rebuild_from_type_v2`, `_rebuild_parameter`).
fn rebuild_offset(callable: &Object, args: &Object) -> Option<i64> {
    let (
        Object::Class {
            module_name,
            class_name,
        },
        Object::Tuple(args),
    ) = (callable, args)
    else {
        return None;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._tensor", "_rebuild_from_type_v2") => rebuild_offset(args.first()?, args.get(2)?),
        ("torch._utils", "_rebuild_parameter") => match args.first()? {
            Object::Reduce { callable, args } => rebuild_offset(callable, args),
            _ => None,
        },
        ("torch._utils", "_rebuild_tensor_v2") => match args.get(1)? {
            Object::Int(n) => Some(i64::from(*n)),
            Object::Long(n) => Some(*n),
            _ => None,
        },
        _ => None,
    }
}

/// Builds a tensor from its storage bytes, checking that the storage is the size the pickle says, that the offset
/// the pickle wrote is the one candle computed with, and that the layout is contiguous and lies inside the storage.
fn tensor_from_storage(
    stored: &StoredTensor,
    bytes: &[u8],
    device: &Device,
) -> Result<Tensor, String> {
    let info = &stored.info;
    let element = info.dtype.size_in_bytes();
    if info.storage_size.checked_mul(element) != Some(bytes.len()) {
        return Err(format!(
            "its storage holds {} bytes, not the {} {:?} elements the pickle says",
            bytes.len(),
            info.storage_size,
            info.dtype
        ));
    }
    let offset_in_bytes = stored
        .element_offset
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= info.storage_size)
        .and_then(|n| n.checked_mul(element));
    if offset_in_bytes != Some(info.layout.start_offset()) {
        return Err(match stored.element_offset {
            Some(n) => format!(
                "storage offset {n} lies outside its {}-element storage",
                info.storage_size
            ),
            None => "its storage offset cannot be read".into(),
        });
    }
    if !info.layout.is_contiguous() {
        return Err(format!(
            "stored non-contiguous (stride {:?}); save `{{k: v.contiguous() for k, v in sd.items()}}`",
            info.layout.stride()
        ));
    }
    let dims = info.layout.dims();
    // candle's pickle reader gives the storage offset in bytes (torch's element offset × the dtype's size).
    let start = Some(info.layout.start_offset())
        .filter(|&s| s <= bytes.len())
        .ok_or_else(|| {
            format!(
                "storage offset of {} bytes lies beyond its {}-byte storage",
                info.layout.start_offset(),
                bytes.len()
            )
        })?;
    let len = dims
        .iter()
        .try_fold(info.dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_add(start))
        .filter(|&end| end <= bytes.len())
        .map(|end| end - start)
        .ok_or_else(|| {
            format!(
                "shape {dims:?} ({:?}) does not fit its {}-byte storage",
                info.dtype,
                bytes.len()
            )
        })?;
    Tensor::from_raw_buffer(&bytes[start..start + len], info.dtype, dims, device)
        .map_err(|e| e.to_string())
}

/// How well a checkpoint fits one backbone: the backbone's tensors found with the right shape, missing, or
/// present with another shape.
#[derive(Debug, Clone)]
pub struct Fit {
    pub backbone: Backbone,
    pub width: usize,
    pub matched: usize,
    pub expected: usize,
    /// (name, shape in the file, shape the backbone has), for the first few that differ.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    pub missing: Vec<String>,
}

impl Fit {
    pub fn is_exact(&self) -> bool {
        self.matched == self.expected
    }

    /// `resnet50 with width 64 (all 320 backbone tensors match)`, or how many match and the first that differs.
    pub fn describe(&self) -> String {
        let what = format!("{} with width {}", self.backbone.name(), self.width);
        if self.is_exact() {
            return format!("{what} (all {} backbone tensors match)", self.expected);
        }
        let first = match (self.wrong_shape.first(), self.missing.first()) {
            (Some((name, found, expected)), _) => {
                format!("; `{name}` is {found:?}, that backbone has {expected:?}")
            }
            (None, Some(name)) => format!("; `{name}` is missing"),
            (None, None) => String::new(),
        };
        format!(
            "{what} at best ({} of {} backbone tensors match{first})",
            self.matched, self.expected
        )
    }
}

/// The backbone (and base width, read from `conv1.weight`) whose tensors the checkpoint matches best.
pub fn fit(checkpoint: &Checkpoint) -> Option<Fit> {
    let width = checkpoint
        .tensors
        .get("conv1.weight")?
        .dims()
        .first()
        .copied()?;
    [Backbone::Resnet18, Backbone::Resnet34, Backbone::Resnet50]
        .into_iter()
        .filter_map(|b| fit_one(checkpoint, b, width))
        .max_by_key(|f| (f.matched, std::cmp::Reverse(f.expected)))
}

fn fit_one(checkpoint: &Checkpoint, backbone: Backbone, width: usize) -> Option<Fit> {
    let mut p = Params::new(Device::Cpu, DType::F32, 0);
    ResNet::new(&mut p, backbone, width, 2).ok()?;
    let mut fit = Fit {
        backbone,
        width,
        matched: 0,
        expected: 0,
        wrong_shape: Vec::new(),
        missing: Vec::new(),
    };
    for (name, tensor) in p.tensors() {
        fit.expected += 1;
        match checkpoint.tensors.get(&name) {
            Some(t) if t.dims() == tensor.dims() => fit.matched += 1,
            Some(t) => fit
                .wrong_shape
                .push((name, t.dims().to_vec(), tensor.dims().to_vec())),
            None => fit.missing.push(name),
        }
    }
    fit.wrong_shape.sort();
    fit.missing.sort();
    Some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(ext: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../tests/data/weights/resnet18-w4.{ext}"))
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1())
            .unwrap()
    }

    /// A zip archive holding one `archive/data.pkl` with `pickle` in it, stored uncompressed as torch.save does.
    fn pth_with_pickle(path: &Path, pickle: &[u8]) {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", options).unwrap();
        std::io::Write::write_all(&mut zip, pickle).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn a_pickle_nesting_a_million_lists_is_refused_before_it_is_parsed() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("deep.pth");
        // PROTO 2, a million EMPTY_LISTs, each APPENDed into the one below, STOP: 2 MB nesting 10^6 deep.
        let depth = 1_000_000;
        let mut pickle = vec![0x80, 2];
        pickle.extend(std::iter::repeat_n(b']', depth));
        pickle.extend(std::iter::repeat_n(b'a', depth - 1));
        pickle.push(b'.');
        pth_with_pickle(&path, &pickle);
        let before = ALLOCATED.with(|a| a.get());
        let Err(err) = read(&path, &Device::Cpu) else {
            panic!("a pickle without tensors read");
        };
        let allocated = ALLOCATED.with(|a| a.get()) - before;
        assert!(err.to_string().contains("deep.pth"), "{err}");
        assert!(err.to_string().contains("stacks more than"), "{err}");
        // Parsed, it took ~180× its size; refused by the walk, a small multiple.
        assert!(
            allocated < 4 * pickle.len(),
            "{allocated} bytes for a {}-byte pickle",
            pickle.len()
        );
        // Beyond the cap it is refused before parsing.
        let mut big = vec![0x80, 2];
        big.extend(std::iter::repeat_n(b']', (MAX_PICKLE + 1) as usize));
        pth_with_pickle(&path, &big);
        let Err(err) = read(&path, &Device::Cpu) else {
            panic!("an oversized pickle read");
        };
        assert!(
            err.to_string()
                .contains("a state dict's pickle holds names and shapes"),
            "{err}"
        );
    }

    /// A torch.save archive whose state dict names `tensors` (name, storage offset in elements, length), all of
    /// them views of one float storage `0, 1, 2, …` of `storage_elements`, written with the opcodes torch uses.
    fn pth_with_views(path: &Path, tensors: &[(&str, i64, u8)], storage_elements: u32) {
        let text = |p: &mut Vec<u8>, s: &str| {
            p.push(b'X');
            p.extend((s.len() as u32).to_le_bytes());
            p.extend(s.as_bytes());
        };
        let mut pickle = vec![0x80, 2, b'}'];
        for &(name, offset, len) in tensors {
            text(&mut pickle, name);
            pickle.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut pickle, "storage");
            pickle.extend(b"ctorch\nFloatStorage\n");
            text(&mut pickle, "0");
            text(&mut pickle, "cpu");
            pickle.push(b'J');
            pickle.extend(storage_elements.to_le_bytes());
            pickle.extend([b't', b'Q', 0x8a, 8]);
            pickle.extend(offset.to_le_bytes());
            pickle.extend([b'K', len, 0x85, b'K', 1, 0x85, 0x89, b't', b'R', b's']);
        }
        pickle.push(b'.');
        let storage: Vec<u8> = (0..storage_elements)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", options).unwrap();
        std::io::Write::write_all(&mut zip, &pickle).unwrap();
        zip.start_file("archive/data/0", options).unwrap();
        std::io::Write::write_all(&mut zip, &storage).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn a_storage_offset_that_wraps_when_scaled_to_bytes_is_refused() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("offset.pth");
        pth_with_views(&path, &[("w", 2, 2)], 16);
        let ok = read(&path, &Device::Cpu).unwrap();
        assert_eq!(values(&ok.tensors["w"]), [2.0, 3.0]);
        // 2⁶² + 2 elements × 4 bytes is 2⁶⁴ + 8: wrapped, it would read elements 2 and 3 again.
        for offset in [(1i64 << 62) + 2, 17, -1, i64::MAX] {
            pth_with_views(&path, &[("w", offset, 2)], 16);
            let Err(err) = read(&path, &Device::Cpu) else {
                panic!("storage offset {offset} read");
            };
            let err = err.to_string();
            assert!(
                err.contains("offset.pth") && err.contains("tensor `w`"),
                "{err}"
            );
            assert!(
                err.contains(&format!("storage offset {offset} lies outside")),
                "{err}"
            );
        }
    }

    #[test]
    fn thousands_of_tensors_each_copying_one_storage_are_refused_before_any_is_built() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("views.pth");
        // 2,000 tensors of 255 elements over a 1 KB storage: 2 MB of tensors from a 150 KB file.
        let names: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
        let views: Vec<(&str, i64, u8)> = names.iter().map(|n| (n.as_str(), 0, 255)).collect();
        pth_with_views(&path, &views, 256);
        let Err(err) = read(&path, &Device::Cpu) else {
            panic!("2,000 copies of one storage read");
        };
        assert!(
            err.to_string()
                .contains("view the same storage over and over"),
            "{err}"
        );
        // A storage that a few tensors view is read as usual.
        pth_with_views(&path, &views[..4], 256);
        assert_eq!(read(&path, &Device::Cpu).unwrap().tensors.len(), 4);
    }

    /// Counts the bytes each thread allocates, so that a test can see what one call allocated.
    struct Counting;

    std::thread_local! {
        static ALLOCATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn count(bytes: usize) {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes));
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; counting touches no allocation.
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            count(layout.size());
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
            count(size);
            unsafe { std::alloc::System.realloc(ptr, layout, size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn a_storage_that_thousands_of_tensors_view_is_read_once() {
        // scripts/make-views-fixture.py: 4000 views of one 64 KB storage (`base[4i .. 4i + 2]` of 0, 1, 2, …).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/weights/views.pth");
        let before = ALLOCATED.with(|a| a.get());
        let tensors = read_torch_zip(&path, &Device::Cpu).unwrap();
        let allocated = ALLOCATED.with(|a| a.get()) - before;
        assert_eq!(tensors.len(), 4000);
        assert_eq!(values(&tensors["v0100"]), [400.0, 401.0]);
        assert_eq!(values(&tensors["v3999"]), [15996.0, 15997.0]);
        // Read once per tensor, the storage alone would be 4000 × 64 KB = 262 MB.
        assert!(
            allocated < 32 << 20,
            "{allocated} bytes allocated reading 4000 views of one 64 KB storage"
        );
    }

    #[test]
    fn a_storage_offset_beyond_the_storage_is_an_error_not_a_wrap() {
        let stored = |offset: usize| StoredTensor {
            name: "w".into(),
            info: TensorInfo {
                name: "w".into(),
                dtype: DType::F32,
                layout: candle_core::Layout::contiguous_with_offset((2,), offset * 4),
                path: "archive/data/0".into(),
                storage_size: 4,
            },
            element_offset: Some(offset as i64),
        };
        // 2 floats fit at element 2 of 4, not at 3.
        let storage = [0u8; 16];
        let ok = tensor_from_storage(&stored(2), &storage, &Device::Cpu).unwrap();
        assert_eq!(ok.dims(), [2]);
        for offset in [3, 5, 1usize << 40] {
            let err = tensor_from_storage(&stored(offset), &storage, &Device::Cpu).unwrap_err();
            assert!(err.contains("storage"), "{offset}: {err}");
        }
        // A storage member shorter or longer than the pickle says is refused too.
        let err = tensor_from_storage(&stored(0), &[0u8; 12], &Device::Cpu).unwrap_err();
        assert!(err.contains("holds 12 bytes, not the 4"), "{err}");
    }

    #[test]
    fn a_torchvision_pth_and_its_safetensors_twin_read_to_identical_tensors() {
        let pth = read(&fixture("pth"), &Device::Cpu).unwrap();
        let st = read(&fixture("safetensors"), &Device::Cpu).unwrap();
        assert_eq!(pth.format, CheckpointFormat::TorchZip);
        assert_eq!(st.format, CheckpointFormat::Safetensors);
        assert_eq!(
            pth.tensors.keys().collect::<Vec<_>>(),
            st.tensors.keys().collect::<Vec<_>>()
        );
        assert!(pth.tensors.contains_key("fc.weight"));
        assert!(pth.tensors.contains_key("bn1.num_batches_tracked"));
        for (name, a) in &pth.tensors {
            let b = &st.tensors[name];
            assert_eq!((a.dtype(), a.dims()), (b.dtype(), b.dims()), "{name}");
            assert_eq!(values(a), values(b), "{name}");
        }
        let fit = fit(&pth).unwrap();
        assert!(fit.is_exact(), "{}", fit.describe());
        assert_eq!((fit.backbone, fit.width), (Backbone::Resnet18, 4));
    }

    #[test]
    fn a_file_of_another_width_names_both_shapes_and_what_it_looks_like() {
        let ckpt = read(&fixture("pth"), &Device::Cpu).unwrap();
        let mut p = Params::new(Device::Cpu, DType::F32, 0);
        ResNet::new(&mut p, Backbone::Resnet18, 8, 1).unwrap();
        let err = p.load_from(&ckpt, |_| true).unwrap_err().to_string();
        assert!(
            err.contains("`bn1.bias` has shape [4], the model expects [8]"),
            "{err}"
        );
        let describe = fit(&ckpt).unwrap().describe();
        assert!(
            describe.starts_with("resnet18 with width 4 (all"),
            "{describe}"
        );
    }

    #[test]
    fn damaged_pth_files_are_errors_that_name_the_file_never_a_crash() {
        let good = std::fs::read(fixture("pth")).unwrap();
        let dir = mgat_testutil::tempdir();
        let path = dir.join("bad.pth");
        let mut cases: Vec<Vec<u8>> = [10, 100, 1000, good.len() / 2, good.len() - 30]
            .iter()
            .map(|&n| good[..n].to_vec())
            .collect();
        // Every byte of the pickle and the central directory changed in turn (the data members only change values).
        let pickle_at = good.windows(8).position(|w| w == b"data.pkl").unwrap();
        for i in (pickle_at..pickle_at + 2000).chain(good.len() - 2000..good.len()) {
            let mut bytes = good.clone();
            bytes[i] ^= 0x5a;
            cases.push(bytes);
        }
        cases.push(b"PK\x03\x04 not really a zip".to_vec());
        cases.push(vec![0x80, 2, b'}', b'q']);
        let mut errors = 0;
        for bytes in cases {
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = read(&path, &Device::Cpu) {
                assert!(e.to_string().contains("bad.pth"), "{e}");
                errors += 1;
            }
        }
        assert!(errors > 100, "{errors}");
    }
}
