//! Backing services for the vault tests: a KMS API served by `moto_server` (from the
//! repo's `.venv`), keys created with boto3, and the environment AWS clients need.

use std::process::Command;
use std::time::Duration;

use crate::Proc;

/// Environment for AWS SDK clients in tests: dummy credentials, a fixed region, no
/// shared config files, and no instance-metadata probing (nothing but loopback).
pub fn aws_env(dir: &std::path::Path) -> Vec<(String, String)> {
    let missing = dir.join("no-such-aws-file").display().to_string();
    [
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", missing.clone()),
        ("AWS_SHARED_CREDENTIALS_FILE", missing),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A running `moto_server` (its KMS API at `endpoint`).
pub struct Moto {
    pub proc: Proc,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = crate::free_port();
        let mut cmd = Command::new(crate::installed(".venv/bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto", cmd);
        proc.wait_line(Duration::from_secs(60), |l| {
            l.contains("Running on http://")
        });
        Moto {
            proc,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates a symmetric KMS key (boto3 from the venv); returns its KeyId.
    pub fn create_key(&self) -> String {
        let script = "import sys, boto3\n\
            kms = boto3.client('kms', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id='testing', aws_secret_access_key='testing')\n\
            print(kms.create_key(Description='portcullis test')['KeyMetadata']['KeyId'])\n";
        let out = Command::new(crate::installed(".venv/bin/python"))
            .args(["-c", script, &self.endpoint])
            .output()
            .expect("running python boto3");
        assert!(
            out.status.success(),
            "creating a KMS key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
