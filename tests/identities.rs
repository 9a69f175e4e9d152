//! Identities from elsewhere, through the binary as an operator uses it: PKCS#12 files
//! made by openssl 3 (default and `-legacy`) imported, then signing (checked by
//! `openssl cms -verify`) and decrypting (mail encrypted by `openssl cms -encrypt`);
//! the imported key's custody (the token's own report and pkcs11-tool); refused
//! imports leaving nothing behind; the external-CA path (`mailbox csr`, an openssl
//! CA, `mailbox import --certificate`); partners' certificates imported from PEM, DER
//! and .p7c, listed and removed.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{OpensslCa, run, run_ok, smimegate, smimegate_ok};

const IDENTITY_EXT: &str = "basicConstraints=CA:FALSE\n\
keyUsage=critical,digitalSignature,keyEncipherment\n\
extendedKeyUsage=emailProtection\n";

fn initialised(dir: &Path) -> PathBuf {
    let data = dir.join("var");
    let out = smimegate_ok(&data, &["init"]);
    assert!(out.contains("created CA"), "{out}");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2525",
        ],
    );
    data
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// An identity for `address` from `ca`: (key file, certificate file).
fn identity(ca: &OpensslCa, name: &str, address: &str, eku: &str) -> (String, String) {
    let ext =
        IDENTITY_EXT.replace("emailProtection", eku) + &format!("subjectAltName=email:{address}\n");
    ca.issue(name, "rsa:2048", &ext)
}

/// A P-256 identity (key agreement) for `address` from `ca`.
fn p256_identity(dir: &Path, ca: &OpensslCa, name: &str, address: &str) -> (String, String) {
    let params = dir.join("p256.param");
    run_ok(
        "openssl",
        &["ecparam", "-name", "prime256v1", "-out", &p(&params)],
    );
    let ext = IDENTITY_EXT.replace("keyEncipherment", "keyAgreement")
        + &format!("subjectAltName=email:{address}\n");
    ca.issue(name, &format!("ec:{}", p(&params)), &ext)
}

/// `openssl pkcs12 -export` of key, certificate and the CA as chain.
fn pkcs12(
    dir: &Path,
    name: &str,
    key: &str,
    cert: &str,
    ca: &OpensslCa,
    password: &str,
    legacy: bool,
) -> PathBuf {
    let out = dir.join(format!("{name}.p12"));
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-inkey",
        key,
        "-in",
        cert,
        "-certfile",
        &ca.cert,
        "-passout",
        &pass,
    ];
    let out_s = p(&out);
    args.extend(["-out", &out_s]);
    if legacy {
        args.push("-legacy");
    }
    run_ok("openssl", &args);
    out
}

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn smimegate_stdin(data: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = common::smimegate_command(data, args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run smimegate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// An operator's mistake: exit 2, one line on stderr naming `expected`.
fn assert_refused(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(expected),
        "expected '{expected}' in: {stderr}"
    );
}

/// (keys, certificates, audit rows) in the database.
fn rows(data: &Path) -> (i64, i64, i64) {
    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
            .await
            .expect("database");
        let count = |table: &str| {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let pool = store.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        let counts = (
            count("keys").await,
            count("certificates").await,
            count("audit_log").await,
        );
        store.close().await;
        counts
    })
}

/// `pkcs11-tool --list-objects` (every object) on the data directory's token.
fn token_objects(data: &Path) -> String {
    let pin = std::fs::read_to_string(data.join("hsm-user.pin")).expect("pin");
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm2.conf"))
        .args([
            "--module",
            &common::module().display().to_string(),
            "--token-label",
            "smimegate",
            "--login",
            "--pin",
            pin.trim(),
            "--list-objects",
        ])
        .output()
        .expect("pkcs11-tool (opensc)");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{listing}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    listing
}

/// The private key object of a pkcs11-tool listing that mentions `needle` (its ID or
/// label). Objects start at lines without indentation, in whatever order the token
/// lists them.
fn private_key_entry(listing: &str, needle: &str) -> String {
    let mut objects: Vec<String> = Vec::new();
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            objects.push(String::new());
        }
        if let Some(object) = objects.last_mut() {
            object.push_str(line);
            object.push('\n');
        }
    }
    let found: Vec<String> = objects
        .into_iter()
        .filter(|o| o.starts_with("Private Key Object") && o.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one private key with {needle} expected: {listing}"
    );
    found.into_iter().next().unwrap_or_default()
}

fn count_objects(listing: &str) -> usize {
    listing.matches("Private Key Object").count() + listing.matches("Public Key Object").count()
}

fn mailbox_state(data: &Path, address: &str) -> String {
    let list = smimegate_ok(data, &["mailbox", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list).expect("json");
    rows.as_array()
        .expect("array")
        .iter()
        .find(|m| m["address"] == address)
        .map(|m| m["state"].as_str().expect("state").to_string())
        .expect("mailbox listed")
}

/// Signs a message as `address` through the binary and has openssl verify it against
/// `ca` (the CA of the imported identity).
fn assert_signs(data: &Path, dir: &Path, address: &str, ca: &str) {
    let message = dir.join(format!("{address}.eml"));
    std::fs::write(
        &message,
        format!("From: {address}\r\nTo: partner@partner.example\r\nSubject: signed\r\nContent-Type: text/plain\r\n\r\nSigned by {address}.\r\n"),
    )
    .expect("write");
    let signed = smimegate_ok(data, &["smime", "sign", "--from", address, &p(&message)]);
    let signed_path = dir.join(format!("{address}.signed.eml"));
    std::fs::write(&signed_path, &signed).expect("write");
    let signer = dir.join(format!("{address}.signer.pem"));
    let (ok, stdout, stderr) = run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            ca,
            "-in",
            &p(&signed_path),
            "-signer",
            &p(&signer),
            "-out",
            "/dev/null",
        ],
    );
    assert!(ok, "openssl cms -verify: {stderr}{stdout}");
    assert!(stderr.contains("Verification successful"), "{stderr}");
    let text = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            &p(&signer),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(text.contains(&format!("email:{address}")), "{text}");
}

/// Mail encrypted by openssl to `cert` decrypts through the binary.
fn assert_decrypts(data: &Path, dir: &Path, address: &str, cert: &str) {
    let plain = dir.join(format!("{address}.plain"));
    let secret = format!("For {address} only.");
    std::fs::write(
        &plain,
        format!("Content-Type: text/plain\r\n\r\n{secret}\r\n"),
    )
    .expect("write");
    let enc = dir.join(format!("{address}.enc.eml"));
    run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-aes256",
            "-in",
            &p(&plain),
            "-out",
            &p(&enc),
            "-recip",
            cert,
        ],
    );
    let out = smimegate_ok(data, &["smime", "decrypt", &p(&enc)]);
    assert!(out.contains(&secret), "{out}");
}

#[test]
fn openssl_pkcs12_default_and_legacy_import_sign_and_decrypt_with_a_custodial_key() {
    let dir = tempfile::tempdir().expect("dir");
    let data = initialised(dir.path());
    let ca = OpensslCa::new(dir.path(), "external");
    let before = rows(&data);
    let objects_before = count_objects(&token_objects(&data));

    for (local, legacy) in [("alice", false), ("bob", true), ("erin", false)] {
        let address = format!("{local}@corp.example");
        smimegate_ok(&data, &["mailbox", "add", &address]);
        let (key, cert) = if local == "erin" {
            p256_identity(dir.path(), &ca, local, &address)
        } else {
            identity(&ca, local, &address, "emailProtection")
        };
        let file = pkcs12(dir.path(), local, &key, &cert, &ca, "Geheim 123", legacy);
        let out = if legacy {
            // The password as one line of stdin.
            smimegate_stdin(
                &data,
                &[
                    "mailbox",
                    "import",
                    &address,
                    "--pkcs12",
                    &p(&file),
                    "--json",
                ],
                b"Geheim 123\n",
            )
        } else {
            let pw = dir.path().join("pw");
            private_file(&pw, "Geheim 123\n");
            smimegate_stdin(
                &data,
                &[
                    "mailbox",
                    "import",
                    &address,
                    "--pkcs12",
                    &p(&file),
                    "--password-file",
                    &p(&pw),
                    "--json",
                ],
                b"",
            )
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("PRIVATE"), "{stdout}");
        let imported: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(imported["state"], "active");
        let algorithm = if local == "erin" { "p256" } else { "rsa2048" };
        assert_eq!(imported["key"], algorithm, "{imported}");
        assert_eq!(imported["certificate"]["source"], "uploaded");
        assert_eq!(imported["chain"], 1, "{imported}");
        assert_eq!(mailbox_state(&data, &address), "active");

        // The key: sensitive, not extractable, its secret refused: the token's
        // own report, and pkcs11-tool as an outside witness.
        let key_id = imported["key_id"].as_str().expect("key id").to_string();
        let custody = smimegate_ok(&data, &["token", "custody", "--json"]);
        let custody: serde_json::Value = serde_json::from_str(&custody).expect("json");
        let report = custody["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["id"] == key_id.as_str())
            .unwrap_or_else(|| panic!("key {key_id} not in custody report"));
        assert_eq!(report["sensitive"], true, "{report}");
        assert_eq!(report["extractable"], false, "{report}");
        assert_eq!(report["private"], true, "{report}");
        assert_eq!(report["local"], false, "imported, not generated: {report}");
        assert_eq!(report["read_secret"]["outcome"], "refused", "{report}");
        let listing = token_objects(&data);
        let entry = private_key_entry(&listing, &key_id);
        assert!(entry.contains("Access:     sensitive"), "{entry}");
        assert!(
            !entry.contains(" extractable") || entry.contains("never extractable"),
            "{entry}"
        );

        assert_signs(&data, dir.path(), &address, &ca.cert);
        assert_decrypts(&data, dir.path(), &address, &cert);
        // What cert show prints: the uploaded leaf and its chain, nothing private.
        let pem = smimegate_ok(&data, &["cert", "show", &address, "--pem"]);
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
        assert!(!pem.contains("PRIVATE"), "{pem}");
    }

    let after = rows(&data);
    // Three keys and three certificates (the chain is kept with each).
    assert_eq!(after.0, before.0 + 3);
    assert_eq!(after.1, before.1 + 3);
    assert_eq!(count_objects(&token_objects(&data)), objects_before + 6);
    let managed = smimegate_ok(&data, &["cert", "list", "--managed", "--json"]);
    let managed: serde_json::Value = serde_json::from_str(&managed).expect("json");
    let uploaded: Vec<&serde_json::Value> = managed
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["source"] == "uploaded" && c["kind"] == "managed")
        .collect();
    assert_eq!(uploaded.len(), 3, "{managed}");
    // Importing the same file again is refused; nothing changes.
    let pw = dir.path().join("pw");
    let again = smimegate(
        &data,
        &[
            "mailbox",
            "import",
            "alice@corp.example",
            "--pkcs12",
            &p(&dir.path().join("alice.p12")),
            "--password-file",
            &p(&pw),
        ],
    );
    assert_refused(&again, "already exists");
    assert_eq!(rows(&data).0, after.0);
}

#[test]
fn refused_imports_say_why_in_one_line_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let data = initialised(dir.path());
    let ca = OpensslCa::new(dir.path(), "external");
    smimegate_ok(&data, &["mailbox", "add", "alice@corp.example"]);
    let pw = dir.path().join("pw");
    private_file(&pw, "right password\n");
    let wrong_pw = dir.path().join("wrong");
    private_file(&wrong_pw, "wrong password\n");

    let (key, cert) = identity(&ca, "alice", "alice@corp.example", "emailProtection");
    let good = pkcs12(
        dir.path(),
        "alice",
        &key,
        &cert,
        &ca,
        "right password",
        false,
    );
    let good_legacy = pkcs12(
        dir.path(),
        "alice-legacy",
        &key,
        &cert,
        &ca,
        "right password",
        true,
    );
    let (key, cert) = identity(&ca, "carol", "carol@corp.example", "emailProtection");
    let other_address = pkcs12(
        dir.path(),
        "carol",
        &key,
        &cert,
        &ca,
        "right password",
        false,
    );
    let (key, cert) = identity(&ca, "tls", "alice@corp.example", "clientAuth");
    let not_email = pkcs12(dir.path(), "tls", &key, &cert, &ca, "right password", false);
    let corrupt = dir.path().join("corrupt.p12");
    let mut bytes = std::fs::read(&good).expect("read");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).expect("write");
    let flipped = dir.path().join("flipped.p12");
    let mut bytes = std::fs::read(&good).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&flipped, &bytes).expect("write");

    let before = rows(&data);
    let objects_before = count_objects(&token_objects(&data));
    for (file, password, expected) in [
        (&good, &wrong_pw, "wrong password"),
        (&good_legacy, &wrong_pw, "wrong password"),
        (&other_address, &pw, "not for alice@corp.example"),
        (&not_email, &pw, "not for email protection"),
        (&corrupt, &pw, "not a readable PKCS#12 file"),
        (&flipped, &pw, "PKCS#12"),
    ] {
        let out = smimegate(
            &data,
            &[
                "mailbox",
                "import",
                "alice@corp.example",
                "--pkcs12",
                &p(file),
                "--password-file",
                &p(password),
            ],
        );
        assert_refused(&out, expected);
        assert_eq!(
            rows(&data),
            before,
            "rows left behind by {}",
            file.display()
        );
        assert_eq!(
            count_objects(&token_objects(&data)),
            objects_before,
            "token objects left behind by {}",
            file.display()
        );
        assert_eq!(mailbox_state(&data, "alice@corp.example"), "inactive");
    }
    // The certificate path refuses a certificate no request was made for.
    let out = smimegate(
        &data,
        &[
            "mailbox",
            "import",
            "alice@corp.example",
            "--certificate",
            &cert,
        ],
    );
    assert_refused(&out, "mailbox csr");
    assert_eq!(rows(&data), before);
    // And the right password still works afterwards.
    smimegate_ok(
        &data,
        &[
            "mailbox",
            "import",
            "alice@corp.example",
            "--pkcs12",
            &p(&good),
            "--password-file",
            &p(&pw),
        ],
    );
    assert_eq!(mailbox_state(&data, "alice@corp.example"), "active");
}

#[test]
fn a_request_signed_in_the_token_certified_by_an_external_ca_imports_and_signs() {
    let dir = tempfile::tempdir().expect("dir");
    let data = initialised(dir.path());
    let ca = OpensslCa::new(dir.path(), "external");
    smimegate_ok(&data, &["mailbox", "add", "dave@corp.example"]);
    let objects_before = count_objects(&token_objects(&data));

    let csr = smimegate_ok(&data, &["mailbox", "csr", "dave@corp.example"]);
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    assert!(!csr.contains("PRIVATE"), "{csr}");
    assert_eq!(mailbox_state(&data, "dave@corp.example"), "pending");
    assert_eq!(count_objects(&token_objects(&data)), objects_before + 2);
    let csr_path = dir.path().join("dave.csr");
    std::fs::write(&csr_path, &csr).expect("write");
    // openssl checks the request's signature (made in the token) and reads it.
    let (ok, stdout, stderr) = run(
        "openssl",
        &["req", "-in", &p(&csr_path), "-verify", "-noout", "-text"],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("verify OK") || stdout.contains("verify OK"),
        "{stderr}{stdout}"
    );
    assert!(stdout.contains("email:dave@corp.example"), "{stdout}");
    assert!(stdout.contains("E-mail Protection"), "{stdout}");

    // The external CA certifies it (its own choice of extensions).
    let ext = dir.path().join("dave.ext");
    std::fs::write(
        &ext,
        format!("{IDENTITY_EXT}subjectAltName=email:dave@corp.example\n"),
    )
    .expect("write");
    let cert = dir.path().join("dave.pem");
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p(&csr_path),
            "-CA",
            &ca.cert,
            "-CAkey",
            &ca.key,
            "-CAcreateserial",
            "-days",
            "10",
            "-out",
            &p(&cert),
            "-extfile",
            &p(&ext),
        ],
    );
    // A certificate for another key is refused: the request's key is the only one.
    let (_, stranger) = identity(&ca, "stranger", "dave@corp.example", "emailProtection");
    let out = smimegate(
        &data,
        &[
            "mailbox",
            "import",
            "dave@corp.example",
            "--certificate",
            &stranger,
        ],
    );
    assert_refused(&out, "does not match a key requested");
    assert_eq!(mailbox_state(&data, "dave@corp.example"), "pending");

    // The certificate and the CA as chain, in one PEM file.
    let bundle = dir.path().join("dave-bundle.pem");
    let text = std::fs::read_to_string(&cert).expect("read")
        + &std::fs::read_to_string(&ca.cert).expect("read");
    std::fs::write(&bundle, text).expect("write");
    let out = smimegate_ok(
        &data,
        &[
            "mailbox",
            "import",
            "dave@corp.example",
            "--certificate",
            &p(&bundle),
        ],
    );
    assert!(out.contains("imported dave@corp.example"), "{out}");
    assert!(out.contains("1 chain certificate"), "{out}");
    assert_eq!(mailbox_state(&data, "dave@corp.example"), "active");
    // No further key: the one made for the request signs.
    assert_eq!(count_objects(&token_objects(&data)), objects_before + 2);
    assert_signs(&data, dir.path(), "dave@corp.example", &ca.cert);
    assert_decrypts(&data, dir.path(), "dave@corp.example", &p(&cert));
    // Generated in the token: always sensitive, never extractable.
    let listing = token_objects(&data);
    let entry = private_key_entry(&listing, "dave@corp.example");
    assert!(
        entry.contains("Access:     sensitive, always sensitive, never extractable"),
        "{entry}"
    );
}

#[test]
fn partner_certificates_import_from_pem_der_and_p7c_list_and_remove() {
    let dir = tempfile::tempdir().expect("dir");
    let data = initialised(dir.path());
    let partner = OpensslCa::new(dir.path(), "partner");
    let stranger = OpensslCa::new(dir.path(), "stranger");
    let out = smimegate_ok(
        &data,
        &["trust", "add", &partner.cert, "--domain", "partner.example"],
    );
    assert!(out.contains("partner"), "{out}");
    let partner_ext = |address: &str| {
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:{address}\n"
        )
    };
    let (_, p1) = partner.issue("p1", "rsa:2048", &partner_ext("p1@partner.example"));
    let (_, p2) = partner.issue("p2", "rsa:2048", &partner_ext("p2@partner.example"));
    let (_, p3) = partner.issue("p3", "rsa:2048", &partner_ext("p3@partner.example"));
    let (_, p4) = partner.issue("p4", "rsa:2048", &partner_ext("p4@partner.example"));
    let p2_der = dir.path().join("p2.der");
    run_ok(
        "openssl",
        &["x509", "-in", &p2, "-outform", "DER", "-out", &p(&p2_der)],
    );
    let bundle = dir.path().join("p34.p7c");
    run_ok(
        "openssl",
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            &p3,
            "-certfile",
            &p4,
            "-certfile",
            &partner.cert,
            "-outform",
            "DER",
            "-out",
            &p(&bundle),
        ],
    );

    let out = smimegate_ok(&data, &["cert", "import", &p1]);
    assert!(
        out.starts_with("imported") && out.contains("p1@partner.example"),
        "{out}"
    );
    let out = smimegate_ok(&data, &["cert", "import", &p(&p2_der)]);
    assert!(out.contains("p2@partner.example"), "{out}");
    let out = smimegate_ok(&data, &["cert", "import", &p(&bundle), "--json"]);
    let outcomes: serde_json::Value = serde_json::from_str(&out).expect("json");
    let outcomes = outcomes.as_array().expect("array");
    assert_eq!(outcomes.len(), 3, "{out}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o["outcome"] == "imported")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o["outcome"] == "skipped")
            .count(),
        1,
        "{out}"
    );
    // Again: known, nothing added.
    let out = smimegate_ok(&data, &["cert", "import", &p1]);
    assert!(out.starts_with("known"), "{out}");
    // A PEM PKCS7 bundle (openssl's default output) is read too: held already.
    let pem_bundle = dir.path().join("p3.p7b");
    run_ok(
        "openssl",
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            &p3,
            "-out",
            &p(&pem_bundle),
        ],
    );
    let out = smimegate_ok(&data, &["cert", "import", &p(&pem_bundle)]);
    assert!(
        out.starts_with("known") && out.contains("p3@partner.example"),
        "{out}"
    );

    // Refused: a CA nobody trusts; a trusted partner CA certifying a managed address
    // or an address outside its scope; a file that is no certificate.
    let before = rows(&data);
    let (_, untrusted) = stranger.issue("x", "rsa:2048", &partner_ext("x@partner.example"));
    assert_refused(
        &smimegate(&data, &["cert", "import", &untrusted]),
        "untrusted",
    );
    let (_, ours) = partner.issue("ours", "rsa:2048", &partner_ext("alice@corp.example"));
    assert_refused(
        &smimegate(&data, &["cert", "import", &ours]),
        "managed domain",
    );
    let (_, elsewhere) = partner.issue("else", "rsa:2048", &partner_ext("x@other.example"));
    assert_refused(
        &smimegate(&data, &["cert", "import", &elsewhere]),
        "not trusted for other.example",
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    assert_refused(
        &smimegate(&data, &["cert", "import", &p(&junk)]),
        "only public certificates",
    );
    assert_eq!(rows(&data), before);

    // Listing and filters.
    let list = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["cert", "list", "--json"];
        all.extend_from_slice(args);
        let out = smimegate_ok(&data, &all);
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_array()
            .expect("array")
            .clone()
    };
    let partners = list(&["--partner"]);
    assert_eq!(partners.len(), 4, "{partners:?}");
    assert!(
        partners
            .iter()
            .all(|c| c["source"] == "uploaded" && c["revoked"] == false)
    );
    let managed = list(&["--managed"]);
    assert!(
        managed.iter().all(|c| c["kind"] != "partner"),
        "{managed:?}"
    );
    assert!(managed.iter().any(|c| c["source"] == "ca"), "{managed:?}");
    let p1_rows = list(&["--address", "p1@partner.example"]);
    assert_eq!(p1_rows.len(), 1, "{p1_rows:?}");
    let table = smimegate_ok(&data, &["cert", "list", "--partner"]);
    assert!(
        table.contains("p3@partner.example") && table.contains("4 certificate(s)"),
        "{table}"
    );

    // Remove: a partner's certificate goes; ours and the trust anchor stay.
    let fingerprint = p1_rows[0]["fingerprint"].as_str().expect("fp").to_string();
    let out = smimegate_ok(&data, &["cert", "remove", &fingerprint]);
    assert!(out.contains("p1@partner.example"), "{out}");
    assert_eq!(list(&["--partner"]).len(), 3);
    assert_refused(
        &smimegate(&data, &["cert", "remove", &fingerprint]),
        "no certificate",
    );
    let ca_fp = managed
        .iter()
        .find(|c| c["source"] == "ca")
        .and_then(|c| c["fingerprint"].as_str())
        .expect("CA fingerprint")
        .to_string();
    assert_refused(
        &smimegate(&data, &["cert", "remove", &ca_fp]),
        "only partners' certificates",
    );
    let anchor = list(&[])
        .into_iter()
        .find(|c| c["kind"] == "trust-anchor")
        .expect("anchor");
    assert_refused(
        &smimegate(
            &data,
            &[
                "cert",
                "remove",
                anchor["fingerprint"].as_str().expect("fp"),
            ],
        ),
        "only partners' certificates",
    );
    // Audit: two imports per command that imported, one removal.
    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let actions: Vec<String> = runtime.block_on(async {
        let store = smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
            .await
            .expect("database");
        let rows = store.audit().recent(100).await.expect("audit");
        store.close().await;
        rows.into_iter().map(|r| r.action).collect()
    });
    assert_eq!(
        actions.iter().filter(|a| *a == "cert.import").count(),
        4,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "cert.remove").count(),
        1,
        "{actions:?}"
    );
}

// ---- The operations on both databases (SQLite file and PostgreSQL) ----

use secrecy::SecretString;
use smimegate::app::App;
use smimegate::config::{Config, Settings};
use smimegate::ops::certs::{self, Kind, ListCertificates};
use smimegate::ops::domains::{self, AddDomain};
use smimegate::ops::identities::{self, ImportCertificate, ImportPkcs12, RequestCertificate};
use smimegate::ops::{Actor, OpError, mailboxes};
use smimegate::pki::address::Address;
use smimegate::store::{CertificateSource, KeyPurpose, MailboxState, Store};

async fn app_on(store: &Store) -> App {
    let ca = common::token_ca("CN=identities test CA");
    let key = store
        .keys()
        .insert(&ca.key_id, ca.algorithm, KeyPurpose::Ca, None)
        .await
        .expect("CA key row");
    store
        .certificates()
        .insert(&ca.certificate, CertificateSource::Ca, None, Some(key.id))
        .await
        .expect("CA certificate row");
    App {
        settings: Settings::new(PathBuf::from("."), Config::default()),
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    }
}

async fn table_rows(store: &Store) -> (i64, i64, i64) {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(store.pool())
            .await
            .expect("count")
    };
    (
        count("keys").await,
        count("certificates").await,
        count("audit_log").await,
    )
}

fn der_of(pem_path: &str) -> x509_cert::Certificate {
    use der::DecodePem;
    x509_cert::Certificate::from_pem(std::fs::read(pem_path).expect("read")).expect("certificate")
}

async fn identity_suite(store: &Store) {
    let dir = tempfile::tempdir().expect("dir");
    let app = app_on(store).await;
    let actor = Actor::job("test");
    domains::add(
        &app.ops(),
        &actor,
        AddDomain {
            name: "corp.example".into(),
            next_hop: Some("10.0.0.5:25".into()),
            wildcard: false,
        },
    )
    .await
    .expect("domain");
    for address in [
        "alice@corp.example",
        "carol@corp.example",
        "dave@corp.example",
    ] {
        mailboxes::add(&app.ops(), &actor, address)
            .await
            .expect("mailbox");
    }
    // Like activation, a domain without an inbound route is refused, before the
    // token or the database is touched.
    domains::add(
        &app.ops(),
        &actor,
        AddDomain {
            name: "noroute.example".into(),
            next_hop: None,
            wildcard: false,
        },
    )
    .await
    .expect("domain without a route");
    mailboxes::add(&app.ops(), &actor, "erin@noroute.example")
        .await
        .expect("mailbox");
    let before = table_rows(store).await;
    let refused = identities::request_certificate(
        &app,
        &actor,
        RequestCertificate {
            address: "erin@noroute.example".into(),
            key: None,
        },
    )
    .await;
    assert!(
        matches!(refused, Err(OpError::Invalid(ref m)) if m.contains("no inbound route")),
        "{refused:?}"
    );
    assert_eq!(table_rows(store).await, before);
    let ca = OpensslCa::new(dir.path(), "external");

    // PKCS#12 (legacy): a wrong password changes nothing, the right one imports.
    let (key, cert) = identity(&ca, "alice", "alice@corp.example", "emailProtection");
    let file =
        std::fs::read(pkcs12(dir.path(), "alice", &key, &cert, &ca, "pw", true)).expect("read");
    let before = table_rows(store).await;
    let wrong = identities::import_pkcs12(
        &app,
        &actor,
        ImportPkcs12 {
            address: "alice@corp.example".into(),
            file: file.clone(),
            password: SecretString::from("nope"),
        },
    )
    .await;
    assert!(
        matches!(wrong, Err(OpError::Invalid(ref m)) if m.contains("wrong password")),
        "{wrong:?}"
    );
    assert_eq!(table_rows(store).await, before);
    let imported = identities::import_pkcs12(
        &app,
        &actor,
        ImportPkcs12 {
            address: "alice@corp.example".into(),
            file,
            password: SecretString::from("pw"),
        },
    )
    .await
    .expect("import");
    assert_eq!(imported.state, MailboxState::Active);
    assert_eq!(imported.certificate.source, CertificateSource::Uploaded);
    let after = table_rows(store).await;
    assert_eq!(after, (before.0 + 1, before.1 + 1, before.2 + 1));
    let alice = Address::parse("alice@corp.example").expect("address");
    let signer = app.signer_for(&alice).await.expect("signer");
    assert_eq!(signer.certificate, der_of(&cert));
    assert_eq!(signer.chain, vec![der_of(&ca.cert)]);
    let keys = app.store.keys().list().await.expect("keys");
    let row = keys
        .iter()
        .find(|k| k.cka_id == imported.key_id)
        .expect("key row");
    assert_eq!(row.purpose, KeyPurpose::Imported);

    // Carol has an issued identity; an uploaded newer one takes over signing, and
    // the issued one's key stays in the key directory for old mail.
    mailboxes::activate(
        &app,
        &actor,
        mailboxes::Activate {
            address: "carol@corp.example".into(),
            key: Some(smimegate::hsm::KeyAlgorithm::P256),
            skip_mx_check: true,
        },
    )
    .await
    .expect("activate");
    let carol = Address::parse("carol@corp.example").expect("address");
    let issued = app.signer_for(&carol).await.expect("issued signer");
    let (key, cert) = identity(&ca, "carol", "carol@corp.example", "emailProtection");
    let file =
        std::fs::read(pkcs12(dir.path(), "carol", &key, &cert, &ca, "pw", false)).expect("read");
    identities::import_pkcs12(
        &app,
        &actor,
        ImportPkcs12 {
            address: "carol@corp.example".into(),
            file,
            password: SecretString::from("pw"),
        },
    )
    .await
    .expect("import over an issued identity");
    let uploaded = app.signer_for(&carol).await.expect("uploaded signer");
    assert_eq!(uploaded.certificate, der_of(&cert));
    assert_ne!(uploaded.key_id, issued.key_id);
    let owned = app
        .store
        .certificates()
        .for_owner("carol@corp.example")
        .await
        .expect("certificates");
    assert_eq!(owned.iter().filter(|c| c.key_id.is_some()).count(), 2);
    let retired: Vec<bool> = app
        .store
        .keys()
        .list()
        .await
        .expect("keys")
        .iter()
        .filter(|k| {
            Some(k.id)
                == owned
                    .iter()
                    .find(|c| c.source == CertificateSource::Issued)
                    .and_then(|c| c.key_id)
        })
        .map(|k| k.retired_at.is_some())
        .collect();
    assert_eq!(retired, [true], "the issued key is retired from signing");
    let ids = smimegate::smime::decrypt::RecipientId::for_certificate(&issued.certificate);
    let held = app
        .key_directory()
        .await
        .expect("key directory")
        .resolve(&ids);
    assert!(
        held.iter().any(|(_, key)| *key == issued.key_id),
        "the issued key still decrypts"
    );

    // Deactivated (revoke-pending, holding its seat), carol can import again.
    mailboxes::deactivate(&app, &actor, &["carol@corp.example".to_string()])
        .await
        .expect("deactivate");
    let (key, cert) = identity(&ca, "carol2", "carol@corp.example", "emailProtection");
    let file =
        std::fs::read(pkcs12(dir.path(), "carol2", &key, &cert, &ca, "pw", false)).expect("read");
    let again = identities::import_pkcs12(
        &app,
        &actor,
        ImportPkcs12 {
            address: "carol@corp.example".into(),
            file,
            password: SecretString::from("pw"),
        },
    )
    .await
    .expect("import after deactivation");
    assert_eq!(again.state, MailboxState::Active);
    assert_eq!(
        app.signer_for(&carol).await.expect("signer").certificate,
        der_of(&cert)
    );

    // CSR: pending, then the external CA's certificate makes it active.
    let audit_before = table_rows(store).await.2;
    let request = identities::request_certificate(
        &app,
        &actor,
        RequestCertificate {
            address: "dave@corp.example".into(),
            key: None,
        },
    )
    .await
    .expect("csr");
    assert_eq!(request.state, MailboxState::Pending);
    assert_eq!(
        table_rows(store).await.2,
        audit_before + 1,
        "mailbox.csr audited"
    );
    let csr = dir.path().join("dave.csr");
    std::fs::write(&csr, &request.pem).expect("write");
    let ext = dir.path().join("dave.ext");
    std::fs::write(
        &ext,
        format!("{IDENTITY_EXT}subjectAltName=email:dave@corp.example\n"),
    )
    .expect("write");
    let dave_cert = dir.path().join("dave.pem");
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &ca.cert,
            "-CAkey",
            &ca.key,
            "-CAcreateserial",
            "-days",
            "10",
            "-out",
            &p(&dave_cert),
            "-extfile",
            &p(&ext),
        ],
    );
    let done = identities::import_certificate(
        &app,
        &actor,
        ImportCertificate {
            address: "dave@corp.example".into(),
            file: [
                std::fs::read(&dave_cert).expect("read"),
                std::fs::read(&ca.cert).expect("read"),
            ]
            .concat(),
        },
    )
    .await
    .expect("import certificate");
    assert_eq!(done.state, MailboxState::Active);
    assert_eq!(done.key_id, request.key_id);
    let dave = Address::parse("dave@corp.example").expect("address");
    assert_eq!(
        app.signer_for(&dave).await.expect("signer").certificate,
        der_of(&p(&dave_cert))
    );
    assert_eq!(
        app.signer_for(&dave).await.expect("signer").chain,
        vec![der_of(&ca.cert)]
    );

    // Partners: import, list, remove. The external CA, whose certificate came with
    // the identities above, can still become a trust anchor.
    smimegate::ops::trust::add(
        &app.ops(),
        &actor,
        smimegate::ops::trust::AddTrust {
            pem: std::fs::read(&ca.cert).expect("read"),
            domains: vec!["partner.example".into()],
        },
    )
    .await
    .expect("trust");
    let (_, partner) = ca.issue(
        "p1",
        "rsa:2048",
        &format!("{IDENTITY_EXT}subjectAltName=email:p1@partner.example\n"),
    );
    let outcomes = certs::import(&app.ops(), &actor, &std::fs::read(&partner).expect("read"))
        .await
        .expect("partner import");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, "imported");
    let partners = certs::list(
        &app.ops(),
        ListCertificates {
            kind: Kind::Partner,
            address: None,
        },
    )
    .await
    .expect("list");
    assert_eq!(partners.len(), 1);
    let found = app
        .store
        .certificates()
        .for_partner("p1@partner.example", smimegate::store::unix_now())
        .await
        .expect("partner rows");
    assert_eq!(
        found.len(),
        1,
        "the relay finds the imported partner certificate"
    );
    let removed = certs::remove(&app.ops(), &actor, &partners[0].fingerprint)
        .await
        .expect("remove");
    assert_eq!(removed.address.as_deref(), Some("p1@partner.example"));
    let refused = certs::remove(
        &app.ops(),
        &actor,
        &imported.certificate.record.fingerprint_sha256,
    )
    .await;
    assert!(matches!(refused, Err(OpError::Invalid(_))), "{refused:?}");

    // Seats: alice, carol and dave hold the three there are; frank gets none, by
    // upload or by request, and nothing of either is left behind.
    smimegate::ops::licence::set(
        &app.ops(),
        &actor,
        smimegate::ops::licence::SetLicence {
            smime_seats: 3,
            mail_security_seats: 10,
            valid_until: None,
        },
    )
    .await
    .expect("licence");
    mailboxes::add(&app.ops(), &actor, "frank@corp.example")
        .await
        .expect("mailbox");
    let (key, cert) = identity(&ca, "frank", "frank@corp.example", "emailProtection");
    let file =
        std::fs::read(pkcs12(dir.path(), "frank", &key, &cert, &ca, "pw", false)).expect("read");
    let before = table_rows(store).await;
    let keys_in_token = app.hsm.list_keys().expect("token keys").len();
    let no_seat = identities::import_pkcs12(
        &app,
        &actor,
        ImportPkcs12 {
            address: "frank@corp.example".into(),
            file,
            password: SecretString::from("pw"),
        },
    )
    .await;
    assert!(matches!(no_seat, Err(OpError::NoSeat(_))), "{no_seat:?}");
    let no_seat = identities::request_certificate(
        &app,
        &actor,
        RequestCertificate {
            address: "frank@corp.example".into(),
            key: None,
        },
    )
    .await;
    assert!(matches!(no_seat, Err(OpError::NoSeat(_))), "{no_seat:?}");
    assert_eq!(table_rows(store).await, before);
    assert_eq!(
        app.hsm.list_keys().expect("token keys").len(),
        keys_in_token
    );
    let frank = app
        .store
        .mailboxes()
        .require(&Address::parse("frank@corp.example").expect("address"))
        .await
        .expect("frank");
    assert_eq!(frank.state, MailboxState::Inactive);
}

#[tokio::test]
async fn identity_operations_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    identity_suite(&store).await;
}

#[tokio::test]
async fn identity_operations_on_postgres() {
    let db = common::postgres_store().await;
    identity_suite(&db.store).await;
    db.drop_database().await;
}

#[test]
fn pkcs12_files_in_every_mode_openssl_writes_are_read_and_a_wrong_password_is_named() {
    use smimegate::pki::pkcs12::{self, Pkcs12Error};
    let dir = tempfile::tempdir().expect("dir");
    let ca = OpensslCa::new(dir.path(), "external");
    let (key, cert) = identity(&ca, "alice", "alice@corp.example", "emailProtection");
    let modes: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("legacy", &["-legacy"]),
        (
            "3des",
            &["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES"],
        ),
        (
            "aes128",
            &["-keypbe", "AES-128-CBC", "-certpbe", "AES-128-CBC"],
        ),
        ("sha512-mac", &["-macalg", "sha512"]),
        ("sha1-mac", &["-macalg", "sha1"]),
        ("unencrypted", &["-keypbe", "NONE", "-certpbe", "NONE"]),
        ("no-mac", &["-nomac"]),
    ];
    let expected_key = std::fs::read_to_string(&key).expect("key");
    for (name, extra) in modes {
        let out = dir.path().join(format!("{name}.p12"));
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            &key,
            "-in",
            &cert,
            "-certfile",
            &ca.cert,
            "-passout",
            "pass:s3cret",
        ];
        let out_s = p(&out);
        args.extend(["-out", &out_s]);
        args.extend_from_slice(extra);
        run_ok("openssl", &args);
        let file = std::fs::read(&out).expect("read");
        let contents = pkcs12::parse(&file, &SecretString::from("s3cret"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(contents.certificates.len(), 2, "{name}");
        // The key is the one openssl was given (PKCS#8 DER vs the PEM file).
        use der::EncodePem;
        let info = pkcs8::PrivateKeyInfoRef::try_from(&contents.key[..]).expect("PKCS#8");
        let pem = info.to_pem(der::pem::LineEnding::LF).expect("pem");
        assert_eq!(pem.as_str(), expected_key.as_str(), "{name}");
        // (Without a MAC a wrong password shows only as undecryptable bags.)
        if *name != "no-mac" {
            let wrong = pkcs12::parse(&file, &SecretString::from("s3cre7"));
            assert_eq!(wrong.err(), Some(Pkcs12Error::WrongPassword), "{name}");
        }
    }
}

#[test]
fn a_revoked_partner_certificate_is_not_imported() {
    use common::crl::{CrlCa, CrlServer};
    let dir = tempfile::tempdir().expect("dir");
    let data = initialised(dir.path());
    let server = CrlServer::start(dir.path().join("www"));
    let ca = CrlCa::new(dir.path(), "partner", Some(server.url("partner.crl")));
    let good = ca.issue("good@partner.example");
    let gone = ca.issue("gone@partner.example");
    ca.revoke(&gone, "keyCompromise");
    server.publish("partner.crl", &ca.crl(&[]));
    smimegate_ok(
        &data,
        &["trust", "add", &ca.cert, "--domain", "partner.example"],
    );

    let before = rows(&data);
    let out = smimegate(&data, &["cert", "import", &gone.cert]);
    assert_refused(&out, "revoked");
    assert_eq!(rows(&data), before);
    let out = smimegate_ok(&data, &["cert", "import", &good.cert]);
    assert!(
        out.starts_with("imported") && out.contains("good@partner.example"),
        "{out}"
    );
    assert!(server.hits() >= 1, "the CRL was fetched");
}
