//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP) for local console
//! accounts: HMAC-SHA-1, 6 digits, 30-second steps, the step before and after the
//! current one accepted for clock drift. These are what every authenticator app
//! speaks; the secret is 160 random bits shown once as Base32 (and as an
//! `otpauth://` URI for a QR code).

use data_encoding::BASE32_NOPAD;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

const STEP_SECS: i64 = 30;
const DIGITS: u32 = 6;
const SECRET_BYTES: usize = 20;

/// A new random secret, Base32 without padding.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok(BASE32_NOPAD.encode(&secret))
}

/// The `otpauth://` URI an authenticator app imports (RFC 6238 parameters).
pub fn provisioning_uri(issuer: &str, account: &str, secret: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

/// The HOTP value of `key` at counter `step` (RFC 4226 §5.3), `DIGITS` digits.
fn hotp(key: &[u8], step: u64) -> Option<u32> {
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).ok()?;
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Some(bin % 10u32.pow(DIGITS))
}

/// The time step `code` is valid for at `now` (unix seconds), trying the current step
/// and one either side, or None. Every candidate is computed and compared in constant
/// time. The caller refuses a step not newer than the last one used (single use).
pub fn verify(secret_base32: &str, code: &str, now: i64) -> Option<i64> {
    let key = BASE32_NOPAD
        .decode(secret_base32.trim_end_matches('=').as_bytes())
        .ok()?;
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now.div_euclid(STEP_SECS);
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        let Ok(counter) = u64::try_from(step) else {
            continue;
        };
        let expected = format!("{:0width$}", hotp(&key, counter)?, width = DIGITS as usize);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 seed "12345678901234567890"; the 8-digit values
    /// there end in the 6-digit ones computed here.
    #[test]
    fn the_rfc_6238_test_vectors_are_met() {
        let key = b"12345678901234567890";
        for (time, eight_digits) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            let step = u64::try_from(time / STEP_SECS).expect("positive");
            assert_eq!(hotp(key, step), Some(eight_digits % 1_000_000), "t={time}");
        }
    }

    #[test]
    fn a_code_is_valid_one_step_either_side_and_never_further() {
        let secret = BASE32_NOPAD.encode(b"12345678901234567890");
        let at = 1_111_111_111i64;
        let code = format!("{:06}", 14050471 % 1_000_000);
        let step = at / STEP_SECS;
        assert_eq!(verify(&secret, &code, at), Some(step));
        assert_eq!(verify(&secret, &code, at + STEP_SECS), Some(step));
        assert_eq!(verify(&secret, &code, at - STEP_SECS), Some(step));
        assert_eq!(verify(&secret, &code, at + 2 * STEP_SECS), None);
        assert_eq!(verify(&secret, "000000x", at), None);
        assert_eq!(verify(&secret, "", at), None);
        assert_eq!(verify("not base32!", &code, at), None);
    }

    #[test]
    fn new_secrets_are_random_base32_and_uris_are_escaped() {
        let a = new_secret().expect("random");
        let b = new_secret().expect("random");
        assert_ne!(a, b);
        assert_eq!(BASE32_NOPAD.decode(a.as_bytes()).expect("base32").len(), 20);
        let uri = provisioning_uri("smimegate gw1", "break glass", &a);
        assert!(uri.starts_with("otpauth://totp/smimegate%20gw1:break%20glass?secret="));
    }
}
