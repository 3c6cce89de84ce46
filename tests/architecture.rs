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
