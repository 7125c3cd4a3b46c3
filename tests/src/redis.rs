//! A private `redis-server` for a test, on a free port, killed on drop.

use std::process::Command;
use std::time::Duration;

use crate::Proc;

pub struct Redis {
    pub proc: Proc,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(crate::free_port())
    }

    /// Starts on a given port (to restart a killed one where the gateway expects it).
    pub fn start_on(port: u16) -> Redis {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let mut proc = Proc::spawn("redis-server", cmd);
        proc.wait_line(Duration::from_secs(10), |l| {
            l.contains("Ready to accept connections")
        });
        Redis { proc, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command on a fresh connection; its reply.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client.get_connection().expect("connect to the test redis");
        cmd.query(&mut conn).expect("redis command")
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.query(redis::cmd("KEYS").arg(pattern))
    }

    /// How many scripts (EVAL and EVALSHA) the server has run.
    pub fn script_calls(&self) -> u64 {
        let info: String = self.query(redis::cmd("INFO").arg("commandstats"));
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}
