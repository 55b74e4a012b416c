//! `gateway plugin new`: writes a filter crate that builds, tests and passes its cases as
//! generated, wherever it is created.
//!
//! Inside this repository's `plugins/` folder the crate joins the workspace (the root lists
//! `plugins/*`) and takes its dependencies from it. Anywhere else it is a workspace of its own
//! and finds the SDK through a dependency the author chooses: a path (default: the SDK this
//! gateway was built from) or a git URL.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CARGO_TOML: &str = include_str!("../../templates/plugin/Cargo.toml.in");
const STANDALONE_TOML: &str = include_str!("../../templates/plugin/standalone.toml.in");
const LIB_RS: &str = include_str!("../../templates/plugin/lib.rs.in");
const CASES_YAML: &str = include_str!("../../templates/plugin/cases.yaml.in");
const README_MD: &str = include_str!("../../templates/plugin/README.md.in");
const GITIGNORE: &str = include_str!("../../templates/plugin/gitignore.in");

/// Where the generated crate gets `gateway-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    Path(PathBuf),
    Git(String),
}

impl SdkSource {
    /// The SDK next to the sources this gateway was built from, if they are still there.
    pub fn built_from() -> Option<SdkSource> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("sdk");
        sdk.join("Cargo.toml")
            .is_file()
            .then_some(SdkSource::Path(sdk))
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => format!(
                "gateway-sdk = {{ path = {:?} }}",
                path.display().to_string()
            ),
            SdkSource::Git(url) => format!("gateway-sdk = {{ git = {url:?} }}"),
        }
    }
}

/// This repository's root, if the gateway runs from a build of it that is still in place.
fn repository_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    root.join("Cargo.toml")
        .is_file()
        .then(|| root.to_path_buf())
}

/// Checks a plugin name: a crate name that also reads well in YAML and file names.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if starts_well && rest_ok && !name.ends_with('-') && !name.contains("--") {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a plugin name: use lower-case letters, digits and single dashes, starting with a letter (e.g. ip-allow-list)"
        ))
    }
}

/// `ip-allow-list` -> `IpAllowList`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// What was written.
#[derive(Debug)]
pub struct Scaffold {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Whether the crate joined this repository's workspace.
    pub member: bool,
    /// The command that builds the component.
    pub build: String,
    /// Where that command puts the component.
    pub wasm_path: String,
}

/// Writes a new plugin crate named `name` in `parent/name`.
pub fn create(name: &str, parent: &Path, sdk: Option<SdkSource>) -> Result<Scaffold> {
    let refuse = |reason: String| Error::Scaffold {
        name: name.to_owned(),
        reason,
    };
    check_name(name).map_err(refuse)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(refuse(format!(
            "{} already exists; pick another name or --path",
            dir.display()
        )));
    }
    std::fs::create_dir_all(parent)
        .map_err(|error| refuse(format!("cannot create {}: {error}", parent.display())))?;
    let parent = parent
        .canonicalize()
        .map_err(|error| refuse(format!("cannot resolve {}: {error}", parent.display())))?;
    let member = repository_root()
        .and_then(|root| root.join("plugins").canonicalize().ok())
        .is_some_and(|plugins| parent == plugins);

    let crate_name = name.replace('-', "_");
    let (dependencies, standalone, build, wasm_path) = if member {
        (
            "gateway-sdk.workspace = true\nserde.workspace = true\n\n[lints]\nworkspace = true"
                .to_owned(),
            String::new(),
            // The workspace's `wasm` profile makes small, stripped components.
            format!("cargo build --profile wasm --target wasm32-wasip2 -p {name}"),
            format!("<workspace target dir>/wasm32-wasip2/wasm/{crate_name}.wasm"),
        )
    } else {
        let sdk = sdk.or_else(SdkSource::built_from).ok_or_else(|| {
            refuse(
                "cannot find the gateway SDK this binary was built from; pass --sdk-path DIR or --sdk-git URL"
                    .to_owned(),
            )
        })?;
        if let SdkSource::Path(path) = &sdk
            && !path.join("Cargo.toml").is_file()
        {
            return Err(refuse(format!(
                "no SDK at {} (no Cargo.toml there)",
                path.display()
            )));
        }
        (
            format!(
                "{}\nserde = {{ version = \"1\", features = [\"derive\"] }}",
                sdk.dependency()
            ),
            format!("\n{STANDALONE_TOML}"),
            "cargo build --release --target wasm32-wasip2".to_owned(),
            format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
        )
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{type_name}}", &type_name(name))
            .replace("{{dependencies}}", &dependencies)
            .replace("{{standalone}}", &standalone)
            .replace("{{build}}", &build)
            .replace("{{wasm_path}}", &wasm_path)
    };

    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("cases.yaml", fill(CASES_YAML)),
        ("README.md", fill(README_MD)),
        (".gitignore", fill(GITIGNORE)),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .map_err(|error| refuse(format!("cannot create {}: {error}", folder.display())))?;
        }
        std::fs::write(&path, contents)
            .map_err(|error| refuse(format!("cannot write {}: {error}", path.display())))?;
        written.push(path);
    }
    Ok(Scaffold {
        dir,
        files: written,
        member,
        build,
        wasm_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_crate_and_yaml_friendly() {
        for good in ["ip-allow", "a", "canary2", "x-y-z"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Ip",
            "2fast",
            "a--b",
            "a-",
            "with space",
            "under_score",
            "ü",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("ip-allow-list"), "IpAllowList");
        assert_eq!(type_name("canary2"), "Canary2");
    }

    #[test]
    fn standalone_crates_depend_on_the_chosen_sdk() {
        let dir = std::env::temp_dir().join(format!("scaffold-unit-{}", std::process::id()));
        let sdk = SdkSource::Git("https://example.invalid/gateway.git".to_owned());
        let scaffold = create("demo-filter", &dir, Some(sdk)).expect("created");
        assert!(!scaffold.member);
        let manifest = std::fs::read_to_string(scaffold.dir.join("Cargo.toml")).expect("manifest");
        assert!(
            manifest.contains(r#"gateway-sdk = { git = "https://example.invalid/gateway.git" }"#)
        );
        assert!(manifest.contains("[workspace]"));
        let lib = std::fs::read_to_string(scaffold.dir.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct DemoFilter"));
        assert!(!lib.contains("{{"), "every placeholder is filled");
        let again = create("demo-filter", &dir, None).expect_err("refuses to overwrite");
        assert!(again.to_string().contains("already exists"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
