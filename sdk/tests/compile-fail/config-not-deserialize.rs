// A filter whose `Config` cannot be read from the route's configuration.

use gateway_sdk::Filter;

struct Config {
    header: String,
}

struct Stamp {
    header: String,
}

impl Filter for Stamp {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Stamp {
            header: config.header,
        })
    }
}

gateway_sdk::export_filter!(Stamp);

fn main() {}
