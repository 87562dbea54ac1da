//! The token-stream treatment of Rust source: a file's code as `syn` parses it, with doc comments and
//! `#[cfg(test)]` items removed, so that comments, formatting and unit tests change no fingerprint; and the module
//! tree of a file, for code whose file set no dep-info names.

use crate::depinfo::File;
use std::path::{Path, PathBuf};

/// The token stream of a `.rs` file's code, or `None` for any other file, or one that does not parse as a file
/// (an `include!`d expression), whose bytes count instead.
pub fn of_rust_file(path: &Path, bytes: &[u8]) -> Option<String> {
    if path.extension().is_none_or(|e| e != "rs") {
        return None;
    }
    let mut file = syn::parse_file(std::str::from_utf8(bytes).ok()?).ok()?;
    file.attrs.retain(|a| !a.path().is_ident("doc"));
    strip(&mut file.items);
    Some(quote::ToTokens::to_token_stream(&file).to_string())
}

/// Adds `root` (relative to `base`) and every module file it declares, not `#[cfg(test)]` ones, to `out`.
pub fn module_tree(base: &Path, root: &Path, out: &mut Vec<File>) -> Result<(), String> {
    let path = base.join(root);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file =
        syn::parse_file(&text).map_err(|e| format!("{}: cannot parse: {e}", path.display()))?;
    out.push(File {
        label: root.display().to_string(),
        path,
    });
    declared_modules(&file.items, &module_dir(root), base, out)
}

fn declared_modules(
    items: &[syn::Item],
    dir: &Path,
    base: &Path,
    out: &mut Vec<File>,
) -> Result<(), String> {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        if m.attrs.iter().any(is_cfg_test) {
            continue;
        }
        let name = m.ident.to_string();
        match (&m.content, path_attr(&m.attrs)) {
            (Some((_, inner)), _) => declared_modules(inner, &dir.join(&name), base, out)?,
            (None, Some(path)) => module_tree(base, &dir.join(path), out)?,
            (None, None) => {
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(&name).join("mod.rs");
                module_tree(
                    base,
                    if base.join(&flat).exists() {
                        &flat
                    } else {
                        &nested
                    },
                    out,
                )?;
            }
        }
    }
    Ok(())
}

/// `#[path = "…"]` on a module.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.path().is_ident("path"))
        .and_then(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
}

/// Where the modules a file declares live: its own folder for `lib.rs`, `main.rs` and `mod.rs`, `foo/` for `foo.rs`.
fn module_dir(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new(""));
    match path.file_stem().and_then(|s| s.to_str()) {
        Some("lib" | "main" | "mod") | None => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
    }
}

/// Removes `#[cfg(test)]` items and doc attributes from `items`, inline modules included.
fn strip(items: &mut Vec<syn::Item>) {
    items.retain(|item| !item_attrs(item).iter().any(is_cfg_test));
    for item in items.iter_mut() {
        strip_docs(item);
        if let syn::Item::Mod(syn::ItemMod {
            content: Some((_, inner)),
            ..
        }) = item
        {
            strip(inner);
        }
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

fn is_cfg_test(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("cfg")
        && attr
            .parse_args::<syn::Ident>()
            .is_ok_and(|ident| ident == "test")
}

/// Drops every `#[doc]` attribute (doc comments) anywhere inside `item`.
fn strip_docs(item: &mut syn::Item) {
    struct Docs;
    impl syn::visit_mut::VisitMut for Docs {
        fn visit_attributes_mut(&mut self, attrs: &mut Vec<syn::Attribute>) {
            attrs.retain(|a| !a.path().is_ident("doc"));
        }
    }
    syn::visit_mut::VisitMut::visit_item_mut(&mut Docs, item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_docs_and_test_items_do_not_change_the_tokens() {
        let plain = b"pub fn f() -> u32 { 1 }\n";
        let noisy = b"//! doc\n/// doc\npub fn f() -> u32 {\n    // comment\n    1\n}\n#[cfg(test)]\nmod tests { fn t() {} }\n";
        let code = |b: &[u8]| of_rust_file(Path::new("a.rs"), b).unwrap();
        assert_eq!(code(plain), code(noisy));
        assert_ne!(code(plain), code(b"pub fn f() -> u32 { 2 }\n"));
        assert_eq!(of_rust_file(Path::new("a.bin"), plain), None);
    }
}
