//! Test support (feature `test-util`): a real `redis-server` process per test, on a free port
//! with its own directory, that a test can freeze, kill and restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child. Dropping it kills the process; its directory goes with the
/// [`tempfile::TempDir`] the caller passed or the one it made.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    aof: bool,
    _own_dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a Redis with `appendonly yes` and `appendfsync always` (what docs/design.md asks
    /// for in production), in a directory of its own.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// `aof: false` starts one with no persistence at all.
    pub fn start_with(aof: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = Self::start_in(dir.path(), aof);
        server._own_dir = Some(dir);
        server
    }

    /// Starts one keeping its files in `dir`.
    pub fn start_in(dir: &Path, aof: bool) -> Self {
        let mut last = String::new();
        for _ in 0..20 {
            let port = free_port();
            let mut server = Self { child: None, port, dir: dir.to_path_buf(), aof, _own_dir: None };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| {
                format!("{e}: redis-server must be installed (Debian: apt-get install -y redis-server)")
            })?;
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!("exited with {status}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("not answering PING after 10 s".into())
    }

    /// Whether it answers PING now (within 500 ms).
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("redis-server runs")
    }

    /// Sends `sig` (`STOP`, `CONT`, `KILL`, …) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} redis-server");
    }

    /// `kill -9`, then waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (what AOF kept comes back).
    pub fn restart(&mut self) {
        self.kill();
        let t0 = Instant::now();
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port may linger a moment after the kill.
                Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("redis-server did not restart: {e}"),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("an address").port()
}
