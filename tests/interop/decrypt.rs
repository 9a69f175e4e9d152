//! Decryption of what openssl encrypts to a mailbox certificate whose key is in the
//! token: every content cipher and key transport openssl offers, S/MIME and binary
//! DER, streamed BER, AuthEnvelopedData; and every way it must fail.

use super::common;

use der::EncodePem;
use smimegate::hsm::{KeyAlgorithm, KeyId, KeyRole};
use smimegate::mime::Limits;
use smimegate::pki::address::Address;
use smimegate::pki::ca::{self, CaIdentity};
use smimegate::smime::decrypt::{self, DecryptError, RecipientId};

use common::{run_ok, token};

const ENTITY: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Vertraulich: Gr\xc3\xbc\xc3\x9fe an die Buchhaltung.\r\n";

struct Fixture {
    dir: tempfile::TempDir,
    cert_path: String,
    other_cert_path: String,
    held: Vec<(RecipientId, KeyId)>,
    ec_cert_path: String,
}

fn fixture() -> Fixture {
    let hsm = &token().hsm;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_key = hsm
        .generate_key_pair(
            KeyAlgorithm::P256,
            KeyRole::CertificateAuthority,
            "decrypt CA",
        )
        .expect("CA key");
    let ca_cert = ca::create_ca_certificate(hsm, &ca_key, "CN=Decrypt Test CA", 30).expect("CA");
    std::fs::write(
        dir.path().join("ca.pem"),
        ca_cert.to_pem(der::pem::LineEnding::LF).expect("pem"),
    )
    .expect("write CA");
    let ca = CaIdentity {
        key_id: ca_key.id,
        algorithm: ca_key.algorithm,
        certificate: ca_cert,
    };
    let mut paths = Vec::new();
    let mut held = Vec::new();
    for (i, name) in ["recipient", "stranger"].into_iter().enumerate() {
        let key = hsm
            .generate_key_pair(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, name)
            .expect("key");
        let address = Address::parse(&format!("{name}@corp.example")).expect("address");
        let cert = ca::issue_mailbox_certificate(
            hsm,
            &ca,
            &address,
            &key,
            365,
            "http://crl.example/ca.crl",
        )
        .expect("certificate");
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, cert.to_pem(der::pem::LineEnding::LF).expect("pem")).expect("write");
        paths.push(path.display().to_string());
        if i == 0 {
            held = RecipientId::for_certificate(&cert)
                .into_iter()
                .map(|id| (id, key.id.clone()))
                .collect();
        }
    }
    // An EC mailbox: openssl reaches it by ECDH key agreement.
    let ec_key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, "ec recipient")
        .expect("EC key");
    let ec_address = Address::parse("ec-recipient@corp.example").expect("address");
    let ec_cert = ca::issue_mailbox_certificate(
        hsm,
        &ca,
        &ec_address,
        &ec_key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("certificate");
    let ec_cert_path = dir.path().join("ec.pem");
    std::fs::write(
        &ec_cert_path,
        ec_cert.to_pem(der::pem::LineEnding::LF).expect("pem"),
    )
    .expect("write");
    held.extend(
        RecipientId::for_certificate(&ec_cert)
            .into_iter()
            .map(|id| (id, ec_key.id.clone())),
    );
    std::fs::write(dir.path().join("entity"), ENTITY).expect("write");
    Fixture {
        ec_cert_path: ec_cert_path.display().to_string(),
        cert_path: paths[0].clone(),
        other_cert_path: paths[1].clone(),
        dir,
        held,
    }
}

impl Fixture {
    /// `openssl cms -encrypt` of the entity with extra options; returns its output.
    fn encrypt(&self, options: &[&str], recipient: &str) -> Vec<u8> {
        let out = self.dir.path().join("out");
        let entity = self.dir.path().join("entity").display().to_string();
        let out_s = out.display().to_string();
        let mut args = vec![
            "cms",
            "-encrypt",
            "-binary",
            "-in",
            entity.as_str(),
            "-out",
            out_s.as_str(),
        ];
        // -keyopt applies to the -recip before it.
        args.extend(["-recip", recipient]);
        args.extend_from_slice(options);
        run_ok("openssl", &args);
        std::fs::read(&out).expect("read")
    }

    fn decrypt_message(&self, message: &[u8]) -> Result<decrypt::Decrypted, DecryptError> {
        let der = decrypt::cms_from_message(message, &Limits::default())?;
        decrypt::decrypt(&token().hsm, &der, &self.held)
    }
}

/// Wraps DER as a binary application/x-pkcs7-mime message, as some clients send it.
fn binary_message(der: &[u8]) -> Vec<u8> {
    let mut m = b"From: bob@partner.example\r\nContent-Type: application/x-pkcs7-mime; smime-type=enveloped-data; \
name=smime.p7m\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    m.extend_from_slice(der);
    m
}

#[test]
fn every_cbc_cipher_and_key_transport_openssl_offers_is_decrypted() {
    let fx = fixture();
    for cipher in ["-aes128", "-aes192", "-aes256", "-des3"] {
        for padding in [None, Some("rsa_padding_mode:oaep")] {
            let mut options = vec![cipher];
            if let Some(p) = padding {
                options.extend(["-keyopt", p]);
            }
            let smime = fx.encrypt(&options, &fx.cert_path);
            assert!(
                smime.starts_with(b"MIME-Version")
                    || smime.windows(20).any(|w| w == b"application/pkcs7-mi")
            );
            let done = fx
                .decrypt_message(&smime)
                .unwrap_or_else(|e| panic!("{cipher} {padding:?}: {e}"));
            assert_eq!(done.entity, ENTITY, "{cipher} {padding:?}");
            assert_eq!(done.weak, cipher == "-des3", "{cipher}");
            assert_eq!(
                done.key_transport,
                if padding.is_some() {
                    "rsaes-oaep-sha1"
                } else {
                    "rsa-pkcs1v15"
                }
            );
        }
    }
}

#[test]
fn binary_der_streamed_ber_and_subject_key_identifiers_are_accepted() {
    let fx = fixture();
    let der = fx.encrypt(&["-aes256", "-outform", "DER"], &fx.cert_path);
    assert_eq!(
        fx.decrypt_message(&binary_message(&der))
            .expect("DER")
            .entity,
        ENTITY
    );

    // -stream writes indefinite lengths and a segmented OCTET STRING, like Thunderbird.
    let ber = fx.encrypt(&["-aes128", "-outform", "DER", "-stream"], &fx.cert_path);
    assert!(
        ber.windows(2).any(|w| w == [0x30, 0x80]),
        "expected indefinite-length BER"
    );
    assert_eq!(
        fx.decrypt_message(&binary_message(&ber))
            .expect("BER")
            .entity,
        ENTITY
    );

    let by_ski = fx.encrypt(&["-aes256", "-keyid"], &fx.cert_path);
    let der = decrypt::cms_from_message(&by_ski, &Limits::default()).expect("cms");
    assert!(matches!(
        decrypt::recipients(&der).expect("recipients")[..],
        [RecipientId::SubjectKeyId(_)]
    ));
    assert_eq!(fx.decrypt_message(&by_ski).expect("SKI").entity, ENTITY);
}

#[test]
fn aes_gcm_auth_enveloped_data_is_decrypted_and_its_tag_checked() {
    let fx = fixture();
    for cipher in ["-aes-128-gcm", "-aes-256-gcm"] {
        let der = fx.encrypt(&[cipher, "-outform", "DER"], &fx.cert_path);
        let done = fx.decrypt_message(&binary_message(&der)).expect("GCM");
        assert_eq!(done.entity, ENTITY, "{cipher}");
        assert!(done.content_algorithm.ends_with("gcm"));

        // Flip one bit of the ciphertext (it sits just before the 16-byte tag's
        // OCTET STRING at the end): the tag no longer matches.
        let mut tampered = der.clone();
        let at = tampered.len() - 16 - 2 - 5;
        tampered[at] ^= 0x01;
        let err = fx.decrypt_message(&binary_message(&tampered)).unwrap_err();
        assert!(matches!(err, DecryptError::Integrity(_)), "{cipher}: {err}");
    }
}

#[test]
fn corrupted_and_foreign_messages_get_their_specific_errors() {
    let fx = fixture();
    // Bad CBC padding: corrupt the last ciphertext block.
    let mut der = fx.encrypt(&["-aes256", "-outform", "DER"], &fx.cert_path);
    let n = der.len();
    der[n - 1] ^= 0xff;
    let err = fx.decrypt_message(&binary_message(&der)).unwrap_err();
    assert!(matches!(err, DecryptError::Integrity(_)), "{err}");

    // Encrypted only to a key we do not hold.
    let foreign = fx.encrypt(&["-aes256"], &fx.other_cert_path);
    let err = fx.decrypt_message(&foreign).unwrap_err();
    assert!(
        matches!(err, DecryptError::NoKey { recipients: 1 }),
        "{err}"
    );

    // Garbled base64.
    let smime = String::from_utf8(fx.encrypt(&["-aes256"], &fx.cert_path)).expect("ascii");
    let garbled = smime.replacen("MII", "M*!", 1);
    let err = fx.decrypt_message(garbled.as_bytes()).unwrap_err();
    assert!(matches!(err, DecryptError::Malformed(_)), "{err}");

    // Truncated DER.
    let der = fx.encrypt(&["-aes256", "-outform", "DER"], &fx.cert_path);
    let err = fx
        .decrypt_message(&binary_message(&der[..der.len() / 2]))
        .unwrap_err();
    assert!(matches!(err, DecryptError::Malformed(_)), "{err}");

    // A DER length of 2^32.
    let huge = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x09];
    let err = fx.decrypt_message(&binary_message(&huge)).unwrap_err();
    assert!(matches!(err, DecryptError::Malformed(_)), "{err}");

    // Not encrypted at all.
    let err = fx
        .decrypt_message(b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
        .unwrap_err();
    assert!(matches!(err, DecryptError::NotEncrypted(_)), "{err}");
}

#[test]
fn ecdh_to_an_ec_mailbox_is_decrypted_in_the_token() {
    let fx = fixture();
    for cipher in ["-aes128", "-aes256", "-aes-256-gcm"] {
        let der = fx.encrypt(&[cipher, "-outform", "DER"], &fx.ec_cert_path);
        let done = fx
            .decrypt_message(&binary_message(&der))
            .unwrap_or_else(|e| panic!("{cipher}: {e}"));
        assert_eq!(done.entity, ENTITY, "{cipher}");
        assert_eq!(done.key_transport, "ecdh-p256");
    }
}

#[test]
fn messages_gpgsm_encrypts_to_a_mailbox_are_decrypted_in_the_token() {
    let fx = fixture();
    let home = tempfile::tempdir().expect("GNUPGHOME");
    std::fs::write(
        home.path().join("gpgsm.conf"),
        "disable-crl-checks\ndisable-dirmngr\n",
    )
    .expect("conf");
    let gpgsm = |args: &[&str]| {
        let out = std::process::Command::new("gpgsm")
            .env("GNUPGHOME", home.path())
            .arg("--batch")
            .args(args)
            .output()
            .expect("gpgsm");
        assert!(
            out.status.success(),
            "gpgsm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let ca_path = fx.dir.path().join("ca.pem").display().to_string();
    gpgsm(&["--import", &ca_path]);
    gpgsm(&["--import", &fx.cert_path]);
    let listing =
        String::from_utf8_lossy(&gpgsm(&["--with-colons", "--list-keys"]).stdout).into_owned();
    let trust: String = listing
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .filter_map(|l| l.split(':').nth(9))
        .map(|f| format!("{f} S relax\n"))
        .collect();
    std::fs::write(home.path().join("trustlist.txt"), trust).expect("trustlist");
    let entity = fx.dir.path().join("entity").display().to_string();
    let out = fx.dir.path().join("gpgsm.p7m").display().to_string();
    gpgsm(&[
        "-r",
        "recipient@corp.example",
        "-o",
        &out,
        "--encrypt",
        &entity,
    ]);
    let _ = std::process::Command::new("gpgconf")
        .args([
            "--homedir",
            &home.path().display().to_string(),
            "--kill",
            "all",
        ])
        .output();
    let der = std::fs::read(&out).expect("read");
    let done = fx
        .decrypt_message(&binary_message(&der))
        .expect("decrypt gpgsm's message");
    assert_eq!(done.entity, ENTITY);
}
