//! `smimegate smime bench`: the engine in-process on a throwaway mailbox key — sign,
//! sign+encrypt, decrypt, verify of one message size — beside the raw token sign and
//! unwrap rates measured in the same run. Peak memory is measured by `scripts/bench-smime`
//! on the `smime` commands themselves, one process per operation.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clap::Args;

use crate::app::App;
use crate::hsm::{KeyAlgorithm, KeyRole, KeyTransport};
use crate::pki::address::Address;
use crate::pki::ca;
use crate::smime::encrypt::{
    ContentCipher, KeyTransportChoice, Recipient, encrypt_message, encrypt_message_owned,
};
use crate::smime::{SignerIdentity, decrypt, sign_detached, verify};

#[derive(Args, Debug)]
pub struct SmimeBenchArgs {
    /// Body size of the test message, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
}

pub async fn run(app: App, args: SmimeBenchArgs) -> Result<()> {
    let hsm = app.hsm.clone();
    let ca = app.ca().await?;
    let key = hsm
        .call_keygen(|h| {
            h.generate_key_pair(
                KeyAlgorithm::Rsa2048,
                KeyRole::Mailbox,
                "smimegate-bench (throwaway)",
            )
        })
        .await?;
    let key_id = key.id.clone();
    let outcome = tokio::task::spawn_blocking(move || measure(&hsm, &ca, &key, &args)).await?;
    app.hsm
        .call("destroy bench key", move |h| h.destroy_bench_key(&key_id))
        .await?;
    for line in outcome? {
        outln!("{line}");
    }
    Ok(())
}

fn measure(
    hsm: &crate::hsm::Hsm,
    ca: &ca::CaIdentity,
    key: &crate::hsm::GeneratedKey,
    args: &SmimeBenchArgs,
) -> Result<Vec<String>> {
    let address = Address::parse("bench@bench.invalid")?;
    let cert = ca::issue_mailbox_certificate(hsm, ca, &address, key, 1, "http://localhost/crl")?;
    let signer = SignerIdentity {
        key_id: key.id.clone(),
        key_algorithm: KeyAlgorithm::Rsa2048,
        scheme: ca::default_scheme(KeyAlgorithm::Rsa2048),
        certificate: cert.clone(),
        chain: vec![ca.certificate.clone()],
    };
    let limits = crate::mime::Limits {
        max_size: args.size * 2 + (1 << 20),
        ..crate::mime::Limits::default()
    };
    let message = test_message(args.size);
    let duration = Duration::from_secs(args.seconds.max(1));
    let recipients = [Recipient {
        certificate: cert.clone(),
        transport: KeyTransportChoice::RsaPkcs1v15,
    }];
    let mut keys = crate::smime::layers::KeyDirectory::default();
    keys.add(&cert, key.id.clone());
    let trust = verify::TrustAnchors::unscoped(std::slice::from_ref(&ca.certificate));
    let from = verify::FromField::given("bench@bench.invalid");
    let signed = sign_detached(hsm, &signer, &message, &limits)?;
    let encrypted = encrypt_message(&signed, &recipients, ContentCipher::Aes256Cbc, &limits)?;
    let encrypted_cek = {
        use der::Encode;
        use rsa::pkcs8::DecodePublicKey;
        let spki = cert.tbs_certificate().subject_public_key_info().to_der()?;
        let public = rsa::PublicKey::from_public_key_der(&spki)?;
        public.encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, &[7u8; 32])?
    };

    let mut lines = Vec::new();
    let mut report = |op: &str, count: u64, elapsed: Duration, bytes: usize| {
        let rate = count as f64 / elapsed.as_secs_f64();
        lines.push(
            serde_json::json!({
                "size": args.size, "op": op, "per_sec": rate,
                "mb_per_sec": rate * bytes as f64 / 1_000_000.0,
            })
            .to_string(),
        );
    };
    let time = |work: &mut dyn FnMut() -> Result<()>| -> Result<(u64, Duration)> {
        let start = Instant::now();
        let mut count = 0;
        while start.elapsed() < duration {
            work()?;
            count += 1;
        }
        Ok((count, start.elapsed()))
    };

    let (n, t) = (
        hsm.bare_sign_loop(&key.id, signer.scheme, &message, duration)?,
        duration,
    );
    report("raw-token-sign", n, t, 0);
    let (n, t) = time(&mut || {
        hsm.decrypt_key_transport(&key.id, KeyTransport::RsaPkcs1v15, &encrypted_cek)?;
        Ok(())
    })?;
    report("raw-token-unwrap", n, t, 0);
    let (n, t) = time(&mut || {
        sign_detached(hsm, &signer, &message, &limits)?;
        Ok(())
    })?;
    report("sign", n, t, message.len());
    let (n, t) = time(&mut || {
        let signed = sign_detached(hsm, &signer, &message, &limits)?;
        encrypt_message_owned(signed, &recipients, ContentCipher::Aes256Cbc, &limits)?;
        Ok(())
    })?;
    report("sign+encrypt", n, t, message.len());
    let (n, t) = time(&mut || {
        let der = decrypt::cms_from_message(&encrypted, &limits)?;
        let held = keys.resolve(&decrypt::recipients(&der)?);
        decrypt::decrypt(hsm, &der, &held)?;
        Ok(())
    })?;
    report("decrypt", n, t, message.len());
    let (n, t) = time(&mut || {
        let v = verify::verify(
            &signed,
            &from,
            &verify::VerifyContext {
                trust: &trust,
                crls: &[],
                revocation: None,
                now: SystemTime::now(),
                limits: &limits,
            },
        );
        anyhow::ensure!(v.verdict == verify::Verdict::Valid, "verify: {}", v.detail);
        Ok(())
    })?;
    report("verify", n, t, message.len());
    Ok(lines)
}

/// A text message of about `size` body bytes in 76-character lines.
fn test_message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@bench.invalid\r\nTo: someone@partner.example\r\nSubject: bench\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrst\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}
