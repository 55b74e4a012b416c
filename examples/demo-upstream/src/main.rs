//! `demo-upstream NAME=ADDRESS...`: runs one echo service per argument until interrupted.
//!
//! ```text
//! demo-upstream users=127.0.0.1:9001 orders=127.0.0.1:9002 orders=127.0.0.1:9003
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use gateway_demo_upstream::Upstream;

#[tokio::main]
async fn main() -> ExitCode {
    let mut running = Vec::new();
    for argument in std::env::args().skip(1) {
        let Some((name, address)) = argument.split_once('=') else {
            eprintln!("expected NAME=ADDRESS, got `{argument}`");
            return ExitCode::FAILURE;
        };
        let Ok(address) = address.parse::<SocketAddr>() else {
            eprintln!("`{address}` is not an IP:port address");
            return ExitCode::FAILURE;
        };
        match Upstream::start_on(name, address).await {
            Ok(upstream) => {
                eprintln!("{name} listening on http://{}", upstream.address);
                running.push(upstream);
            }
            Err(error) => {
                eprintln!("cannot listen on {address}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if running.is_empty() {
        eprintln!("usage: demo-upstream NAME=ADDRESS... (e.g. users=127.0.0.1:9001)");
        return ExitCode::FAILURE;
    }
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
