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
}
