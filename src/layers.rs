//! The layers, checked: every module of this crate may import only modules of a lower
//! layer (`LAYERS`), so no import points up and no two modules import each other. The
//! sans-IO core is a crate of its own (`oxccl-sched`), where the compiler enforces it;
//! this test enforces the rest on every run of the unit tests. Test code (files named
//! `tests.rs`, `*_tests.rs`, `testkit.rs`, and inline `#[cfg(test)]` modules) may reach
//! anywhere.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and its layer, bottom first. The core crate's modules (`algo`,
/// `reduce`, `error`) are layer 0.
const LAYERS: &[(&str, u8)] = &[
    ("algo", 0),
    ("reduce", 0),
    ("error", 0),
    ("sys", 1),
    ("debug", 1),
    ("auth", 1),
    ("config", 2),
    ("transport", 3),
    ("topo", 3),
    ("bootstrap", 3),
    ("engine", 4),
    ("coll", 4),
    ("comm", 5),
    ("launch", 6),
    // The fuzz harness drives parsers of every layer; only tests and the fuzz crate use it.
    ("fuzz", 7),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The crate root's re-exports of types: `crate::Config` is `config`'s, and so on.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub use ")) {
        let line = line.trim_end_matches(';');
        let Some((module, names)) = line.split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim) {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                map.insert(name.to_string(), module.to_string());
            }
        }
    }
    map
}

/// The modules `src` (one file's text, test modules cut off) names as `crate::X`.
fn imports(src: &str, names: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            let firsts: Vec<String> = match word.strip_prefix('{') {
                Some(_) => {
                    let end = rest.find('}').unwrap_or(rest.len());
                    rest[1..end]
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                        .collect()
                }
                None => vec![word],
            };
            for w in firsts.into_iter().filter(|w| !w.is_empty()) {
                out.push(names.get(&w).cloned().unwrap_or(w));
            }
        }
    }
    out
}

/// A file's text without its inline test module.
fn without_tests(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &src[..i],
        None => src,
    }
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn every_module_imports_only_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let names = reexports(&lib);
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = Vec::new();
    let mut edges = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let name = f.file_name().unwrap().to_string_lossy();
        let test_file = name == "tests.rs" || name.ends_with("_tests.rs") || name == "testkit.rs";
        if module == "bin" || module == "lib" || module == "layers" || test_file {
            continue;
        }
        let from = layer(module).unwrap_or_else(|| panic!("{rel}: module {module} has no layer"));
        let text = std::fs::read_to_string(f).unwrap();
        for to in imports(without_tests(&text), &names) {
            if to == module {
                continue;
            }
            edges += 1;
            match layer(&to) {
                Some(l) if l < from => {}
                _ => wrong.push(format!("{rel}: {module} (layer {from}) imports {to}")),
            }
        }
    }
    assert!(
        edges > 100,
        "only {edges} imports found: the scan is broken"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_sees_grouped_and_re_exported_imports() {
    let names = reexports("pub use config::Config;\npub use comm::{Communicator, Scope};\n");
    let got = imports(
        "use crate::{Config, transport::Tag};\nfn f() { crate::Communicator::x(); } // crate::launch",
        &names,
    );
    assert_eq!(got, ["config", "transport", "comm"]);
}
