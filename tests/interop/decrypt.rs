//! Decryption of what openssl encrypts to a mailbox certificate whose key is in the
//! token: every content cipher and key transport openssl offers (OAEP with every hash,
//! MGF1 hash and label), S/MIME and binary DER, streamed BER, AuthEnvelopedData with
//! every ICV length; and every way it must fail, in the class the relay answers by:
//! structure before our key is used, one integrity error after (RFC 3218), the
//! gateway's own failure when the token fails under us.

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

// ---------------------------------------------------------------------------------
// Envelopes edited after openssl made them: the failures RFC 3218 must hide, GCM tag
// lengths openssl does not write, peer points no client should send.

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{
    EnvelopedData, KeyAgreeRecipientInfo, KeyTransRecipientInfo, OriginatorIdentifierOrKey,
    RecipientInfo, RecipientInfos,
};
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use smimegate::smime::decrypt::FailureClass;

/// Re-encodes a ContentInfo after `edit` changed its content of type `T`.
fn edit_content<T>(der: &[u8], edit: impl FnOnce(&mut T)) -> Vec<u8>
where
    T: for<'a> der::Sequence<'a>
        + for<'a> der::DecodeValue<'a, Error = der::Error>
        + der::EncodeValue,
{
    let mut ci = ContentInfo::from_der(der).expect("ContentInfo");
    let mut content: T = ci.content.decode_as().expect("content");
    edit(&mut content);
    ci.content = der::Any::encode_from(&content).expect("encode content");
    ci.to_der().expect("encode ContentInfo")
}

fn edit_recipients(infos: &mut RecipientInfos, edit: impl FnOnce(&mut RecipientInfo)) {
    let mut all = infos.0.clone().into_vec();
    edit(&mut all[0]);
    *infos = RecipientInfos::try_from(all).expect("RecipientInfos");
}

fn edit_ktri(der: &[u8], edit: impl FnOnce(&mut KeyTransRecipientInfo)) -> Vec<u8> {
    edit_content::<EnvelopedData>(der, |env| {
        edit_recipients(&mut env.recip_infos, |ri| match ri {
            RecipientInfo::Ktri(k) => edit(k),
            _ => panic!("expected a KeyTransRecipientInfo"),
        })
    })
}

fn edit_kari(der: &[u8], edit: impl FnOnce(&mut KeyAgreeRecipientInfo)) -> Vec<u8> {
    edit_content::<EnvelopedData>(der, |env| {
        edit_recipients(&mut env.recip_infos, |ri| match ri {
            RecipientInfo::Kari(k) => edit(k),
            _ => panic!("expected a KeyAgreeRecipientInfo"),
        })
    })
}

fn flip_first_byte(s: &OctetString) -> OctetString {
    let mut bytes = s.as_bytes().to_vec();
    bytes[0] ^= 0x55;
    OctetString::new(bytes).expect("octets")
}

impl Fixture {
    /// The recipient's RSA public key, for envelopes made here instead of by openssl.
    fn rsa_public(&self) -> rsa::PublicKey {
        use rsa::pkcs8::DecodePublicKey;
        let pem = std::fs::read(&self.cert_path).expect("read");
        let cert = x509_cert::Certificate::load_pem_chain(&pem).expect("pem")[0].clone();
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .expect("spki");
        rsa::PublicKey::from_public_key_der(&spki).expect("RSA key")
    }

    fn decrypt_der(&self, der: &[u8]) -> Result<decrypt::Decrypted, DecryptError> {
        self.decrypt_message(&binary_message(der))
    }
}

#[test]
fn every_failure_after_our_key_was_used_is_one_and_the_same_error() {
    let fx = fixture();
    let oaep = ["-keyopt", "rsa_padding_mode:oaep"];
    let oaep256 = [
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
    ];
    let pkcs1 = fx.encrypt(&["-aes256", "-outform", "DER"], &fx.cert_path);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // RFC 3218 §2.3: a PKCS#1 v1.5 block that does not decrypt to a well-padded key.
    cases.push((
        "PKCS#1 v1.5 padding",
        edit_ktri(&pkcs1, |k| k.enc_key = flip_first_byte(&k.enc_key)),
    ));
    // A well-padded key of the wrong length (16 bytes for AES-256).
    let short = fx
        .rsa_public()
        .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, &[0x11; 16])
        .expect("encrypt");
    cases.push((
        "content key of the wrong length",
        edit_ktri(&pkcs1, |k| {
            k.enc_key = OctetString::new(short).expect("octets")
        }),
    ));
    // OAEP in the token (SHA-1) and on the host (SHA-256, which SoftHSM refuses).
    for (name, keyopts) in [("OAEP SHA-1", &oaep[..]), ("OAEP SHA-256", &oaep256[..])] {
        let mut options = vec!["-aes128", "-outform", "DER"];
        options.extend_from_slice(keyopts);
        let der = fx.encrypt(&options, &fx.cert_path);
        cases.push((
            name,
            edit_ktri(&der, |k| k.enc_key = flip_first_byte(&k.enc_key)),
        ));
    }
    // ECDH: the AES key unwrap fails.
    let ecdh = fx.encrypt(&["-aes128", "-outform", "DER"], &fx.ec_cert_path);
    cases.push((
        "AES key unwrap",
        edit_kari(&ecdh, |k| {
            let mut keys = k.recipient_enc_keys.clone();
            keys[0].enc_key = flip_first_byte(&keys[0].enc_key);
            k.recipient_enc_keys = keys;
        }),
    ));
    // The content itself: CBC padding and the GCM tag.
    let mut bad_padding = pkcs1.clone();
    let n = bad_padding.len();
    bad_padding[n - 1] ^= 0xff;
    cases.push(("CBC padding", bad_padding));
    let gcm = fx.encrypt(&["-aes-128-gcm", "-outform", "DER"], &fx.cert_path);
    cases.push((
        "GCM tag",
        edit_content::<AuthEnvelopedData>(&gcm, |env| env.mac = flip_first_byte(&env.mac)),
    ));

    let mut texts = Vec::new();
    for (cause, der) in &cases {
        let err = fx.decrypt_der(der).expect_err(cause);
        assert_eq!(err.class(), FailureClass::Integrity, "{cause}: {err}");
        assert!(matches!(err, DecryptError::Integrity(_)), "{cause}: {err}");
        texts.push((cause, err.to_string()));
    }
    for (cause, text) in &texts {
        assert_eq!(
            text, &texts[0].1,
            "{cause} reads differently from {}",
            texts[0].0
        );
    }
}

#[test]
fn a_random_stand_in_key_never_passes_for_a_decryption() {
    // With a random key, CBC padding comes out valid one time in ~256 (RFC 3218 §2.3
    // warns of it): that garbage must not count as decrypted. 1500 tries give the old
    // behaviour (judge only the padding) a 99.7 % chance to show.
    let fx = fixture();
    std::fs::write(fx.dir.path().join("short"), b"x").expect("write");
    let short = fx.dir.path().join("short").display().to_string();
    let out = fx.dir.path().join("short.der").display().to_string();
    run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-aes128",
            "-outform",
            "DER",
            "-in",
            &short,
            "-out",
            &out,
            "-recip",
            &fx.cert_path,
        ],
    );
    let der = std::fs::read(&out).expect("read");
    let broken = edit_ktri(&der, |k| k.enc_key = flip_first_byte(&k.enc_key));
    let cms = decrypt::cms_from_message(&binary_message(&broken), &Limits::default()).expect("cms");
    for i in 0..1500 {
        match decrypt::decrypt(&token().hsm, &cms, &fx.held) {
            Err(DecryptError::Integrity(_)) => {}
            other => panic!("try {i}: expected the integrity error, got {other:?}"),
        }
    }
}

#[test]
fn oaep_with_every_hash_openssl_offers_is_decrypted_in_the_token() {
    let fx = fixture();
    // (OAEP hash, MGF1 hash, label, the name we report)
    let cases = [
        ("sha1", None, None, "rsaes-oaep-sha1"),
        // openssl's MGF1 hash is the OAEP hash unless told otherwise.
        ("sha224", None, None, "rsaes-oaep-sha224"),
        ("sha256", Some("sha256"), None, "rsaes-oaep-sha256"),
        ("sha384", Some("sha384"), None, "rsaes-oaep-sha384"),
        ("sha512", Some("sha512"), None, "rsaes-oaep-sha512"),
        ("sha256", Some("sha1"), None, "rsaes-oaep-sha256-mgf1-sha1"),
        ("sha1", Some("sha256"), None, "rsaes-oaep-sha1-mgf1-sha256"),
        (
            "sha512",
            Some("sha384"),
            None,
            "rsaes-oaep-sha512-mgf1-sha384",
        ),
        (
            "sha256",
            Some("sha256"),
            Some("0a0b0c"),
            "rsaes-oaep-sha256",
        ),
        ("sha1", Some("sha1"), Some("6c6162656c"), "rsaes-oaep-sha1"),
    ];
    for (hash, mgf1, label, name) in cases {
        let md = format!("rsa_oaep_md:{hash}");
        let mut options = vec![
            "-aes256",
            "-outform",
            "DER",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            md.as_str(),
        ];
        let mgf = mgf1.map(|m| format!("rsa_mgf1_md:{m}"));
        if let Some(m) = &mgf {
            options.extend(["-keyopt", m.as_str()]);
        }
        let lbl = label.map(|l| format!("rsa_oaep_label:{l}"));
        if let Some(l) = &lbl {
            options.extend(["-keyopt", l.as_str()]);
        }
        let der = fx.encrypt(&options, &fx.cert_path);
        let what = format!("{hash} mgf1 {mgf1:?} label {label:?}");
        let done = fx
            .decrypt_der(&der)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(done.entity, ENTITY, "{what}");
        assert_eq!(done.key_transport, name, "{what}");
        // The same message with another label does not decrypt, and says only that.
        if label.is_some() {
            let relabelled = edit_ktri(&der, |k| {
                let mut params: rsa::pkcs1::RsaOaepParams<der::Any> = k
                    .key_enc_alg
                    .parameters
                    .as_ref()
                    .expect("params")
                    .decode_as()
                    .expect("OAEP params");
                params.p_source.parameters = Some(
                    der::Any::encode_from(&OctetString::new(b"other".to_vec()).expect("o"))
                        .expect("any"),
                );
                k.key_enc_alg.parameters = Some(der::Any::encode_from(&params).expect("any"));
            });
            let err = fx.decrypt_der(&relabelled).expect_err("wrong label");
            assert_eq!(err.class(), FailureClass::Integrity, "{what}: {err}");
        }
    }
}

/// GCMParameters (RFC 5084 §3.2) as a test writes them.
#[derive(der::Sequence)]
struct GcmParams {
    nonce: OctetString,
    #[asn1(optional = "true")]
    icv_len: Option<u8>,
}

/// An AuthEnvelopedData (AES-128-GCM) to the fixture's RSA recipient with a tag of
/// `T` bytes, GCMParameters saying `icv_len`, made on the host from openssl's envelope
/// with our own content key.
fn gcm_with_tag<T: aes_gcm::TagSize>(fx: &Fixture, icv_len: Option<u8>, tag_len: usize) -> Vec<u8> {
    use aes_gcm::aead::{AeadInOut, KeyInit};
    let template = fx.encrypt(&["-aes-128-gcm", "-outform", "DER"], &fx.cert_path);
    let cek = [0x42u8; 16];
    let nonce = [7u8; 12];
    let encrypted_key = fx
        .rsa_public()
        .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, &cek)
        .expect("encrypt key");
    let mut content = ENTITY.to_vec();
    let cipher =
        aes_gcm::AesGcm::<aes::Aes128, aes_gcm::aead::consts::U12, T>::new_from_slice(&cek)
            .expect("key");
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), &[], content.as_mut_slice().into())
        .expect("seal");
    let mut tag = tag.to_vec();
    tag.resize(tag_len, 0);
    let der = edit_content::<AuthEnvelopedData>(&template, |env| {
        env.mac = OctetString::new(tag).expect("tag");
        let eci = &mut env.auth_encrypted_content_info;
        eci.content_enc_alg.parameters = Some(
            der::Any::encode_from(&GcmParams {
                nonce: OctetString::new(nonce.to_vec()).expect("nonce"),
                icv_len,
            })
            .expect("params"),
        );
        eci.encrypted_content = Some(OctetString::new(content).expect("content"));
    });
    edit_content::<AuthEnvelopedData>(&der, |env| {
        edit_recipients(&mut env.recip_infos, |ri| match ri {
            RecipientInfo::Ktri(k) => {
                k.enc_key = OctetString::new(encrypted_key).expect("key");
            }
            _ => panic!("expected a KeyTransRecipientInfo"),
        })
    })
}

#[test]
fn gcm_icv_lengths_from_12_to_16_are_decrypted_and_must_match_the_tag() {
    use aes_gcm::aead::consts::{U12, U13, U16};
    let fx = fixture();
    // RFC 5084 §3.2: aes-ICVlen DEFAULT 12, so an absent length means a 12-byte tag.
    let done = fx
        .decrypt_der(&gcm_with_tag::<U12>(&fx, None, 12))
        .expect("12-byte tag, default ICV length");
    assert_eq!(done.entity, ENTITY);
    assert_eq!(
        fx.decrypt_der(&gcm_with_tag::<U12>(&fx, Some(12), 12))
            .expect("12-byte tag, explicit")
            .entity,
        ENTITY
    );
    assert_eq!(
        fx.decrypt_der(&gcm_with_tag::<U13>(&fx, Some(13), 13))
            .expect("13-byte tag")
            .entity,
        ENTITY
    );
    assert_eq!(
        fx.decrypt_der(&gcm_with_tag::<U16>(&fx, Some(16), 16))
            .expect("16-byte tag")
            .entity,
        ENTITY
    );
    // A tag whose length differs from the ICV length, or an ICV length RFC 5084 does
    // not allow, is refused as structure before any key is used.
    for (der, what) in [
        (
            gcm_with_tag::<U16>(&fx, None, 16),
            "16-byte tag, ICV length absent (12)",
        ),
        (
            gcm_with_tag::<U12>(&fx, Some(16), 12),
            "12-byte tag, ICV length 16",
        ),
        (gcm_with_tag::<U12>(&fx, Some(8), 8), "ICV length 8"),
    ] {
        let err = fx.decrypt_der(&der).expect_err(what);
        assert_eq!(err.class(), FailureClass::Structure, "{what}: {err}");
    }
}

fn with_originator_point(der: &[u8], point: &[u8]) -> Vec<u8> {
    edit_kari(der, |k| match &mut k.originator {
        OriginatorIdentifierOrKey::OriginatorKey(key) => {
            key.public_key = BitString::from_bytes(point).expect("bits");
        }
        _ => panic!("expected an originator key"),
    })
}

fn originator_point(der: &[u8]) -> Vec<u8> {
    let ci = ContentInfo::from_der(der).expect("ContentInfo");
    let env: EnvelopedData = ci.content.decode_as().expect("EnvelopedData");
    match env.recip_infos.0.get(0) {
        Some(RecipientInfo::Kari(k)) => match &k.originator {
            OriginatorIdentifierOrKey::OriginatorKey(key) => {
                key.public_key.as_bytes().expect("bytes").to_vec()
            }
            _ => panic!("expected an originator key"),
        },
        _ => panic!("expected a KeyAgreeRecipientInfo"),
    }
}

#[test]
fn ecdh_peer_points_are_checked_on_the_host_before_the_token_sees_them() {
    let fx = fixture();
    let der = fx.encrypt(&["-aes128", "-outform", "DER"], &fx.ec_cert_path);
    let point = originator_point(&der);
    assert_eq!(
        (point.len(), point[0]),
        (65, 0x04),
        "openssl sends uncompressed"
    );

    // The same point compressed (SEC1 §2.3.3): decompressed on the host, so it is on
    // the curve by construction, and the token gets the uncompressed form.
    let mut compressed = vec![0x02 | (point[64] & 1)];
    compressed.extend_from_slice(&point[1..33]);
    let done = fx
        .decrypt_der(&with_originator_point(&der, &compressed))
        .expect("compressed point");
    assert_eq!(done.entity, ENTITY);

    let mut off_curve = point.clone();
    off_curve[64] ^= 0x01;
    let mut hybrid = point.clone();
    hybrid[0] = 0x06 | (point[64] & 1);
    let mut wrong_x = compressed.clone();
    wrong_x[1..33].copy_from_slice(&[0xff; 32]); // x ≥ p
    let bad: [(&str, Vec<u8>); 7] = [
        ("off the curve", off_curve),
        ("the point at infinity", vec![0x00]),
        ("too short", point[..64].to_vec()),
        ("too long", [&point[..], &[0u8]].concat()),
        ("hybrid form", hybrid),
        ("compressed, x not a field element", wrong_x),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in bad {
        let err = fx
            .decrypt_der(&with_originator_point(&der, &bytes))
            .expect_err(what);
        assert_eq!(err.class(), FailureClass::Structure, "{what}: {err}");
        assert!(matches!(err, DecryptError::Malformed(_)), "{what}: {err}");
    }
}

/// A second token in this process's SoftHSM, which the test may break at will.
struct SpareToken {
    label: &'static str,
    pin: String,
}

impl SpareToken {
    fn create(label: &'static str) -> SpareToken {
        use secrecy::SecretString;
        let _ = token(); // SoftHSM is configured by the first token.
        let pin = format!("{label}-pin");
        smimegate::hsm::provision::init_token(
            &common::module(),
            label,
            &SecretString::from(format!("{label}-so")),
            &SecretString::from(pin.clone()),
        )
        .expect("second token");
        SpareToken { label, pin }
    }

    fn open(&self, pin: &str) -> smimegate::hsm::Hsm {
        smimegate::hsm::Hsm::open(smimegate::hsm::HsmConfig {
            module: common::module(),
            token_label: self.label.into(),
            pin: secrecy::SecretString::from(pin.to_string()),
            max_sessions: 2,
            operation_timeout: std::time::Duration::from_secs(30),
            acquire_timeout: std::time::Duration::from_secs(30),
        })
        .expect("open second token")
    }

    /// A raw session of this process on the token, logged in as the user.
    fn raw_session(&self, pin: &str) -> cryptoki::session::Session {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        let ctx = Pkcs11::new(common::module()).expect("module");
        let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = ctx
            .get_slots_with_initialized_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == self.label)
            })
            .expect("slot");
        let session = ctx.open_rw_session(slot).expect("session");
        match session.login(
            cryptoki::session::UserType::User,
            Some(&secrecy::SecretString::from(pin.to_string())),
        ) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e}"),
        }
        session
    }
}

#[test]
fn a_token_that_fails_under_us_is_the_gateways_failure_not_the_messages() {
    use smimegate::hsm::HsmError;
    let fx = fixture();
    let spare = SpareToken::create("gateway-failure");
    let hsm = spare.open(&spare.pin);
    let key = hsm
        .generate_key_pair(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "victim")
        .expect("key");
    let ca = common::token_ca("CN=Spare Token CA");
    let address = Address::parse("victim@corp.example").expect("address");
    let cert = ca::issue_mailbox_certificate(
        &token().hsm,
        &ca,
        &address,
        &key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("certificate");
    let cert_path = fx.dir.path().join("victim.pem");
    std::fs::write(
        &cert_path,
        cert.to_pem(der::pem::LineEnding::LF).expect("pem"),
    )
    .expect("write");
    let der = fx.encrypt(
        &["-aes128", "-outform", "DER"],
        &cert_path.display().to_string(),
    );
    let held = common::held_for(&cert, &key.id);
    assert_eq!(
        decrypt::decrypt(&hsm, &der, &held)
            .expect("while the token is fine")
            .entity,
        ENTITY
    );

    // Someone changes the user PIN and logs this application out: our login is gone
    // and cannot come back. That is the gateway's failure, never "undecryptable".
    // (SoftHSM drops the handles of private objects at logout, so the token layer
    // meets "key not found" or "wrong PIN" depending on how it notices.)
    let new_pin = "changed-under-us";
    let session = spare.raw_session(&spare.pin);
    session
        .set_pin(
            &secrecy::SecretString::from(spare.pin.clone()),
            &secrecy::SecretString::from(new_pin.to_string()),
        )
        .expect("change PIN");
    session.logout().expect("logout");
    let err = decrypt::decrypt(&hsm, &der, &held).expect_err("PIN changed");
    assert_eq!(err.class(), FailureClass::Gateway, "{err}");
    assert!(
        matches!(
            err,
            DecryptError::Token(HsmError::WrongPin { .. } | HsmError::KeyNotFound { .. })
        ),
        "{err}"
    );
    // A gateway that starts now with the old PIN cannot even log in.
    assert!(matches!(
        smimegate::hsm::Hsm::open(smimegate::hsm::HsmConfig {
            module: common::module(),
            token_label: spare.label.into(),
            pin: secrecy::SecretString::from(spare.pin.clone()),
            max_sessions: 1,
            operation_timeout: std::time::Duration::from_secs(30),
            acquire_timeout: std::time::Duration::from_secs(30),
        }),
        Err(HsmError::WrongPin { .. })
    ));

    // A key the key directory lists that is not in the token (state mismatch).
    let hsm = spare.open(new_pin);
    assert!(decrypt::decrypt(&hsm, &der, &held).is_ok());
    let session = spare.raw_session(new_pin);
    let handles = session
        .find_objects(&[
            cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
            cryptoki::object::Attribute::Id(key.id.as_bytes().to_vec()),
        ])
        .expect("find");
    for handle in handles {
        session.destroy_object(handle).expect("destroy");
    }
    let err = decrypt::decrypt(&hsm, &der, &held).expect_err("key gone");
    assert_eq!(err.class(), FailureClass::Gateway, "{err}");
    assert!(
        matches!(err, DecryptError::Token(HsmError::KeyNotFound { .. })),
        "{err}"
    );
}
