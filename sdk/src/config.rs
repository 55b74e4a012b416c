//! Turning the JSON configuration the gateway hands a filter into the filter's typed config.

/// Deserializes a filter's JSON configuration; the error names the path of the offending field.
pub(crate) fn parse<C: serde::de::DeserializeOwned>(config: &str) -> Result<C, String> {
    let mut deserializer = serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        // serde_json ends its message with a position in the JSON the gateway handed over,
        // which means nothing to someone reading their YAML: the field path says where.
        let message = error.inner().to_string();
        let message = message.split(" at line ").next().unwrap_or_default();
        if path == "." {
            format!("invalid config: {message}")
        } else {
            format!("invalid config at `{path}`: {message}")
        }
    })
}
