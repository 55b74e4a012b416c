// A value, not a type, handed to `export_filter!`.

use gateway_sdk::Filter;

struct Noop;

impl Filter for Noop {
    type Config = gateway_sdk::serde_json::Value;

    fn new(_config: Self::Config) -> Result<Self, String> {
        Ok(Noop)
    }
}

gateway_sdk::export_filter!("Noop");

fn main() {}
