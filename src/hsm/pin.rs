//! The token's user PIN, read from a file or an environment variable.
//!
//! The PIN never sits in a plain `String`: what is read goes into a fixed buffer that
//! is zeroised on drop, and the [`SecretString`] made from it is allocated once at its
//! final size (nothing reallocated and left behind). A PIN file that group or others
//! may read or write is refused: the PIN unlocks every key in the token.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::error::{HsmError, Result};

/// A PIN file longer than this is not a PIN file.
const MAX_PIN_FILE: usize = 1024;

/// The PIN in `path`: its content without the trailing line break. Refused when the
/// file's mode lets group or others in (`mode & 0o077 != 0`).
pub fn read_pin_file(path: &Path) -> Result<SecretString> {
    let unreadable = |e: std::io::Error| {
        HsmError::PinSource(format!(
            "the PIN file {} cannot be read ({e})",
            path.display()
        ))
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let mode = file.metadata().map_err(unreadable)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(HsmError::PinFileMode {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let mut buffer = Zeroizing::new(vec![0u8; MAX_PIN_FILE + 1]);
    let mut len = 0;
    while len < buffer.len() {
        match file.read(&mut buffer[len..]).map_err(unreadable)? {
            0 => break,
            n => len += n,
        }
    }
    if len > MAX_PIN_FILE {
        return Err(HsmError::PinSource(format!(
            "the PIN file {} is longer than {MAX_PIN_FILE} bytes",
            path.display()
        )));
    }
    pin_from_bytes(trim_line_end(&buffer[..len]), path)
}

/// The PIN in environment variable `name`, if it is set and not empty.
pub fn read_pin_env(name: &str) -> Option<SecretString> {
    if name.is_empty() {
        return None;
    }
    let value = Zeroizing::new(std::env::var(name).ok()?);
    (!value.is_empty()).then(|| SecretString::from(value.as_str()))
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn pin_from_bytes(bytes: &[u8], path: &Path) -> Result<SecretString> {
    if bytes.is_empty() {
        return Err(HsmError::PinSource(format!(
            "PIN file {} is empty",
            path.display()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        HsmError::PinSource(format!("the PIN file {} is not UTF-8", path.display()))
    })?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn pin_file(contents: &[u8], mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hsm-user.pin");
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn a_private_pin_file_is_read_without_its_line_break() {
        for mode in [0o600, 0o400] {
            let (_dir, path) = pin_file(b"s3cret\r\n", mode);
            let pin = read_pin_file(&path).expect("PIN");
            assert_eq!(pin.expose_secret(), "s3cret");
        }
    }

    #[test]
    fn a_pin_file_group_or_others_may_use_is_refused_with_the_fix() {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let (_dir, path) = pin_file(b"s3cret\n", mode);
            let err = read_pin_file(&path).expect_err("must be refused");
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
            assert!(message.contains(&format!("{mode:04o}")), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn empty_oversized_and_binary_pin_files_are_refused() {
        let (_dir, empty) = pin_file(b"\n", 0o600);
        assert!(
            read_pin_file(&empty)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let (_dir, long) = pin_file(&[b'a'; MAX_PIN_FILE + 1], 0o600);
        assert!(
            read_pin_file(&long)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
        let (_dir, binary) = pin_file(&[0xff, 0xfe], 0o600);
        assert!(
            read_pin_file(&binary)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn a_missing_pin_file_names_the_file() {
        let err = read_pin_file(Path::new("/nonexistent/hsm-user.pin")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/hsm-user.pin"),
            "{err}"
        );
    }
}
