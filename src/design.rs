#![doc = include_str!("design.md")]

/// The design document checked against the code, so that it cannot drift: every function
/// it names exists where it says, and every numbered invariant has a test that exists.
#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    fn design() -> String {
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/design.md")).unwrap()
    }

    /// The source of module `m`: `src/m.rs` and every file of `src/m/` (its submodules).
    fn module_source(m: &str) -> Option<String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = fs::read_to_string(src.join(format!("{m}.rs"))).ok();
        let dir: Option<String> = fs::read_dir(src.join(m)).ok().map(|dir| {
            dir.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        });
        match (file, dir) {
            (None, None) => None,
            (f, d) => Some(f.unwrap_or_default() + &d.unwrap_or_default()),
        }
    }

    /// The code spans of the document (text between backticks).
    fn spans(doc: &str) -> Vec<&str> {
        doc.split('`').skip(1).step_by(2).collect()
    }

    /// A span naming an item by path, `module::Type::function` or `module::function`.
    fn is_path(span: &str) -> bool {
        let parts: Vec<&str> = span.split("::").collect();
        parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            && parts[0].chars().all(|c| c.is_ascii_lowercase() || c == '_')
    }

    #[test]
    fn every_function_the_design_names_is_in_its_module() {
        let doc = design();
        let mut missing = Vec::new();
        for span in spans(&doc).into_iter().filter(|s| is_path(s)) {
            let parts: Vec<&str> = span.split("::").collect();
            let name = parts[parts.len() - 1];
            let defines = |s: &str| {
                ["fn", "struct", "enum", "const", "static", "mod"]
                    .iter()
                    .any(|kw| s.contains(&format!("{kw} {name}")))
            };
            match module_source(parts[0]) {
                Some(s) if defines(&s) => {}
                _ => missing.push(span),
            }
        }
        assert!(
            missing.is_empty(),
            "src/design.md names missing items: {missing:?}"
        );
    }

    #[test]
    fn every_invariant_has_a_test_and_every_test_is_named() {
        let doc = design();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tests = fs::read_to_string(root.join("tests/invariants.rs")).unwrap();
        let section = doc
            .split("# Invariants")
            .nth(1)
            .and_then(|s| s.split("\n# ").next())
            .unwrap();
        // Numbered items start a line with "N. ".
        let mut numbers = Vec::new();
        for line in section.lines() {
            if let Some((n, _)) = line.split_once(". ") {
                if let Ok(n) = n.parse::<usize>() {
                    numbers.push(n);
                }
            }
        }
        assert_eq!(
            numbers,
            (1..=numbers.len()).collect::<Vec<_>>(),
            "numbered in order"
        );
        for n in &numbers {
            let prefix = format!("invariant_{n}_");
            assert!(
                spans(section).iter().any(|s| s.starts_with(&prefix)),
                "invariant {n} names no test"
            );
        }
        for name in spans(section)
            .into_iter()
            .filter(|s| s.starts_with("invariant_"))
        {
            assert!(
                tests.contains(&format!("fn {name}(")),
                "src/design.md names {name}, which tests/invariants.rs lacks"
            );
        }
        for line in tests.lines() {
            if let Some(name) = line.strip_prefix("fn invariant_") {
                let name = format!("invariant_{}", name.split('(').next().unwrap());
                assert!(
                    section.contains(&format!("`{name}`")),
                    "tests/invariants.rs has {name}, which src/design.md does not name"
                );
            }
        }
    }
}
