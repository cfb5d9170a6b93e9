//! A moto server (`moto_server`, PyPI `moto[server]`) on 127.0.0.1 and a free port, for tests
//! against real AWS wire formats without AWS. Invariant: the process runs in its own process
//! group and is signalled only while its `Child` is unreaped (so neither its PID nor its group
//! can have been reused); it is killed and reaped on drop, and its log is printed when the
//! dropping thread is panicking.

use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::raw_http;
use crate::xml;

/// The program started, looked up on `PATH`.
pub const MOTO_SERVER_PROGRAM: &str = "moto_server";

/// Time moto gets to answer after start; importing every backend is slow on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between readiness polls.
const READY_POLL: Duration = Duration::from_millis(50);
/// Starts tried, each on a new free port, when another process takes the port first.
const START_TRIES: u32 = 3;
/// Bound on each request of the helpers here.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the log printed when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// A running moto server; killed and reaped on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Whether `moto_server` is on `PATH`.
    pub fn available() -> bool {
        find_on_path(MOTO_SERVER_PROGRAM).is_some()
    }

    /// Starts moto without signature checks (moto's default).
    pub fn start() -> anyhow::Result<MotoServer> {
        MotoServer::start_with(None)
    }

    /// Starts moto with `INITIAL_NO_AUTH_ACTION_COUNT=0`: every request is signature-checked
    /// against moto's IAM, which knows no keys until [`MotoServer::create_access_key`] makes one.
    pub fn start_with_auth() -> anyhow::Result<MotoServer> {
        MotoServer::start_with(Some(0))
    }

    /// Starts moto; with `Some(count)`, `INITIAL_NO_AUTH_ACTION_COUNT=count` (moto checks
    /// signatures after the first `count` actions), with `None` the variable is removed.
    pub fn start_with(initial_no_auth_action_count: Option<u32>) -> anyhow::Result<MotoServer> {
        let program = find_on_path(MOTO_SERVER_PROGRAM).with_context(|| {
            format!(
                "{MOTO_SERVER_PROGRAM} is not on PATH; install it with: pip install 'moto[server]'"
            )
        })?;
        let mut last_error = None;
        for _ in 0..START_TRIES {
            match MotoServer::spawn(&program, initial_no_auth_action_count) {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one start was tried"))
    }

    fn spawn(
        program: &PathBuf,
        initial_no_auth_action_count: Option<u32>,
    ) -> anyhow::Result<MotoServer> {
        // The port is free now; if another process takes it before moto binds, moto exits and
        // the caller tries another.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let log = tempfile::Builder::new()
            .prefix("moto-server-")
            .suffix(".log")
            .tempfile()
            .context("creating the moto_server log file")?;
        let mut command = Command::new(program);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .process_group(0);
        match initial_no_auth_action_count {
            Some(count) => command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string()),
            None => command.env_remove("INITIAL_NO_AUTH_ACTION_COUNT"),
        };
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = MotoServer {
            child: Some(child),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        server.wait_until_ready()?;
        Ok(server)
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "{MOTO_SERVER_PROGRAM} exited before answering ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            let probe = format!("GET /moto-api/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.address);
            if let Ok(response) =
                raw_http::exchange(self.address, probe.as_bytes(), Duration::from_secs(5))
                && raw_http::split_response(&response).is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "{MOTO_SERVER_PROGRAM} did not answer on {} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.address,
                    self.log_tail()
                );
            }
            thread::sleep(READY_POLL);
        }
    }

    /// The URL of the server, "http://127.0.0.1:PORT".
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server's socket address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Creates IAM user `user_name` with an allow-everything inline policy and an access key,
    /// and returns (access key ID, secret access key). Works with signature checks on: moto's
    /// checks are suspended through `/moto-api/reset-auth` for the three IAM calls and then
    /// restored.
    pub fn create_access_key(&self, user_name: &str) -> anyhow::Result<(String, String)> {
        let previous = self.reset_auth("inf")?;
        let created = self.create_access_key_unchecked(user_name);
        self.reset_auth(&previous)?;
        created
    }

    fn create_access_key_unchecked(&self, user_name: &str) -> anyhow::Result<(String, String)> {
        const ALLOW_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        self.iam(&[("Action", "CreateUser"), ("UserName", user_name)])?;
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", user_name),
            ("PolicyName", "allow-all"),
            ("PolicyDocument", ALLOW_ALL),
        ])?;
        let body = self.iam(&[("Action", "CreateAccessKey"), ("UserName", user_name)])?;
        let document = roxmltree::Document::parse(&body).context("CreateAccessKey answer")?;
        let root = document.root_element();
        let access_key = xml::descendant(root, "AccessKeyId").and_then(xml::text);
        let secret_key = xml::descendant(root, "SecretAccessKey").and_then(xml::text);
        match (access_key, secret_key) {
            (Some(access_key), Some(secret_key)) => Ok((access_key, secret_key)),
            _ => bail!("CreateAccessKey answer without a key: {body}"),
        }
    }

    /// One IAM query call, unsigned: moto picks the service from the credential scope of the
    /// Authorization header and checks nothing else while checks are suspended.
    fn iam(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Version", "2010-05-08");
        form.extend_pairs(params);
        let body = form.finish();
        let authorization = "AWS4-HMAC-SHA256 \
            Credential=AKIDMOTOSETUP/20200101/us-east-1/iam/aws4_request, \
            SignedHeaders=host;x-amz-date, Signature=0";
        let (status, answer) = self.post(
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", authorization),
                ("X-Amz-Date", "20200101T000000Z"),
            ],
            &body,
        )?;
        if status != 200 {
            bail!("IAM {params:?} on moto: HTTP {status}: {answer}");
        }
        Ok(answer)
    }

    /// Sets moto's INITIAL_NO_AUTH_ACTION_COUNT (and restarts its count); returns the previous.
    fn reset_auth(&self, count: &str) -> anyhow::Result<String> {
        let (status, answer) = self.post(
            "/moto-api/reset-auth",
            &[("Content-Type", "text/plain")],
            count,
        )?;
        if status != 200 {
            bail!("moto reset-auth {count}: HTTP {status}: {answer}");
        }
        let answer: serde_json::Value =
            serde_json::from_str(&answer).context("moto reset-auth answer")?;
        answer["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("moto reset-auth answer without the previous count: {answer}"))
    }

    fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        // HTTP/1.0, so the answer is never chunked and ends when moto closes the connection.
        let mut request = format!(
            "POST {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        let response = raw_http::exchange(self.address, request.as_bytes(), REQUEST_TIMEOUT)
            .with_context(|| format!("POST {path} to moto on {}", self.address))?;
        let (status, answer) = raw_http::split_response(&response)
            .with_context(|| format!("POST {path}: moto's answer is not HTTP"))?;
        Ok((status, String::from_utf8_lossy(answer).into_owned()))
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(group) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) touches no memory of ours. The child is not reaped yet, so its
            // process group still exists as the one we created and cannot be another's.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "--- {MOTO_SERVER_PROGRAM} on {} (last {LOG_TAIL_LINES} lines) ---\n{}\n---",
                self.address,
                self.log_tail()
            );
        }
    }
}

/// The first executable file `program` in the directories of `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}
