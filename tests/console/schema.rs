//! schemathesis (PyPI) against the console's OpenAPI document: generated requests to
//! every documented operation with an admin API token, over HTTPS trusting only the
//! gateway's root CA. No answer may be a server error, and every answer must match
//! the documented status codes, content types and schemas.
//!
//! schemathesis lives in the virtualenv `target/venv-schemathesis` (made by
//! `./scripts/test`, or by hand: see `scripts/lib/common.sh`, `ensure_schemathesis`);
//! `SMIMEGATE_SCHEMATHESIS` names another executable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::harness::Gateway;
use super::{add_account, token};

fn schemathesis() -> PathBuf {
    let program = std::env::var_os("SMIMEGATE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-schemathesis/bin/schemathesis")
        });
    assert!(
        program.exists(),
        "{} is missing: ./scripts/test installs schemathesis into target/venv-schemathesis \
         (or run: python3 -m venv target/venv-schemathesis && \
         target/venv-schemathesis/bin/pip install schemathesis==4.32.5)",
        program.display()
    );
    program
}

/// The gateway's root CA as a PEM file (the bundle schemathesis verifies TLS with).
fn root_ca_pem(gw: &Gateway) -> PathBuf {
    let (status, der) = gw.http_get("/pki/root.crt");
    assert_eq!(status, 200, "the root CA certificate is published");
    let der_path = gw.data().join("root.der");
    std::fs::write(&der_path, der).expect("write root CA");
    let pem = gw.data().join("root.pem");
    super::common::run_ok(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            &der_path.display().to_string(),
            "-out",
            &pem.display().to_string(),
        ],
    );
    pem
}

/// One schemathesis run over the operations `filter` selects; its output is saved as
/// `target/schemathesis-report/NAME.txt`. Returns the output; fails on any defect.
fn run(gw: &Gateway, ca: &Path, token: &str, name: &str, filter: &[&str]) -> String {
    let program = schemathesis();
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis-report");
    let started = Instant::now();
    let out = Command::new(&program)
        .args([
            "run",
            &format!("https://localhost:{}/api/v1/openapi.json", gw.console),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--tls-verify",
            &ca.display().to_string(),
            "--max-examples",
            "40",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--seed",
            "11",
            "--report",
            "junit",
            "--report-junit-path",
            &format!("{name}.xml"),
            "--report-dir",
            &reports.display().to_string(),
        ])
        .args(filter)
        // The gateway's own name resolves to loopback; no proxy between.
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .current_dir(gw.data())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::create_dir_all(&reports).expect("report dir");
    std::fs::write(reports.join(format!("{name}.txt")), &stdout).expect("save output");
    assert!(
        out.status.success(),
        "schemathesis found defects (after {:?}):\n{stdout}\n{stderr}\ngateway log:\n{}",
        started.elapsed(),
        gw.log()
    );
    // It really ran operations against the gateway (not an empty selection).
    assert!(
        stdout.contains(" passed") && !stdout.contains("No operations"),
        "{stdout}"
    );
    stdout
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "root", "admin");
    let token = token(&gw, "root", "admin");
    let ca = root_ca_pem(&gw);

    // schemathesis reuses what answers show: it deletes, disables or demotes the
    // account `root` it saw in GET /accounts, or revokes the run's own token (ids are
    // small integers), after which every call is 401. The operations on one account
    // or token run last, on their own.
    const ONE_ACCOUNT_OR_TOKEN: &str = "^/(accounts|tokens)/";
    let most = run(
        &gw,
        &ca,
        &token,
        "most",
        &["--exclude-path-regex", ONE_ACCOUNT_OR_TOKEN],
    );
    assert!(
        !most.contains("Authentication failed"),
        "the admin token must work for the whole run:\n{most}\ngateway log:\n{}",
        gw.log()
    );
    run(
        &gw,
        &ca,
        &token,
        "accounts-and-tokens",
        &["--include-path-regex", ONE_ACCOUNT_OR_TOKEN],
    );
}
