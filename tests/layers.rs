//! The layer table of `src/lib.rs` is true: every module of `src/` is in it once, and every
//! `crate::` path a module names outside its unit tests points to a module of a lower layer.
//! (A unit-test module at the end of a file, `#[cfg(test)] mod tests`, or in a file of its
//! own, `src/m/tests.rs`, may reach anything.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `(module, layer)` for every module of the table in `lib.rs`: the rows whose first cell
/// is a number, the modules in backquotes in the second.
fn table(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(layer) = cells[0].parse::<usize>() else {
            continue;
        };
        for module in cells[1].split(',') {
            let module = module.trim().trim_matches('`').to_string();
            assert!(
                layers.insert(module.clone(), layer).is_none(),
                "{module} is in the layer table twice"
            );
        }
    }
    layers
}

/// Root re-exports (`pub use module::{Item, ...};` in `lib.rs`): item → module, so that
/// `crate::Cohort` counts as an edge to `api`.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        // A whole crate re-exported (`pub use allocator_api2;`) names no module of ours.
        let Some((module, names)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            items.insert(name.trim().to_string(), module.to_string());
        }
    }
    items
}

/// The modules a source names through `crate::`, its unit tests and comments left out.
fn uses(source: &str) -> BTreeSet<String> {
    let code = match source.find("\n#[cfg(test)]\nmod tests") {
        Some(end) => &source[..end],
        None => source,
    };
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            // `$crate::` in a macro is the crate's root, named from outside.
            let macro_root = rest[..at].ends_with('$');
            let after = &rest[at + "crate::".len()..];
            if !macro_root && !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                if let Some(group) = after.strip_prefix('{') {
                    // `use crate::{a, b::c}` (one line).
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    names.extend(group.split(',').map(|p| first_segment(p.trim())));
                } else {
                    names.insert(first_segment(after));
                }
            }
            rest = after;
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every source file of `src` with the top-level module it belongs to: `src/m.rs` and the
/// files of its submodules, `src/m/*.rs`, are all module `m`'s.
fn sources(src: &Path) -> Vec<(String, std::path::PathBuf)> {
    let rs = |p: &Path| p.extension().and_then(|e| e.to_str()) == Some("rs");
    let stem = |p: &Path| p.file_stem().unwrap().to_str().unwrap().to_string();
    let mut all = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let module = path.file_name().unwrap().to_str().unwrap().to_string();
            for sub in std::fs::read_dir(&path).unwrap() {
                let sub = sub.unwrap().path();
                // `src/m/tests.rs` is `m`'s unit-test module in a file of its own: it may
                // reach anything, as `#[cfg(test)] mod tests` at the end of a file may.
                if rs(&sub) && stem(&sub) != "tests" {
                    all.push((module.clone(), sub));
                }
            }
        } else if rs(&path) {
            all.push((stem(&path), path));
        }
    }
    all
}

/// Every upward or unknown edge of the sources in `src`, as messages.
fn violations(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = table(&lib);
    let items = reexports(&lib);
    let mut found = Vec::new();
    let mut files = BTreeSet::new();
    for (module, path) in sources(src) {
        if module == "lib" {
            continue;
        }
        files.insert(module.clone());
        let Some(&layer) = layers.get(&module) else {
            found.push(format!("{} is not in the layer table", path.display()));
            continue;
        };
        for name in uses(&std::fs::read_to_string(&path).unwrap()) {
            let target = items.get(&name).cloned().unwrap_or(name);
            if target == module {
                continue;
            }
            match layers.get(&target) {
                None => found.push(format!("{module} names crate::{target}, not in the table")),
                Some(&t) if t < layer => {}
                Some(&t) => found.push(format!(
                    "{module} (layer {layer}) uses {target} (layer {t}): not a lower layer"
                )),
            }
        }
    }
    for module in layers.keys().filter(|m| !files.contains(*m)) {
        found.push(format!("the layer table names {module}, which has no file"));
    }
    found
}

#[test]
fn no_module_uses_a_module_of_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_paths_reexports_and_skips_tests_and_comments() {
    let source = "use crate::{alloc, pool::Pool};\n\
                  // crate::api in a comment\n\
                  fn f() { crate::Cohort::new(); $crate::Lifetime; }\n\
                  #[cfg(test)]\nmod tests {\n    use crate::verify;\n}\n";
    let names = uses(source);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["Cohort", "alloc", "pool"],
        "grouped paths and root items are seen; comments, `$crate` and tests are not"
    );
    let lib = "pub use api::{BlockReport, Cohort};\npub use join::Join;\n\
               //! | 0 | `class`, `os` | x |\n//! | 1 | `api` | y |\n";
    assert_eq!(reexports(lib)["Cohort"], "api");
    assert_eq!(reexports(lib)["Join"], "join");
    assert_eq!(table(lib)["os"], 0);
    assert_eq!(table(lib)["api"], 1);
}
