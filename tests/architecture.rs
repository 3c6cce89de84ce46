//! Keeps the architecture written in ARCHITECTURE.md honest: reads `cargo metadata` and fails
//! on a forbidden dependency edge or a crate that breaks the flat `crates/<name>` layout.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Per crate, the dependencies it must never have (normal or build; dev-dependencies are free).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "cairn-types",
        &[
            "tokio",
            "ractor",
            "fjall",
            "redb",
            "foundationdb",
            "axum",
            "cairn-store",
            "cairn-store-embedded",
            "cairn-store-fdb",
            "cairn-core",
            "cairn-runtime",
        ],
    ),
    (
        "cairn-store",
        &[
            "fjall",
            "redb",
            "foundationdb",
            "cairn-store-embedded",
            "cairn-store-fdb",
            "axum",
        ],
    ),
    (
        "cairn-store-embedded",
        &["foundationdb", "cairn-store-fdb", "redb", "axum"],
    ),
    (
        "cairn-store-fdb",
        &["fjall", "redb", "cairn-store-embedded", "axum"],
    ),
    (
        "cairn-core",
        &[
            "tokio",
            "ractor",
            "cairn-store",
            "cairn-store-embedded",
            "cairn-store-fdb",
            "axum",
        ],
    ),
    (
        // What a transition writes, as data: no runtime, no actors, no clock of its own.
        "cairn-plan",
        &[
            "tokio",
            "ractor",
            "futures",
            "send_wrapper",
            "cairn-runtime",
            "cairn",
            "cairn-store-embedded",
            "cairn-store-fdb",
            "axum",
            "tonic",
        ],
    ),
    (
        "cairn-runtime",
        &["axum", "cairn-store-embedded", "cairn-store-fdb"],
    ),
    (
        "cairn-temporal",
        &[
            "cairn-server",
            "axum",
            "cairn-store-embedded",
            "cairn-store-fdb",
        ],
    ),
    (
        "cairn-sim",
        &[
            "axum",
            "cairn-store-embedded",
            "cairn-store-fdb",
            "fjall",
            "foundationdb",
        ],
    ),
];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("metadata is JSON")
}

/// Each workspace package with its non-dev dependency names.
fn packages(metadata: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let manifest = package["manifest_path"].as_str().expect("path").to_string();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().expect("dep name").to_string())
            .collect();
        out.insert(name, (manifest, deps));
    }
    out
}

/// Proves no crate depends on something its invariant forbids (for example, that the store
/// contract knows no backend and the types crate does no I/O).
#[test]
fn no_forbidden_dependency_edges() {
    let packages = packages(&metadata());
    let mut violations = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        let Some((_, deps)) = packages.get(*krate) else {
            continue;
        };
        for dep in deps {
            if forbidden.contains(&dep.as_str()) {
                violations.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(violations.is_empty(), "forbidden edges: {violations:#?}");
    assert!(
        packages.contains_key("cairn-store"),
        "metadata lists the workspace"
    );
}

/// The packages that own the top-level folders the workspace layout requires.
const TOP_LEVEL: &[(&str, &str)] = &[
    ("cairn-examples", "examples"),
    ("cairn-tests", "tests"),
    ("cairn-benches", "benches"),
];

/// Proves every crate sits at `crates/<its name>/`, except the packages behind the top-level
/// `examples/`, `tests/` and `benches/` folders, which sit exactly there.
#[test]
fn crates_live_one_level_under_crates_named_as_their_folder() {
    for (name, (manifest, _)) in packages(&metadata()) {
        let expected = match TOP_LEVEL.iter().find(|(package, _)| *package == name) {
            Some((_, folder)) => format!("/{folder}/Cargo.toml"),
            None => format!("/crates/{name}/Cargo.toml"),
        };
        assert!(manifest.ends_with(&expected), "{name} is at {manifest}");
    }
}

/// The top-level modules of the crate whose source is `src`, each with the top-level modules
/// its non-test code names through `crate::` (a `use crate::{a, b::c}` group counts its first
/// segments; doc links count too). A name reached through a re-export at the crate root
/// (`crate::Type`, from `pub use module::{Type, …}` in `lib.rs`) counts as its module.
fn module_imports(src: &Path) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    files(src, &mut paths);
    let module_of = |path: &Path| {
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        name.strip_suffix(".rs").unwrap_or(&name).to_string()
    };
    let names: std::collections::BTreeSet<String> = paths
        .iter()
        .map(|p| module_of(p))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    // Names the crate root re-exports, with the module each comes from.
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root)) else {
            continue;
        };
        for (at, _) in text.match_indices("pub use ") {
            let rest = &text[at + "pub use ".len()..];
            let Some((module, items)) = rest.split_once("::") else {
                continue;
            };
            if !names.contains(module) {
                continue;
            }
            let items = items.split(';').next().unwrap_or("");
            let items = items.trim().trim_start_matches('{').trim_end_matches('}');
            for item in items.split(',') {
                let name = item.rsplit(" as ").next().unwrap_or("").trim();
                if !name.is_empty() && !name.contains("::") {
                    reexported.insert(name.to_string(), module.to_string());
                }
            }
        }
    }
    let mut imports: BTreeMap<String, std::collections::BTreeSet<String>> = names
        .iter()
        .map(|n| (n.clone(), Default::default()))
        .collect();
    for path in &paths {
        let from = module_of(path);
        if !names.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read source");
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let mut targets = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let (mut depth, mut entry) = (0usize, String::new());
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            targets.push(std::mem::take(&mut entry));
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        entry.push(c);
                    }
                }
                targets.push(entry);
            } else {
                targets.push(rest.to_string());
            }
            for target in targets {
                let name: String = target
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let module = reexported.get(&name).cloned().unwrap_or(name);
                if module != from && names.contains(&module) {
                    imports.get_mut(&from).expect("a module").insert(module);
                }
            }
        }
    }
    imports
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, std::collections::BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, std::collections::BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("on the stack");
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

/// Proves the cycle finder finds cycles, and only cycles.
#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert!(cycles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    assert_eq!(
        cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}

/// Proves no crate's modules import each other in a cycle: each module can be read (and
/// changed) knowing only the modules below it.
#[test]
fn no_module_import_cycles() {
    let mut violations = Vec::new();
    let mut seen = 0;
    for (name, (manifest, _)) in packages(&metadata()) {
        let src = Path::new(&manifest)
            .parent()
            .expect("crate dir")
            .join("src");
        if !src.is_dir() {
            continue;
        }
        seen += 1;
        let found = cycles(&module_imports(&src));
        if !found.is_empty() {
            violations.push(format!("{name}: modules importing each other: {found:?}"));
        }
    }
    assert!(seen > 10, "only {seen} crates read");
    assert!(violations.is_empty(), "module cycles: {violations:#?}");
}

/// The module map ARCHITECTURE.md gives for the crate at `crates/<name>/`: each module's row
/// (`| \`module\` | what it owns | \`may\`, \`import\` |`) under the crate's `### \`crates/<name>\``
/// heading, with the modules it may import (`—` for none).
fn documented_modules(doc: &str, name: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let heading = format!("### `crates/{name}`");
    let start = doc.lines().position(|l| l.trim() == heading)?;
    let mut map = BTreeMap::new();
    for line in doc.lines().skip(start + 1) {
        if line.starts_with("## ") || line.starts_with("### ") {
            break;
        }
        let cells: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        // "| `m` | owns | imports |" splits into ["", "`m`", owns, imports, ""].
        if cells.len() != 5 || !cells[1].starts_with('`') || cells[1] == "`module`" {
            continue;
        }
        let module = cells[1].trim_matches('`').to_string();
        let imports = cells[3]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty() && m != "—")
            .collect();
        map.insert(module, imports);
    }
    Some(map)
}

/// Proves ARCHITECTURE.md's module map matches the code: every crate's modules are listed, no
/// module is listed that does not exist, each imports only what its row allows, and what the
/// rows allow is itself layered (no cycle), so the map can be read bottom-up.
#[test]
fn the_module_map_matches_the_code() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("read ARCHITECTURE.md");
    let mut violations = Vec::new();
    let mut crates = 0;
    for (name, (manifest, _)) in packages(&metadata()) {
        if !manifest.contains("/crates/") {
            continue;
        }
        let src = Path::new(&manifest)
            .parent()
            .expect("crate dir")
            .join("src");
        let actual = module_imports(&src);
        let Some(documented) = documented_modules(&doc, &name) else {
            violations.push(format!("{name}: no `### `crates/{name}`` section"));
            continue;
        };
        crates += 1;
        for module in actual.keys() {
            if !documented.contains_key(module) {
                violations.push(format!("{name}: module `{module}` is not in the map"));
            }
        }
        for (module, allowed) in &documented {
            let Some(imports) = actual.get(module) else {
                violations.push(format!(
                    "{name}: the map lists `{module}`, which does not exist"
                ));
                continue;
            };
            for import in imports {
                if !allowed.contains(import) {
                    violations.push(format!(
                        "{name}: `{module}` imports `{import}`, which its row does not allow"
                    ));
                }
            }
            for import in allowed {
                if !documented.contains_key(import) {
                    violations.push(format!("{name}: `{module}` may import unknown `{import}`"));
                }
            }
        }
        let permitted: BTreeMap<String, std::collections::BTreeSet<String>> = documented
            .iter()
            .map(|(m, allowed)| {
                let allowed = allowed
                    .iter()
                    .filter(|a| documented.contains_key(*a))
                    .cloned()
                    .collect();
                (m.clone(), allowed)
            })
            .collect();
        for cycle in cycles(&permitted) {
            violations.push(format!("{name}: the map lets {cycle:?} import each other"));
        }
    }
    assert!(crates > 10, "only {crates} crates mapped");
    assert!(
        violations.is_empty(),
        "ARCHITECTURE.md's module map: {violations:#?}"
    );
}
