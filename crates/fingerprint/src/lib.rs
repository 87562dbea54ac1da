//! The compiler's side of mgat's code fingerprints, as procedural macros expanded while rustc compiles the `mgat`
//! crate (after every crate it depends on has been compiled):
//!
//! - [`compiled_sources!`]`(mgat_synth, mgat_data, …)`: for each named crate, every file rustc read to compile it, taken
//!   from the dep-info file rustc wrote beside that crate's library (`deps/<crate>-<hash>.d`, found through the
//!   `--extern` argument of the compilation running this macro). So `include_str!`/`include_bytes!` data, `#[path]`
//!   modules and code a `build.rs` generated are in, and test-only modules (never compiled into the library) are
//!   out. Also the environment variables the crate read with `env!`/`option_env!` (dep-info's `env-dep` lines),
//!   except the ones that name build folders.
//! - [`module_sources!`]`("src/report/mod.rs", …)`: the files of the module trees rooted at the given files of the
//!   crate being compiled (`mod` items, `#[path]` included), for code that is not a crate of its own.
//!
//! Each expands to `&[(name, &[(file, sha256 hex)], &[env])]`. A `.rs` file is digested as its token stream with doc
//! comments and `#[cfg(test)]` items left out ([`tokens`]), so comments, formatting and unit tests move nothing; any
//! other file by its bytes. A crate whose dep-info cannot be found is a compile error, never a silent gap.

use proc_macro::TokenStream;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

mod depinfo;
mod tokens;

/// `compiled_sources!(crate_a, crate_b, …)`: what rustc read to compile each named crate (see the crate docs).
#[proc_macro]
pub fn compiled_sources(input: TokenStream) -> TokenStream {
    let names = match comma_separated::<syn::Ident>(input) {
        Ok(names) => names,
        Err(e) => return e.to_compile_error().into(),
    };
    let externs = depinfo::externs(&rustc_args());
    let mut crates = Vec::new();
    for name in names {
        let crate_name = name.to_string();
        let compiled = externs
            .get(&crate_name)
            .ok_or_else(|| {
                format!("`{crate_name}` is not a dependency of the crate being compiled (no --extern {crate_name}=…)")
            })
            .and_then(|lib| depinfo::read(lib));
        match compiled {
            Ok(info) => crates.push((crate_name, digests(&info.files), info.env)),
            Err(e) => {
                return syn::Error::new(
                    name.span(),
                    format!("code fingerprint of {crate_name}: {e}"),
                )
                .to_compile_error()
                .into();
            }
        }
    }
    expand(crates)
}

/// `module_sources!("path/to/root.rs", …)`: the module trees rooted at those files of the crate being compiled.
#[proc_macro]
pub fn module_sources(input: TokenStream) -> TokenStream {
    let roots = match comma_separated::<syn::LitStr>(input) {
        Ok(roots) => roots,
        Err(e) => return e.to_compile_error().into(),
    };
    let base = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let mut crates = Vec::new();
    for root in roots {
        let mut files = Vec::new();
        if let Err(e) = tokens::module_tree(&base, Path::new(&root.value()), &mut files) {
            return syn::Error::new(root.span(), e).to_compile_error().into();
        }
        files.sort();
        files.dedup();
        crates.push((root.value(), digests(&files), Vec::new()));
    }
    expand(crates)
}

/// A macro's input as `a, b, …`.
fn comma_separated<T: syn::parse::Parse>(input: TokenStream) -> syn::Result<Vec<T>> {
    let list = syn::parse::Parser::parse(
        syn::punctuated::Punctuated::<T, syn::Token![,]>::parse_terminated,
        input,
    )?;
    Ok(list.into_iter().collect())
}

/// The arguments of the rustc (or clippy-driver, rustdoc) process expanding this macro, `@file` arguments read.
fn rustc_args() -> Vec<String> {
    let mut out = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix('@').map(std::fs::read_to_string) {
            Some(Ok(text)) => out.extend(text.lines().map(String::from)),
            _ => out.push(arg),
        }
    }
    out
}

/// Each file with the SHA-256 of what it contributes: a `.rs` file's token stream, any other file's bytes. A file
/// that cannot be read contributes its error, so that it still moves the fingerprint when it appears.
fn digests(files: &[depinfo::File]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| {
            let digest = match std::fs::read(&f.path) {
                Ok(bytes) => match tokens::of_rust_file(&f.path, &bytes) {
                    Some(tokens) => hex(Sha256::digest(tokens.as_bytes())),
                    None => hex(Sha256::digest(&bytes)),
                },
                Err(e) => format!("unreadable: {e}"),
            };
            (f.label.clone(), digest)
        })
        .collect()
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

type Expanded = Vec<(String, Vec<(String, String)>, Vec<String>)>;

fn expand(crates: Expanded) -> TokenStream {
    let items = crates.iter().map(|(name, files, env)| {
        let files = files.iter().map(|(f, d)| quote::quote!((#f, #d)));
        quote::quote!((#name, &[#(#files),*] as &[(&str, &str)], &[#(#env),*] as &[&str]))
    });
    quote::quote!(&[#(#items),*]).into()
}
