//! Runs a browser test script of tests/fixtures/browser: Python Playwright (from
//! scripts/setup-python) driving Debian's chromium (from scripts/setup-browser).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long one script may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs `tests/fixtures/browser/<script>.py` with the project's venv Python (`.venv`, or
/// `$POSTHORN_TEST_VENV` as in scripts/setup-python), the harness on `PYTHONPATH`,
/// screenshots into `target/screenshots`, and `env` on top. Prints what the script
/// printed; panics with it if the script fails or runs past [`SCRIPT_TIMEOUT`].
pub fn run_script(script: &str, env: &[(&str, String)]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("POSTHORN_TEST_VENV")
        .filter(|venv| !venv.is_empty())
        .unwrap_or_else(|| ".venv".into());
    let python = repo.join(venv).join("bin/python");
    let fixtures = repo.join("tests/fixtures/browser");
    let path = fixtures.join(format!("{script}.py"));

    // stdout and stderr into one pipe, so the output keeps its order.
    let (mut reader, writer) = std::io::pipe().expect("a pipe for the script's output");
    let mut command = Command::new(&python);
    command
        .arg(&path)
        .current_dir(repo)
        .env("PYTHONPATH", fixtures)
        .env("PYTHONUNBUFFERED", "1")
        .env("POSTHORN_SCREENSHOTS", repo.join("target/screenshots"))
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a second end of the pipe"))
        .stderr(writer);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (scripts/setup-python): {e}", python.display()));
    // The command holds the pipe's writing ends: dropped, the pipe closes with the child.
    drop(command);

    let output = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let output = Arc::clone(&output);
        thread::spawn(move || {
            let mut buf = [0; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().expect("output").extend_from_slice(&buf[..n]);
            }
        })
    };

    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    // A few seconds for the rest of the output; a process the script started may hold it.
    let closing = Instant::now() + Duration::from_secs(10);
    while !reading.is_finished() && Instant::now() < closing {
        thread::sleep(Duration::from_millis(20));
    }

    let output = String::from_utf8_lossy(&output.lock().expect("output")).into_owned();
    match status {
        Some(status) if status.success() => print!("{output}"),
        Some(status) => panic!("{} failed ({status}):\n{output}", path.display()),
        None => panic!(
            "{} still running after {} s, killed:\n{output}",
            path.display(),
            SCRIPT_TIMEOUT.as_secs()
        ),
    }
}
