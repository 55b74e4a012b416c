//! Hot-reload and start-up figures for the README, measured against the real gateway binary:
//!
//! - start-up to "listening" with the bundled filters, cold (empty compile cache) and warm;
//! - time from writing a new build of a filter into the plugin folder to the first response
//!   served by that build, over many swaps.
//!
//! ```text
//! reload_latency GATEWAY_BINARY PLUGIN_DIR [SWAPS]
//! ```
//!
//! PLUGIN_DIR must hold `stamp-blue.wasm` and `stamp-green.wasm` (scripts/setup.sh builds them),
//! `gateway_plugin_rewrite.wasm` and `gateway_example_ip_filter.wasm`. Only loopback is used.
//! Std only, so bench/run builds it without the gateway library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A gateway process, killed when dropped.
struct Gateway {
    child: Child,
    address: SocketAddr,
    startup_ms: u64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of a JSON log line, found by text: enough for the gateway's flat log objects.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = line[start..].trim_start_matches('"');
    let end = rest.find(['"', ',', '}'])?;
    Some(&rest[..end])
}

fn start_gateway(binary: &Path, config: &Path) -> Result<Gateway, String> {
    let mut child = Command::new(binary)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,gateway=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"message\":\"listening\"") {
                let address = field(&line, "address").and_then(|a| a.parse::<SocketAddr>().ok());
                let startup = field(&line, "startup_ms").and_then(|ms| ms.parse::<u64>().ok());
                if let (Some(address), Some(startup)) = (address, startup) {
                    let _ = sender.send((address, startup));
                }
            }
        }
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok((address, startup_ms)) => Ok(Gateway {
            child,
            address,
            startup_ms,
        }),
        Err(_) => {
            let _ = child.kill();
            Err("the gateway did not start listening within 60 s".to_owned())
        }
    }
}

/// A loopback upstream answering every request with `200 ok`, keep-alive, one thread per
/// connection: the figures here are about reloads, not throughput.
fn start_upstream() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve_ok(stream));
        }
    });
    Ok(address)
}

fn serve_ok(mut stream: TcpStream) {
    let mut buffer = [0u8; 8192];
    let mut pending = Vec::new();
    loop {
        let Ok(read) = stream.read(&mut buffer) else {
            return;
        };
        if read == 0 {
            return;
        }
        pending.extend_from_slice(&buffer[..read]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    }
}

/// GET / on a fresh connection; the value of `x-stamp`, if any.
fn stamp(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .lines()
        .find_map(|line| line.strip_prefix("x-stamp: "))
        .map(str::to_owned)
}

fn config(upstream: SocketAddr, cache_dir: &Path) -> String {
    format!(
        r#"listeners: [{{address: "127.0.0.1:0"}}]
plugin_dir: plugins
cache_dir: "{cache}"
filters:
  stamp: {{module: stamp.wasm}}
  rewrite: {{module: gateway_plugin_rewrite.wasm}}
  ip-filter: {{module: gateway_example_ip_filter.wasm}}
services:
  upstream: {{instances: ["http://{upstream}"]}}
routes:
  - match: {{path_prefix: /}}
    service: upstream
    filters:
      - filter: ip-filter
        config: {{allow: [127.0.0.1/32]}}
      - filter: rewrite
        config: {{request_headers: {{set: {{x-bench: "1"}}}}}}
      - filter: stamp
"#,
        cache = cache_dir.display()
    )
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn run(binary: &Path, plugins: &Path, swaps: usize) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("gateway-reload-bench-{}", std::process::id()));
    let plugin_dir = work.join("plugins");
    let cache_dir = work.join("cache");
    std::fs::create_dir_all(&plugin_dir).map_err(|error| error.to_string())?;
    let copy = |name: &str, to: &str| {
        std::fs::copy(plugins.join(name), plugin_dir.join(to))
            .map(|_| ())
            .map_err(|error| format!("{name}: {error}"))
    };
    copy("stamp-blue.wasm", "stamp.wasm")?;
    copy("gateway_plugin_rewrite.wasm", "gateway_plugin_rewrite.wasm")?;
    copy(
        "gateway_example_ip_filter.wasm",
        "gateway_example_ip_filter.wasm",
    )?;
    let upstream = start_upstream()?;
    let config_path = work.join("gateway.yaml");
    std::fs::write(&config_path, config(upstream, &cache_dir))
        .map_err(|error| error.to_string())?;

    let cold = start_gateway(binary, &config_path)?.startup_ms;
    let gateway = start_gateway(binary, &config_path)?;
    println!(
        "start-up with the bundled filters: cold {cold} ms, warm {} ms",
        gateway.startup_ms
    );

    let mut latencies = Vec::with_capacity(swaps);
    for swap in 0..swaps {
        let (build, expected) = if swap % 2 == 0 {
            ("stamp-green.wasm", "green")
        } else {
            ("stamp-blue.wasm", "blue")
        };
        let staged = plugin_dir.join(".stamp.wasm.new");
        std::fs::copy(plugins.join(build), &staged).map_err(|error| error.to_string())?;
        let written = Instant::now();
        std::fs::rename(&staged, plugin_dir.join("stamp.wasm"))
            .map_err(|error| error.to_string())?;
        loop {
            if stamp(gateway.address).as_deref() == Some(expected) {
                latencies.push(written.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if written.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "swap {swap}: the {expected} build did not answer within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&work);

    latencies.sort_by(f64::total_cmp);
    println!(
        "file written -> first response from the new build, {swaps} swaps: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target: under 250 ms)",
        latencies[0],
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1],
    );
    Ok(())
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (Some(binary), Some(plugins)) = (arguments.first(), arguments.get(1)) else {
        eprintln!("usage: reload_latency GATEWAY_BINARY PLUGIN_DIR [SWAPS]");
        return ExitCode::FAILURE;
    };
    let swaps = arguments
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(30)
        .max(1);
    match run(&PathBuf::from(binary), &PathBuf::from(plugins), swaps) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reload_latency: {error}");
            ExitCode::FAILURE
        }
    }
}
