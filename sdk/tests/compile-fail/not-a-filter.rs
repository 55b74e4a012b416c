// A type without `impl Filter` handed to `export_filter!`.

struct NotAFilter;

gateway_sdk::export_filter!(NotAFilter);

fn main() {}
