//! A real `redis-server` (the Debian package) of the test's own, on a free
//! loopback port, with persistence off; stopped when dropped. On a machine
//! without it, the first test that needs it installs it
//! (`scripts/test-deps.sh`, once per process, saying so); where that
//! cannot be done, the test fails with one line saying what to install.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test says when the server is not installed and could not be.
const MISSING: &str = "redis-server is not installed and could not be: install Debian's package \
                       redis-server (sudo apt-get install redis-server)";

fn installed() -> bool {
    super::test_deps::installed("redis-server")
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::on(free_port())
    }

    /// A server on `port` (again, after a stop).
    pub fn on(port: u16) -> Self {
        assert!(installed(), "{MISSING}");
        let child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("redis-server does not start: {e}"),
        };
        let server = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let mut answer = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut answer).is_ok()
                    && &answer == b"+PONG\r\n"
                {
                    return server;
                }
            }
            assert!(
                Instant::now() < until,
                "redis-server did not come up on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("a Redis URL")
            .get_connection()
            .expect("the test's Redis answers")
    }

    /// `GET key`.
    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.connection())
            .expect("GET")
    }

    /// `HGET key field`.
    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query(&mut self.connection())
            .expect("HGET")
    }

    /// `HSET key field value`.
    pub fn hset(&self, key: &str, field: &str, value: &str) {
        redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(value)
            .query::<()>(&mut self.connection())
            .expect("HSET")
    }
}
