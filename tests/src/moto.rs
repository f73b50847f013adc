//! A local AWS-compatible endpoint for the cloud tests: the `moto` server (a Python package)
//! inside the test's namespace, with authentication enforced, so that requests signed with
//! wrong keys are refused as AWS refuses them. The first three requests (made by
//! [`Moto::credentials`] with boto3) create a user with an access key and a policy allowing
//! everything.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::NetNs;

pub struct Moto {
    child: Child,
    pub url: String,
}

/// What [`Moto::credentials`] made: an access key and a machine image to boot.
pub struct Account {
    pub access_key: String,
    pub secret_key: String,
    pub image_id: String,
}

const BOOTSTRAP: &str = r#"
import boto3, json, sys
url = sys.argv[1]
def client(service, key, secret):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)
iam = client("iam", "bootstrap", "bootstrap")
iam.create_user(UserName="hivemind")
key = iam.create_access_key(UserName="hivemind")["AccessKey"]
iam.put_user_policy(UserName="hivemind", PolicyName="everything", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
ec2 = client("ec2", key["AccessKeyId"], key["SecretAccessKey"])
image = ec2.describe_images()["Images"][0]["ImageId"]
print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
                  "image_id": image}))
"#;

const USER_DATA: &str = r#"
import base64, boto3, sys
url, key, secret, instance = sys.argv[1:5]
ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
value = ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")
print(base64.b64decode(value["UserData"]["Value"]).decode())
"#;

impl Moto {
    pub fn start(ns: &NetNs, dir: &Path, port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let child = ns
            .command("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            // Refuse unknown machine images and instance types, as AWS does.
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn moto_server (pip install 'moto[server]')")?;
        let moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // A connection, not a request: requests count towards the unauthenticated three.
        if !ns.listening(port, Duration::from_secs(30))? {
            bail!(
                "moto_server did not answer within 30s: {}",
                std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default()
            );
        }
        Ok(moto)
    }

    fn python(&self, ns: &NetNs, script: &str, args: &[&str]) -> Result<String> {
        let output = ns
            .command("python3")
            .arg("-c")
            .arg(script)
            .arg(&self.url)
            .args(args)
            .output()
            .context("run python3 with boto3")?;
        if !output.status.success() {
            bail!("boto3: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A user with an access key allowed everything, and an image id; call it first.
    pub fn credentials(&self, ns: &NetNs) -> Result<Account> {
        let out: Value = serde_json::from_str(&self.python(ns, BOOTSTRAP, &[])?)?;
        let text = |key: &str| {
            out[key]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{key} in {out}"))
        };
        Ok(Account {
            access_key: text("access_key")?,
            secret_key: text("secret_key")?,
            image_id: text("image_id")?,
        })
    }

    /// The user data an instance was started with, as the provider keeps it.
    pub fn user_data(&self, ns: &NetNs, account: &Account, instance: &str) -> Result<String> {
        self.python(
            ns,
            USER_DATA,
            &[&account.access_key, &account.secret_key, instance],
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
