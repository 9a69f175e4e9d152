//! Secrets an operator types or hands over in a file: passwords (a new submitter's,
//! a PKCS#12 file's). Prompted without echo on a terminal, else one line of stdin, or
//! a file only its owner may read. Buffers are zeroised; the text lives on only in a
//! [`SecretString`].

use std::io::{IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::ops::OpError;
use crate::ops::password::MAX_PASSWORD_BYTES;

/// A password: from `file`, else prompted with `prompt` without echo on a terminal
/// (twice when `confirm`: a new password), else one line of stdin.
pub fn read_password(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<SecretString> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(prompt)
                .context("cannot read the password from the terminal")?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Repeat the password: ")
                    .context("cannot read the password from the terminal")?,
            );
            if *first != *again {
                return Err(OpError::Invalid("the passwords differ".into()).into());
            }
        }
        if first.is_empty() {
            return Err(OpError::Invalid("no password given".into()).into());
        }
        return Ok(SecretString::from(first.as_str()));
    }
    let mut stdin = std::io::stdin().lock();
    let text = read_line(&mut stdin).context("cannot read the password from stdin")?;
    secret_from(&text, "stdin")
}

/// The password in `path`, refused when group or others may read or change the file.
pub fn read_password_file(path: &Path) -> Result<SecretString> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot read the password file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(OpError::Invalid(format!(
            "the password file {} may be read or changed by group or others (mode {:04o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ))
        .into());
    }
    let text = read_line(&mut file)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    secret_from(&text, &path.display().to_string())
}

/// The first line of `input` without its line end, read into a buffer that is
/// zeroised on drop; more than one password's worth of bytes is refused.
fn read_line(input: &mut impl Read) -> Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; MAX_PASSWORD_BYTES + 2]);
    let mut len = 0;
    while len < buffer.len() {
        let n = input.read(&mut buffer[len..])?;
        if n == 0 || buffer[len..len + n].contains(&b'\n') {
            len += n;
            break;
        }
        len += n;
    }
    let line_end = buffer[..len]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(len);
    if line_end > MAX_PASSWORD_BYTES + 1 || (line_end == len && len == buffer.len()) {
        return Err(OpError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        ))
        .into());
    }
    let mut end = line_end;
    if end > 0 && buffer[end - 1] == b'\r' {
        end -= 1;
    }
    Ok(Zeroizing::new(buffer[..end].to_vec()))
}

fn secret_from(bytes: &[u8], source: &str) -> Result<SecretString> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| OpError::Invalid(format!("the password from {source} is not UTF-8")))?;
    if text.is_empty() {
        return Err(OpError::Invalid(format!("no password in {source}")).into());
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn line(input: &[u8]) -> Result<String> {
        let bytes = read_line(&mut &input[..])?;
        Ok(String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[test]
    fn the_first_line_is_the_password() {
        assert_eq!(
            line(b"secret pass\r\nignored").expect("line"),
            "secret pass"
        );
        assert_eq!(line(b"no line end").expect("line"), "no line end");
        assert_eq!(line(b"").expect("line"), "");
        let longest = vec![b'a'; MAX_PASSWORD_BYTES];
        assert_eq!(line(&longest).expect("longest").len(), MAX_PASSWORD_BYTES);
        let too_long = vec![b'a'; MAX_PASSWORD_BYTES + 2];
        assert!(line(&too_long).is_err());
    }

    #[test]
    fn a_private_file_is_read_and_an_open_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "long enough password\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_password_file(&path).expect("read").expose_secret(),
            "long enough password"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_password_file(&path).expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("long enough"), "{err}");
    }
}
