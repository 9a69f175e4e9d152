//! The token layer against a real SoftHSM2 token: custody of every key kind, signatures
//! checked by openssl, content keys made by openssl recovered in the token, ECDH, key
//! import, and the session pool under concurrency.

mod common;

use std::path::Path;

use der::{Decode, Encode, EncodePem};
use smimegate::hsm::{
    GeneratedKey, HsmError, KeyAlgorithm, KeyKind, KeyRole, KeyTransport, OaepHash, OaepParams,
    Refusal, SignatureScheme,
};
use smimegate::pki::address::Address;
use smimegate::pki::ca::{self, CaIdentity};
use zeroize::Zeroizing;

use common::{run, run_ok, token};

fn generate(algorithm: KeyAlgorithm, role: KeyRole, label: &str) -> GeneratedKey {
    token()
        .hsm
        .generate_key_pair(algorithm, role, label)
        .expect("generate key pair")
}

fn test_ca() -> CaIdentity {
    let key = generate(
        KeyAlgorithm::Rsa3072,
        KeyRole::CertificateAuthority,
        "test CA",
    );
    let cert = ca::create_ca_certificate(&token().hsm, &key, "CN=Test CA,O=smimegate tests", 30)
        .expect("CA certificate");
    CaIdentity {
        key_id: key.id,
        algorithm: key.algorithm,
        certificate: cert,
    }
}

fn write_pem(dir: &Path, name: &str, cert: &x509_cert::Certificate) -> String {
    let path = dir.join(name);
    std::fs::write(&path, cert.to_pem(der::pem::LineEnding::LF).expect("PEM")).expect("write PEM");
    path.display().to_string()
}

fn assert_generated_in_token(key: &GeneratedKey) {
    let report = token().hsm.custody_report(&key.id).expect("custody report");
    assert!(report.token && report.private, "{report:?}");
    assert!(report.sensitive, "CKA_SENSITIVE: {report:?}");
    assert!(report.always_sensitive, "CKA_ALWAYS_SENSITIVE: {report:?}");
    assert!(!report.extractable, "CKA_EXTRACTABLE: {report:?}");
    assert!(
        report.never_extractable,
        "CKA_NEVER_EXTRACTABLE: {report:?}"
    );
    assert_eq!(
        report.read_secret,
        Refusal::Refused("CKR_ATTRIBUTE_SENSITIVE".into())
    );
    let probe = report.probe.as_ref().expect("probed");
    assert_eq!(probe.wrap, Refusal::Refused("CKR_KEY_UNEXTRACTABLE".into()));
    assert_eq!(
        probe.set_extractable,
        Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into())
    );
    assert_eq!(
        probe.clear_sensitive,
        Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into())
    );
    assert!(report.generated_in_token());
}

#[test]
fn every_generated_key_kind_stays_in_the_token() {
    for (algorithm, role) in [
        (KeyAlgorithm::Rsa3072, KeyRole::CertificateAuthority),
        (KeyAlgorithm::P256, KeyRole::CertificateAuthority),
        (KeyAlgorithm::Rsa2048, KeyRole::Mailbox),
        (KeyAlgorithm::Rsa3072, KeyRole::Mailbox),
        (KeyAlgorithm::P256, KeyRole::Mailbox),
    ] {
        let key = generate(algorithm, role, &format!("custody {algorithm} {role:?}"));
        assert_generated_in_token(&key);
        let info = token()
            .hsm
            .find_key(&key.id)
            .expect("find")
            .expect("key present");
        assert_eq!(info.algorithm, Some(algorithm));
    }
}

/// Every object this process can see in the test token (session objects included),
/// with every attribute the token will show, read through a session of our own.
fn all_objects() -> Vec<Vec<cryptoki::object::Attribute>> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::AttributeType as T;
    let ctx = Pkcs11::new(common::module()).expect("load module");
    // The gateway's Hsm initialised the module already; that is fine.
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim_end() == common::LABEL)
                .unwrap_or(false)
        })
        .expect("test token");
    let session = ctx.open_ro_session(slot).expect("session");
    let every = [
        T::Class,
        T::KeyType,
        T::Id,
        T::Label,
        T::Token,
        T::Private,
        T::Modifiable,
        T::Copyable,
        T::Destroyable,
        T::Sensitive,
        T::AlwaysSensitive,
        T::Extractable,
        T::NeverExtractable,
        T::Local,
        T::Sign,
        T::SignRecover,
        T::Verify,
        T::VerifyRecover,
        T::Decrypt,
        T::Encrypt,
        T::Unwrap,
        T::Wrap,
        T::Derive,
        T::WrapWithTrusted,
        T::AlwaysAuthenticate,
        T::Modulus,
        T::PublicExponent,
        T::EcParams,
        T::EcPoint,
        T::StartDate,
        T::EndDate,
        T::Subject,
        T::KeyGenMechanism,
        T::ValueLen,
    ];
    let mut objects: Vec<Vec<cryptoki::object::Attribute>> = session
        .find_objects(&[])
        .expect("find objects")
        .into_iter()
        .map(|h| session.get_attributes(h, &every).expect("attributes"))
        .collect();
    objects.sort_by_key(|attrs| format!("{attrs:?}"));
    objects
}

/// SoftHSM2 keeps each object in `UUID.object` (and `UUID.lock`); `token.object`,
/// `token.lock` and `generation` describe the token itself.
fn is_key_object_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".object") || name.ends_with(".lock")) && !name.starts_with("token.")
}

/// The token's key object files: a digest of every byte of each, and when it was
/// last written.
fn token_files() -> std::collections::BTreeMap<String, (String, std::time::SystemTime)> {
    use sha2::Digest;
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![token().dir.path().join("tokens")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read token dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // The token's own record (token.object, generation) changes at login.
            if !is_key_object_file(&path) {
                continue;
            }
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            let digest = hex::encode(sha2::Sha256::digest(
                std::fs::read(&path).expect("read token file"),
            ));
            files.insert(path.display().to_string(), (digest, modified));
        }
    }
    files
}

/// A key made the way other tools make keys: sensitive but extractable (pkcs11-tool
/// `--extractable`), i.e. one a custody check must flag without touching it.
fn extractable_key_from_pkcs11_tool(label: &str) {
    run_ok(
        "pkcs11-tool",
        &[
            "--module",
            &common::module().display().to_string(),
            "--token-label",
            common::LABEL,
            "--login",
            "--pin",
            &token().user_pin,
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            label,
            "--id",
            "e7e7",
            "--usage-sign",
            "--extractable",
        ],
    );
}

#[test]
fn custody_probes_throwaway_keys_and_leaves_every_production_key_as_it_was() {
    let generated = [
        generate(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "custody rsa"),
        generate(KeyAlgorithm::P256, KeyRole::Mailbox, "custody ec"),
        generate(
            KeyAlgorithm::P256,
            KeyRole::CertificateAuthority,
            "custody ca",
        ),
    ];
    extractable_key_from_pkcs11_tool("made elsewhere, extractable");
    let (objects, files) = (all_objects(), token_files());

    let check = token().hsm.custody_reports().expect("custody");

    assert!(
        all_objects() == objects,
        "an object or attribute changed, or an object was left behind"
    );
    let after = token_files();
    let written: Vec<&String> = after
        .iter()
        .filter(|(path, state)| files.get(*path) != Some(state))
        .map(|(path, _)| path)
        .collect();
    assert!(
        written.is_empty() && after.len() == files.len(),
        "the token's files were written: {written:?}"
    );
    // The probes say what they were made on, once per kind.
    let kinds: Vec<KeyKind> = check.probes.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [KeyKind::Rsa, KeyKind::Ec]);
    for probe in &check.probes {
        assert!(probe.probed_on.contains("throwaway"), "{probe:?}");
        assert!(
            probe.wrap.is_refused_with("CKR_KEY_UNEXTRACTABLE"),
            "{probe:?}"
        );
        assert!(
            probe
                .set_extractable
                .is_refused_with("CKR_ATTRIBUTE_READ_ONLY")
        );
        assert!(
            probe
                .clear_sensitive
                .is_refused_with("CKR_ATTRIBUTE_READ_ONLY")
        );
    }
    assert_eq!(check.keys.len(), 4, "{:?}", check.keys);
    for key in &generated {
        let report = check
            .keys
            .iter()
            .find(|r| r.id == key.id.to_hex())
            .expect("reported");
        assert!(report.generated_in_token(), "{report:?}");
    }
    let weak = check
        .keys
        .iter()
        .find(|r| r.id == "e7e7")
        .expect("the extractable key is reported");
    assert!(weak.extractable && !weak.key_cannot_leave(), "{weak:?}");
    assert_eq!(weak.findings().exposed, ["CKA_EXTRACTABLE is true"]);
    let json = serde_json::to_string(&check).expect("JSON");
    assert!(json.contains("\"probed_on\""), "{json}");
}

#[test]
fn key_id_is_the_subject_key_identifier_of_the_certificate() {
    let ca = test_ca();
    let key = generate(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "ski");
    let address = Address::parse("ski@corp.example").expect("address");
    let cert = ca::issue_mailbox_certificate(
        &token().hsm,
        &ca,
        &address,
        &key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("issue");
    let (_, ski) = cert
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
        .expect("parse")
        .expect("SKI present");
    assert_eq!(ski.0.as_bytes(), key.id.as_bytes());
}

#[test]
fn signatures_made_in_the_token_verify_with_openssl_from_the_certificate_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_ca();
    let data_path = dir.path().join("data");
    let data = b"Message to be signed by the token.\r\n".repeat(50);
    std::fs::write(&data_path, &data).expect("write data");
    let cases = [
        (
            KeyAlgorithm::Rsa2048,
            SignatureScheme::RsaPkcs1Sha256,
            "sha256",
            vec![],
        ),
        (
            KeyAlgorithm::Rsa2048,
            SignatureScheme::RsaPkcs1Sha384,
            "sha384",
            vec![],
        ),
        (
            KeyAlgorithm::Rsa3072,
            SignatureScheme::RsaPkcs1Sha512,
            "sha512",
            vec![],
        ),
        (
            KeyAlgorithm::Rsa2048,
            SignatureScheme::RsaPssSha256,
            "sha256",
            vec![
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
        (
            KeyAlgorithm::Rsa2048,
            SignatureScheme::RsaPssSha512,
            "sha512",
            vec![
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:64",
            ],
        ),
        (
            KeyAlgorithm::P256,
            SignatureScheme::EcdsaSha256,
            "sha256",
            vec![],
        ),
        (
            KeyAlgorithm::P256,
            SignatureScheme::EcdsaSha384,
            "sha384",
            vec![],
        ),
    ];
    for (i, (algorithm, scheme, digest, extra)) in cases.into_iter().enumerate() {
        let key = generate(algorithm, KeyRole::Mailbox, &format!("sig {i}"));
        let address = Address::parse(&format!("signer{i}@corp.example")).expect("address");
        let cert = ca::issue_mailbox_certificate(
            &token().hsm,
            &ca,
            &address,
            &key,
            365,
            "http://crl.example/ca.crl",
        )
        .expect("issue");
        let cert_path = write_pem(dir.path(), &format!("cert{i}.pem"), &cert);
        let pub_path = dir.path().join(format!("pub{i}.pem")).display().to_string();
        run_ok(
            "openssl",
            &[
                "x509", "-in", &cert_path, "-pubkey", "-noout", "-out", &pub_path,
            ],
        );
        let signature = token().hsm.sign(&key.id, scheme, &data).expect("sign");
        let sig_path = dir.path().join(format!("sig{i}")).display().to_string();
        std::fs::write(&sig_path, &signature).expect("write signature");
        let digest_flag = format!("-{digest}");
        let data_arg = data_path.display().to_string();
        let mut args = vec![
            "dgst",
            digest_flag.as_str(),
            "-verify",
            &pub_path,
            "-signature",
            &sig_path,
        ];
        args.extend(extra.iter().copied());
        args.push(&data_arg);
        let (ok, stdout, stderr) = run("openssl", &args);
        assert!(
            ok && stdout.contains("Verified OK"),
            "{scheme:?}: {stdout}{stderr}"
        );

        // A changed message must not verify: the check above is not vacuous.
        let tampered = dir.path().join(format!("tampered{i}"));
        let mut bad = data.clone();
        bad[0] ^= 1;
        std::fs::write(&tampered, bad).expect("write");
        let tampered_arg = tampered.display().to_string();
        let last = args.len() - 1;
        args[last] = &tampered_arg;
        let (ok, _, _) = run("openssl", &args);
        assert!(!ok, "{scheme:?}: tampered data verified");
    }
}

#[test]
fn ca_and_mailbox_certificates_pass_openssl_smime_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_ca();
    let ca_path = write_pem(dir.path(), "ca.pem", &ca.certificate);
    for (algorithm, usage) in [
        (KeyAlgorithm::Rsa2048, "Digital Signature, Key Encipherment"),
        (KeyAlgorithm::P256, "Digital Signature, Key Agreement"),
    ] {
        let key = generate(algorithm, KeyRole::Mailbox, "profile");
        let address = Address::parse(&format!("{algorithm}@corp.example")).expect("address");
        let cert = ca::issue_mailbox_certificate(
            &token().hsm,
            &ca,
            &address,
            &key,
            365,
            "http://crl.example/ca.crl",
        )
        .expect("issue");
        let path = write_pem(dir.path(), &format!("{algorithm}.pem"), &cert);
        let out = run_ok(
            "openssl",
            &[
                "verify",
                "-purpose",
                "smimesign",
                "-CAfile",
                &ca_path,
                &path,
            ],
        );
        assert!(out.contains(": OK"), "{out}");
        let text = run_ok("openssl", &["x509", "-in", &path, "-noout", "-text"]);
        assert!(text.contains("E-mail Protection"), "{text}");
        assert!(!text.contains("TLS Web"), "{text}");
        assert!(text.contains(usage), "{algorithm}: {text}");
        assert!(text.contains(&format!("email:{address}")), "{text}");
        assert!(text.contains("URI:http://crl.example/ca.crl"), "{text}");
        assert!(text.contains("2.23.140.1.5.1.3"), "{text}");
    }
}

/// Parses openssl's EnvelopedData: (encrypted key, IV, encrypted content).
fn enveloped_parts(der_bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ci = cms::content_info::ContentInfo::from_der(der_bytes).expect("ContentInfo");
    let env: cms::enveloped_data::EnvelopedData = ci.content.decode_as().expect("EnvelopedData");
    let ri = env
        .recip_infos
        .0
        .iter()
        .next()
        .expect("one recipient")
        .clone();
    let cms::enveloped_data::RecipientInfo::Ktri(ktri) = ri else {
        panic!("expected KeyTransRecipientInfo")
    };
    let iv: der::asn1::OctetString = env
        .encrypted_content
        .content_enc_alg
        .parameters
        .expect("IV")
        .decode_as()
        .expect("IV octets");
    (
        ktri.enc_key.as_bytes().to_vec(),
        iv.as_bytes().to_vec(),
        env.encrypted_content
            .encrypted_content
            .expect("content")
            .as_bytes()
            .to_vec(),
    )
}

#[test]
fn content_keys_encrypted_by_openssl_cms_are_recovered_in_the_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_ca();
    let key = generate(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "recipient");
    let address = Address::parse("recipient@corp.example").expect("address");
    let cert = ca::issue_mailbox_certificate(
        &token().hsm,
        &ca,
        &address,
        &key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("issue");
    let cert_path = write_pem(dir.path(), "recipient.pem", &cert);
    let plain_path = dir.path().join("plain").display().to_string();
    let plaintext = b"Content-Type: text/plain\r\n\r\nconfidential\r\n".repeat(20);
    std::fs::write(&plain_path, &plaintext).expect("write");

    for (padding, transport) in [
        (None, KeyTransport::RsaPkcs1v15),
        (
            Some("rsa_padding_mode:oaep"),
            KeyTransport::oaep(OaepHash::Sha1),
        ),
    ] {
        let out_path = dir.path().join("enveloped.der").display().to_string();
        let mut args = vec![
            "cms",
            "-encrypt",
            "-binary",
            "-aes256",
            "-outform",
            "DER",
            "-in",
            &plain_path,
            "-out",
            &out_path,
            "-recip",
            &cert_path,
        ];
        if let Some(p) = padding {
            args.extend(["-keyopt", p]);
        }
        run_ok("openssl", &args);
        let (encrypted_key, iv, content) =
            enveloped_parts(&std::fs::read(&out_path).expect("read"));
        let cek = token()
            .hsm
            .decrypt_key_transport(&key.id, transport.clone(), &encrypted_key)
            .expect("recover content key");
        assert_eq!(cek.len(), 32, "{transport:?}");
        // The recovered key opens the content: decrypt it with openssl enc.
        let ct_path = dir.path().join("content.bin").display().to_string();
        std::fs::write(&ct_path, &content).expect("write");
        let out = std::process::Command::new("openssl")
            .args([
                "enc",
                "-d",
                "-aes-256-cbc",
                "-K",
                &hex::encode(&*cek),
                "-iv",
                &hex::encode(&iv),
                "-in",
                &ct_path,
            ])
            .output()
            .expect("openssl enc");
        assert!(
            out.status.success(),
            "{transport:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, plaintext, "{transport:?}");

        // The wrong mechanism does not yield this key.
        let wrong = if transport == KeyTransport::RsaPkcs1v15 {
            KeyTransport::oaep(OaepHash::Sha1)
        } else {
            KeyTransport::RsaPkcs1v15
        };
        let other = token()
            .hsm
            .decrypt_key_transport(&key.id, wrong, &encrypted_key);
        assert!(other.map(|k| *k != *cek).unwrap_or(true));
    }
}

#[test]
fn oaep_with_any_hash_is_recovered_in_the_token_even_where_the_token_refuses_it() {
    // SoftHSM2 does CKM_RSA_PKCS_OAEP with SHA-1 only; for the others the token does
    // raw RSA (CKM_RSA_X_509) and the host decodes OAEP. Either way the key stays in
    // the token and the content key comes out.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_ca();
    let key = generate(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "oaep");
    let address = Address::parse("oaep@corp.example").expect("address");
    let cert = ca::issue_mailbox_certificate(
        &token().hsm,
        &ca,
        &address,
        &key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("issue");
    let cert_path = write_pem(dir.path(), "c.pem", &cert);
    let secret = [0x42u8; 32];
    let in_path = dir.path().join("k").display().to_string();
    let out_path = dir.path().join("k.enc").display().to_string();
    std::fs::write(&in_path, secret).expect("write");
    use OaepHash::*;
    for (hash, mgf1, label) in [
        (Sha1, Sha1, ""),
        (Sha256, Sha256, ""),
        (Sha384, Sha384, ""),
        (Sha512, Sha512, ""),
        (Sha224, Sha1, ""),
        (Sha256, Sha1, ""),
        (Sha256, Sha256, "0a0b0c"),
        (Sha1, Sha1, "6c6162656c"),
    ] {
        let md = format!("rsa_oaep_md:{}", hash.name());
        let mgf = format!("rsa_mgf1_md:{}", mgf1.name());
        let lbl = format!("rsa_oaep_label:{label}");
        let mut args = vec![
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            &cert_path,
            "-in",
            &in_path,
            "-out",
            &out_path,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &md,
            "-pkeyopt",
            &mgf,
        ];
        if !label.is_empty() {
            args.extend(["-pkeyopt", &lbl]);
        }
        run_ok("openssl", &args);
        let encrypted = std::fs::read(&out_path).expect("read");
        let params = OaepParams {
            hash,
            mgf1_hash: mgf1,
            label: hex::decode(label).expect("hex"),
        };
        let what = format!("{params:?}");
        let transport = KeyTransport::RsaOaep(params);
        let recovered = token()
            .hsm
            .decrypt_key_transport(&key.id, transport.clone(), &encrypted)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&recovered[..], &secret[..], "{what}");
        let cek = token()
            .hsm
            .recover_content_key(&key.id, &transport, &encrypted, 32)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(bool::from(cek.genuine()), "{what}");
        assert_eq!(cek.as_bytes(), &secret[..], "{what}");

        // A corrupted block: an error about the data from the plain call, a random key
        // of the asked length (not genuine) from the RFC 3218 one.
        let mut corrupted = encrypted.clone();
        corrupted[10] ^= 0x01;
        match token()
            .hsm
            .decrypt_key_transport(&key.id, transport.clone(), &corrupted)
        {
            Err(HsmError::Token { rv, .. }) => {
                assert_eq!(rv, cryptoki::error::RvError::EncryptedDataInvalid, "{what}")
            }
            other => panic!("{what}: expected a data error, got {other:?}"),
        }
        let stand_in = token()
            .hsm
            .recover_content_key(&key.id, &transport, &corrupted, 32)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!bool::from(stand_in.genuine()), "{what}");
        assert_eq!(stand_in.as_bytes().len(), 32, "{what}");
        assert_ne!(stand_in.as_bytes(), &secret[..], "{what}");
        // The right key asked for at the wrong length is no key either.
        let short = token()
            .hsm
            .recover_content_key(&key.id, &transport, &encrypted, 16)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!bool::from(short.genuine()), "{what}");
        assert_eq!(short.as_bytes().len(), 16, "{what}");
    }
}

#[test]
fn ecdh_in_the_token_agrees_with_the_peer() {
    use p256::elliptic_curve::Generate;
    let key = generate(KeyAlgorithm::P256, KeyRole::Mailbox, "ecdh");
    let our_point = key.public_key.subject_public_key.raw_bytes().to_vec();
    let our_public = p256::PublicKey::from_sec1_bytes(&our_point).expect("our point");
    let ephemeral = p256::ecdh::EphemeralSecret::generate();
    let peer_point = ephemeral.public_key().to_sec1_bytes();
    let expected = ephemeral.diffie_hellman(&our_public);
    let z = token()
        .hsm
        .ecdh_shared_secret(&key.id, &peer_point)
        .expect("derive in token");
    assert_eq!(&z[..], expected.raw_secret_bytes().as_slice());
}

#[test]
fn imported_pkcs8_keys_are_held_like_generated_ones_and_sign() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, genpkey) in [
        vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ]
    .into_iter()
    .enumerate()
    {
        let pem_path = dir.path().join(format!("key{i}.pem")).display().to_string();
        let key_path = dir.path().join(format!("key{i}.der")).display().to_string();
        let mut args = vec!["genpkey", "-out", pem_path.as_str()];
        args.extend(genpkey);
        run_ok("openssl", &args);
        // openssl writes DER keys in the traditional format; PKCS#12 bags carry PKCS#8.
        run_ok(
            "openssl",
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", &pem_path, "-outform", "DER", "-out",
                &key_path,
            ],
        );
        let pub_path = dir.path().join(format!("pub{i}.pem")).display().to_string();
        run_ok(
            "openssl",
            &["pkey", "-in", &pem_path, "-pubout", "-out", &pub_path],
        );
        let pkcs8 = Zeroizing::new(std::fs::read(&key_path).expect("read key"));
        let imported = token()
            .hsm
            .import_pkcs8(pkcs8, KeyRole::Mailbox, &format!("imported {i}"))
            .expect("import");
        let report = token().hsm.custody_report(&imported.id).expect("report");
        assert!(report.key_cannot_leave(), "{report:?}");
        assert!(
            !report.always_sensitive && !report.never_extractable && !report.local,
            "{report:?}"
        );

        let scheme = if i == 0 {
            SignatureScheme::RsaPkcs1Sha256
        } else {
            SignatureScheme::EcdsaSha256
        };
        let signature = token()
            .hsm
            .sign(&imported.id, scheme, b"imported")
            .expect("sign");
        let data_path = dir.path().join("d").display().to_string();
        let sig_path = dir.path().join("s").display().to_string();
        std::fs::write(&data_path, b"imported").expect("write");
        std::fs::write(&sig_path, signature).expect("write");
        let out = run_ok(
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                &pub_path,
                "-signature",
                &sig_path,
                &data_path,
            ],
        );
        assert!(out.contains("Verified OK"));
        // The public key we derived matches openssl's.
        let ours = imported.public_key.to_der().expect("der");
        let theirs = std::process::Command::new("openssl")
            .args(["pkey", "-pubin", "-in", &pub_path, "-outform", "DER"])
            .output()
            .expect("openssl")
            .stdout;
        assert_eq!(ours, theirs);
    }
}

/// A fresh PKCS#8 DER key made by openssl (`rsa` or `ec`), as a PKCS#12 bag holds it.
fn openssl_pkcs8(dir: &Path, name: &str, rsa: bool) -> Zeroizing<Vec<u8>> {
    let pem = dir.join(format!("{name}.pem")).display().to_string();
    let der = dir.join(format!("{name}.der")).display().to_string();
    let mut args = vec!["genpkey", "-out", pem.as_str()];
    if rsa {
        args.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    } else {
        args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    run_ok("openssl", &args);
    run_ok(
        "openssl",
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der,
        ],
    );
    Zeroizing::new(std::fs::read(&der).expect("read key"))
}

/// (sign, decrypt, unwrap, derive) a private key of this role and kind must have.
fn expected_usage(role: KeyRole, rsa: bool) -> (bool, bool, bool, bool) {
    match (role, rsa) {
        (KeyRole::Mailbox, true) => (true, true, true, false),
        (KeyRole::Mailbox, false) => (true, false, false, true),
        (KeyRole::CertificateAuthority | KeyRole::TlsServer, _) => (true, false, false, false),
    }
}

#[test]
fn key_usages_follow_the_role_for_generated_and_imported_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    for role in [
        KeyRole::Mailbox,
        KeyRole::CertificateAuthority,
        KeyRole::TlsServer,
    ] {
        for (algorithm, rsa) in [(KeyAlgorithm::Rsa2048, true), (KeyAlgorithm::P256, false)] {
            let generated = generate(algorithm, role, &format!("usage {role:?} {algorithm}"));
            let name = format!("{role:?}-{algorithm}");
            let imported = token()
                .hsm
                .import_pkcs8(
                    openssl_pkcs8(dir.path(), &name, rsa),
                    role,
                    &format!("imported usage {role:?} {algorithm}"),
                )
                .expect("import");
            for (how, key) in [("generated", &generated), ("imported", &imported)] {
                let usage = token()
                    .hsm
                    .find_key(&key.id)
                    .expect("find")
                    .expect("present")
                    .usage;
                assert_eq!(
                    (usage.sign, usage.decrypt, usage.unwrap, usage.derive),
                    expected_usage(role, rsa),
                    "{how} {algorithm} key for {role:?}: {usage}"
                );
            }
        }
    }
}

/// `secret` encrypted with PKCS#1 v1.5 to `key`'s public key, by openssl.
fn encrypt_to(dir: &Path, key: &GeneratedKey, secret: &[u8]) -> Vec<u8> {
    let public = dir.join("public.der");
    std::fs::write(&public, key.public_key.to_der().expect("DER")).expect("write");
    let (plain, cipher) = (dir.join("secret"), dir.join("secret.enc"));
    std::fs::write(&plain, secret).expect("write");
    run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            &public.display().to_string(),
            "-in",
            &plain.display().to_string(),
            "-out",
            &cipher.display().to_string(),
        ],
    );
    std::fs::read(&cipher).expect("read")
}

#[test]
fn ca_and_tls_keys_refuse_to_decrypt_and_derive_whether_generated_or_imported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = [0x42u8; 32];
    for role in [KeyRole::CertificateAuthority, KeyRole::TlsServer] {
        let generated = generate(KeyAlgorithm::Rsa2048, role, "no decrypt");
        let imported = token()
            .hsm
            .import_pkcs8(openssl_pkcs8(dir.path(), "rsa", true), role, "no decrypt")
            .expect("import");
        for key in [&generated, &imported] {
            let encrypted = encrypt_to(dir.path(), key, &secret);
            let err = token()
                .hsm
                .decrypt_key_transport(&key.id, KeyTransport::RsaPkcs1v15, &encrypted)
                .expect_err("a signing-only key must not decrypt");
            assert!(
                err.to_string().contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
                "{role:?}: {err}"
            );
        }
        let ec = token()
            .hsm
            .import_pkcs8(openssl_pkcs8(dir.path(), "ec", false), role, "no derive")
            .expect("import");
        let peer = p256::SecretKey::from_slice(&[0x21; 32]).expect("scalar");
        let err = token()
            .hsm
            .ecdh_shared_secret(&ec.id, &peer.public_key().to_sec1_bytes())
            .expect_err("a signing-only key must not derive");
        assert!(
            err.to_string().contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
            "{role:?}: {err}"
        );
    }
    // The same ciphertext to a mailbox key is recovered: the refusal is the role's.
    let mailbox = generate(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "decrypts");
    let encrypted = encrypt_to(dir.path(), &mailbox, &secret);
    let recovered = token()
        .hsm
        .decrypt_key_transport(&mailbox.id, KeyTransport::RsaPkcs1v15, &encrypted)
        .expect("mailbox key decrypts");
    assert_eq!(&recovered[..], &secret[..]);
}

#[test]
fn garbage_is_refused_as_a_key_to_import() {
    let err = token()
        .hsm
        .import_pkcs8(
            Zeroizing::new(vec![0x30, 0x03, 0x02, 0x01, 0x00]),
            KeyRole::Mailbox,
            "junk",
        )
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidKey(_)), "{err}");
}

#[test]
fn unknown_key_ids_give_a_typed_error() {
    let id = smimegate::hsm::KeyId::new(vec![0xab; 20]);
    let err = token()
        .hsm
        .sign(&id, SignatureScheme::RsaPkcs1Sha256, b"x")
        .unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_signatures_share_a_pool_of_four_sessions() {
    let hsm = common::hsm_with_sessions(4);
    let key = hsm
        .call_keygen(|h| h.generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, "pool"))
        .await
        .expect("keygen");
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let (hsm, id) = (hsm.clone(), key.id.clone());
        tasks.push(tokio::spawn(async move {
            let message = format!("message {i}");
            hsm.call("sign", move |h| {
                h.sign(&id, SignatureScheme::EcdsaSha256, message.as_bytes())
            })
            .await
        }));
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut signatures = Vec::new();
        for t in tasks {
            signatures.push(t.await.expect("task").expect("signature"));
        }
        signatures
    })
    .await
    .expect("no deadlock: all 64 finished");
    assert_eq!(all.len(), 64);
    let usage = hsm.pool_usage();
    assert!(usage.open <= 4 && usage.capacity == 4, "{usage:?}");
    assert_eq!(usage.in_use, 0, "{usage:?}");
    // Every signature verifies against the token's public key.
    let vk =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key.subject_public_key.raw_bytes())
            .expect("vk");
    for (i, sig) in all.iter().enumerate() {
        use p256::ecdsa::signature::Verifier;
        let sig = p256::ecdsa::Signature::from_der(sig).expect("DER signature");
        vk.verify(format!("message {i}").as_bytes(), &sig)
            .expect("verifies");
    }
}

#[test]
fn cms_signed_data_built_with_the_token_signer_verifies_with_openssl() {
    use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
    use smimegate::hsm::{TokenSignature, TokenSigner};

    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_ca();
    let ca_path = write_pem(dir.path(), "ca.pem", &ca.certificate);
    let content = b"Content-Type: text/plain\r\n\r\nSigned in the token.\r\n".to_vec();
    for (algorithm, scheme) in [
        (KeyAlgorithm::Rsa2048, SignatureScheme::RsaPkcs1Sha256),
        (KeyAlgorithm::P256, SignatureScheme::EcdsaSha256),
    ] {
        let key = generate(algorithm, KeyRole::Mailbox, "cms");
        let address = Address::parse(&format!("cms-{algorithm}@corp.example")).expect("address");
        let cert = ca::issue_mailbox_certificate(
            &token().hsm,
            &ca,
            &address,
            &key,
            365,
            "http://crl.example/ca.crl",
        )
        .expect("issue");
        let eci = EncapsulatedContentInfo {
            econtent_type: const_oid::db::rfc5911::ID_DATA,
            econtent: Some(der::Any::new(der::Tag::OctetString, content.clone()).expect("content")),
        };
        let digest = spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_256,
            parameters: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate().issuer().clone(),
            serial_number: cert.tbs_certificate().serial_number().clone(),
        });
        let signer = TokenSigner::new(
            token().hsm.clone(),
            key.id.clone(),
            scheme,
            key.public_key.clone(),
        );
        let signer_info =
            SignerInfoBuilder::new(sid, digest.clone(), &eci, None).expect("signer info");
        let signed = SignedDataBuilder::new(&eci)
            .add_digest_algorithm(digest)
            .expect("digest")
            .add_certificate(CertificateChoices::Certificate(cert))
            .expect("certificate")
            .add_signer_info::<_, TokenSignature>(signer_info, &signer)
            .expect("sign in token")
            .build()
            .expect("build");
        let path = dir
            .path()
            .join(format!("{algorithm}.p7m"))
            .display()
            .to_string();
        std::fs::write(&path, signed.to_der().expect("DER")).expect("write");
        let out = std::process::Command::new("openssl")
            .args([
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-in",
                &path,
                "-CAfile",
                &ca_path,
                "-purpose",
                "smimesign",
                "-binary",
            ])
            .output()
            .expect("openssl cms");
        assert!(
            out.status.success(),
            "{algorithm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, content, "{algorithm}");
    }
}
