//! A real `redis-server` for the tests: on an ephemeral loopback port, persisting nothing, in a
//! temporary folder, killed when dropped. Tests stop and restart it to see how the gateway's
//! Redis store behaves when Redis goes away and comes back.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started Redis may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a Redis without a password.
    pub fn start() -> RedisServer {
        RedisServer::launch(None)
    }

    /// Starts a Redis that wants `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::launch(Some(password.to_owned()))
    }

    fn launch(password: Option<String>) -> RedisServer {
        // The free port found may be taken by another test before Redis binds it: try again.
        let mut log = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                password: password.clone(),
                dir: tempfile::tempdir().expect("a temporary folder"),
            };
            if server.spawn() {
                return server;
            }
            log = server.log();
        }
        panic!("redis-server did not start on any of 5 free ports; its last log:\n{log}");
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills Redis and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Redis if it runs and starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not start again on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Runs one command on a connection of its own and returns the reply as text: a string's
    /// bytes (lossily), an integer in decimal, `OK`, `(nil)`, or an error's text.
    pub fn command(&self, args: &[&str]) -> String {
        RedisServer::command_at(&self.url(), args)
    }

    /// [`RedisServer::command`] on the Redis at `url`, for a thread that does not hold the
    /// server (one that makes Redis sleep while the test goes on).
    pub fn command_at(url: &str, args: &[&str]) -> String {
        let (name, rest) = args.split_first().expect("a command");
        let mut connection = redis::Client::open(url)
            .expect("a valid url")
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("cannot connect to the test Redis: {error}"));
        match redis::cmd(name)
            .arg(rest)
            .query::<redis::Value>(&mut connection)
        {
            Ok(value) => text(&value),
            Err(error) => error.to_string(),
        }
    }

    /// Starts `redis-server` on `self.port` and waits until it answers PING; false if it
    /// exited first (the port was taken).
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if allows_debug_command() {
            // Redis 7 refuses DEBUG (used here to make Redis slow) unless asked.
            command.args(["--enable-debug-command", "local"]);
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command.spawn().unwrap_or_else(|error| {
            panic!(
                "cannot run redis-server ({error}): install it (`apt-get install redis-server`) \
                 or run ./scripts/test, which installs it"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            let answered = redis::Client::open(self.url())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if answered.is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {READY_WITHIN:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether this `redis-server` knows `enable-debug-command` (Redis 7 and later).
fn allows_debug_command() -> bool {
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    version
        .split_once("v=")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 7)
}

fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::Nil => "(nil)".to_owned(),
        redis::Value::Int(number) => number.to_string(),
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Okay => "OK".to_owned(),
        redis::Value::Array(values) => values.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}
