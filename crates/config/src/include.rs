//! Files a filter's configuration names instead of holding their text: anywhere in a route's
//! `config`, an object whose only key is `from_file` is replaced by that file's contents.
//!
//! Filters have no filesystem, and keys, key sets and long lists do not belong inline in the
//! gateway's YAML: `pem: { from_file: keys/issuer.pem }` keeps a PEM beside the configuration.
//! A path is relative to the configuration file's folder. A file ending in `.json` becomes the
//! JSON value it holds (a JWK or a JWKS, say); any other becomes its text. Files are read when
//! the configuration is loaded, at start and on each reload, and bounded in size, so a wrong
//! path never hands a filter a disk image.

use std::path::Path;

use crate::file::ConfigFile;

/// The largest file a configuration may include.
const MAX_INCLUDED_BYTES: u64 = 1024 * 1024;

/// The key of an object that stands for a file.
const FROM_FILE: &str = "from_file";

/// Replaces every `{ from_file: PATH }` in the routes' filter configurations; each problem names
/// its field path.
pub(crate) fn resolve(file: &mut ConfigFile, base: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (route_index, route) in file.routes.iter_mut().enumerate() {
        for (filter_index, filter) in route.filters.iter_mut().enumerate() {
            let field = format!("routes[{route_index}].filters[{filter_index}].config");
            resolve_value(&mut filter.config, base, &field, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn resolve_value(
    value: &mut serde_json::Value,
    base: &Path,
    field: &str,
    problems: &mut Vec<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(path) = map.get(FROM_FILE) {
                if map.len() != 1 {
                    problems.push(format!(
                        "{field}: `{FROM_FILE}` must be the object's only key"
                    ));
                    return;
                }
                let Some(path) = path.as_str() else {
                    problems.push(format!("{field}.{FROM_FILE}: must be a path"));
                    return;
                };
                match read(&base.join(path)) {
                    Ok(contents) => *value = contents,
                    Err(problem) => problems.push(format!("{field}.{FROM_FILE}: {problem}")),
                }
                return;
            }
            for (key, inner) in map.iter_mut() {
                resolve_value(inner, base, &format!("{field}.{key}"), problems);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, inner) in items.iter_mut().enumerate() {
                resolve_value(inner, base, &format!("{field}[{index}]"), problems);
            }
        }
        _ => {}
    }
}

fn read(path: &Path) -> Result<serde_json::Value, String> {
    let shown = path.display();
    let length = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {shown}: {error}"))?
        .len();
    if length > MAX_INCLUDED_BYTES {
        return Err(format!(
            "{shown} is {length} bytes; an included file may have at most {MAX_INCLUDED_BYTES}"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    if path
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        serde_json::from_str(&text).map_err(|error| format!("{shown} is not JSON: {error}"))
    } else {
        Ok(serde_json::Value::String(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(config: &str) -> String {
        format!(
            "listeners: [{{ address: 127.0.0.1:0 }}]\nfilters: {{ f: {{ module: f.wasm }} }}\nservices: {{ s: {{ instances: [http://127.0.0.1:1] }} }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    service: s\n    filters: [{{ filter: f, config: {config} }}]\n"
        )
    }

    fn config_of(text: &str, base: &Path) -> Result<serde_json::Value, Vec<String>> {
        let mut file = ConfigFile::parse(text)?;
        resolve(&mut file, base)?;
        Ok(file.routes[0].filters[0].config.clone())
    }

    #[test]
    fn text_and_json_files_replace_their_objects_anywhere() {
        let dir = std::env::temp_dir().join(format!("gateway-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).expect("temp dir");
        std::fs::write(dir.join("keys/issuer.pem"), "-----BEGIN PUBLIC KEY-----\n").expect("pem");
        std::fs::write(dir.join("jwks.json"), r#"{"keys": []}"#).expect("jwks");
        let config = config_of(
            &routes(r#"{ keys: [{ pem: { from_file: keys/issuer.pem } }], jwks: { from_file: jwks.json } }"#),
            &dir,
        )
        .expect("resolved");
        assert_eq!(
            config,
            serde_json::json!({
                "keys": [{ "pem": "-----BEGIN PUBLIC KEY-----\n" }],
                "jwks": { "keys": [] },
            })
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_missing_file_or_a_mixed_object_is_named_by_its_field() {
        let base = Path::new("/nonexistent-gateway-dir");
        let problems = config_of(
            &routes("{ a: { from_file: nope.pem }, b: [{ from_file: x, other: 1 }] }"),
            base,
        )
        .expect_err("refused");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("routes[0].filters[0].config.a.from_file: cannot read /nonexistent-gateway-dir/nope.pem"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "routes[0].filters[0].config.b[0]: `from_file` must be the object's only key"
        );
    }
}
