//! SMTP AUTH (RFC 4954) with the SASL mechanisms PLAIN (RFC 4616, with or without an
//! initial response) and LOGIN (draft-murchison-sasl-login). Offered only after
//! STARTTLS on a listener configured for it; allowed once per session and never
//! inside a transaction; the handler checks the credentials. A password lives in a
//! [`SecretString`] or zeroised buffers and never reaches a log line or `Debug`.
//! Exposure: talks to the outside world (the client's credentials).

use base64::Engine;
use secrecy::SecretString;
use zeroize::{Zeroize, Zeroizing};

use super::Handler;
use super::io::Line;
use super::session::{Next, Session, State};
use crate::smtp::command::SaslResponse;
use crate::smtp::reply::Reply;

/// Where a SASL exchange is: what the client's next line answers.
pub(crate) enum SaslStep {
    /// PLAIN without an initial response: the whole response.
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password, for this user.
    LoginPassword { user: String },
}

impl std::fmt::Debug for SaslStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslStep::Plain => write!(f, "Plain"),
            SaslStep::LoginUser => write!(f, "LoginUser"),
            SaslStep::LoginPassword { .. } => write!(f, "LoginPassword"),
        }
    }
}

/// Why a client's SASL data is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaslError {
    Cancelled,
    Base64,
    Malformed,
}

impl SaslError {
    fn reply(self) -> Reply {
        match self {
            SaslError::Cancelled => Reply::new(501, "5.0.0", "Authentication cancelled"),
            SaslError::Base64 => Reply::new(501, "5.5.2", "Invalid base64 data"),
            SaslError::Malformed => Reply::new(501, "5.5.2", "Malformed authentication data"),
        }
    }
}

/// "Username:" and "Password:", base64 (the LOGIN mechanism's prompts).
const LOGIN_USER: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

impl<H: Handler> Session<'_, H> {
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    pub(crate) async fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<SaslResponse>,
    ) -> Next<H::Transaction> {
        if let Some(refusal) = self.auth_refusal() {
            return self.reply(refusal);
        }
        match (mechanism, initial) {
            ("PLAIN", None) => self.challenge("", SaslStep::Plain),
            ("PLAIN", Some(response)) => self.plain(response.expose()).await,
            ("LOGIN", None) => self.challenge(LOGIN_USER, SaslStep::LoginUser),
            ("LOGIN", Some(response)) => match user_name(response.expose()) {
                Ok(user) => self.challenge(LOGIN_PASSWORD, SaslStep::LoginPassword { user }),
                Err(e) => self.auth_failed(e.reply()),
            },
            _ => self.reply(Reply::new(504, "5.5.4", "Unrecognized authentication type")),
        }
    }

    /// Why AUTH cannot start now, if it cannot.
    fn auth_refusal(&self) -> Option<Reply> {
        if !self.config.auth {
            return Some(Reply::new(502, "5.5.1", "AUTH not available"));
        }
        if !self.info.tls {
            return Some(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        match self.state {
            State::Connected => Some(Reply::new(503, "5.5.1", "Say EHLO first")),
            State::Mail(_) => Some(Reply::new(
                503,
                "5.5.1",
                "AUTH not permitted during a mail transaction",
            )),
            State::Greeted if self.info.authenticated.is_some() => {
                Some(Reply::new(503, "5.5.1", "Already authenticated"))
            }
            State::Greeted => None,
        }
    }

    fn challenge(&mut self, text: &str, step: SaslStep) -> Next<H::Transaction> {
        self.queue(&Reply::new(334, "", text));
        Next::Auth(step)
    }

    /// The client's answer to a challenge.
    pub(crate) async fn auth_response(
        &mut self,
        step: SaslStep,
        line: Line,
    ) -> Next<H::Transaction> {
        let mut bytes = match line {
            Line::Text(bytes) => Zeroizing::new(bytes),
            Line::TooLong => {
                return self.auth_failed(Reply::new(
                    500,
                    "5.5.6",
                    "Authentication exchange line is too long",
                ));
            }
            Line::Eof => return Next::Close,
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return self.auth_failed(SaslError::Base64.reply());
        };
        let next = match step {
            SaslStep::Plain => self.plain(text).await,
            SaslStep::LoginUser => match user_name(text) {
                Ok(user) => self.challenge(LOGIN_PASSWORD, SaslStep::LoginPassword { user }),
                Err(e) => self.auth_failed(e.reply()),
            },
            SaslStep::LoginPassword { user } => match decode(text) {
                Ok(password) => match String::from_utf8(password.to_vec()) {
                    Ok(password) => self.verify(user, SecretString::from(password)).await,
                    Err(e) => {
                        e.into_bytes().zeroize();
                        self.auth_failed(SaslError::Malformed.reply())
                    }
                },
                Err(e) => self.auth_failed(e.reply()),
            },
        };
        bytes.zeroize();
        next
    }

    /// A PLAIN response: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
    async fn plain(&mut self, response: &str) -> Next<H::Transaction> {
        match decode(response).and_then(|decoded| split_plain(&decoded)) {
            Ok((user, password)) => self.verify(user, password).await,
            Err(e) => self.auth_failed(e.reply()),
        }
    }

    async fn verify(&mut self, user: String, password: SecretString) -> Next<H::Transaction> {
        match self
            .handler
            .authenticate(&self.info, &user, &password)
            .await
        {
            Ok(identity) => {
                tracing::info!(user = %identity, "authenticated");
                self.info.authenticated = Some(identity);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            // The gateway's own trouble (RFC 4954 §6, 454 4.7.0) is not the client's failure.
            Err(reply) if reply.is_transient() => {
                tracing::warn!(reply = %reply, "authentication could not be checked");
                self.reply(reply)
            }
            Err(reply) => {
                tracing::info!(user = %user.escape_debug(), "authentication failed");
                self.auth_failed(reply)
            }
        }
    }

    /// A failed attempt; past the limit the session ends.
    fn auth_failed(&mut self, reply: Reply) -> Next<H::Transaction> {
        self.auth_failures += 1;
        if self.auth_failures > self.limits.max_auth_failures {
            tracing::warn!(
                failures = self.auth_failures,
                "too many failed authentications: closing"
            );
            self.queue(&Reply::new(
                421,
                "4.7.0",
                "Too many failed authentication attempts, closing",
            ));
            return Next::Close;
        }
        self.reply(reply)
    }
}

fn decode(text: &str) -> Result<Zeroizing<Vec<u8>>, SaslError> {
    let text = text.trim();
    if text == "*" {
        return Err(SaslError::Cancelled);
    }
    // "=" is an empty initial response (RFC 4954 §4).
    if text == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| SaslError::Base64)
}

fn user_name(text: &str) -> Result<String, SaslError> {
    let decoded = decode(text)?;
    let user = std::str::from_utf8(&decoded).map_err(|_| SaslError::Malformed)?;
    if user.is_empty() || user.len() > 255 || user.chars().any(char::is_control) {
        return Err(SaslError::Malformed);
    }
    Ok(user.to_string())
}

/// Splits a decoded PLAIN message. An authorization identity other than the user's
/// own is refused (no proxy authorization here).
fn split_plain(decoded: &[u8]) -> Result<(String, SecretString), SaslError> {
    let mut parts = decoded.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let user = std::str::from_utf8(authcid).map_err(|_| SaslError::Malformed)?;
    let password = std::str::from_utf8(passwd).map_err(|_| SaslError::Malformed)?;
    if user.is_empty()
        || user.len() > 255
        || user.chars().any(char::is_control)
        || (!authzid.is_empty() && authzid != authcid)
        || password.contains('\0')
    {
        return Err(SaslError::Malformed);
    }
    Ok((user.to_string(), SecretString::from(password)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn plain_messages_split_into_user_and_password() {
        let (user, password) =
            split_plain(&decode(&b64(b"\0alice\0s3cret")).expect("b64")).expect("plain");
        assert_eq!(user, "alice");
        assert_eq!(password.expose_secret(), "s3cret");
        let (user, _) = split_plain(b"alice\0alice\0pw").expect("same authzid");
        assert_eq!(user, "alice");
        for bad in [
            &b"\0alice"[..],
            b"bob\0alice\0pw",
            b"\0\0pw",
            b"",
            b"\0al\x01ice\0pw",
        ] {
            assert_eq!(
                split_plain(bad).unwrap_err(),
                SaslError::Malformed,
                "{bad:?}"
            );
        }
        assert_eq!(decode("*").unwrap_err(), SaslError::Cancelled);
        assert_eq!(decode("!!").unwrap_err(), SaslError::Base64);
        assert!(decode("=").expect("empty").is_empty());
    }

    #[test]
    fn a_sasl_step_never_shows_the_user_or_password_in_debug() {
        let step = SaslStep::LoginPassword {
            user: "alice".into(),
        };
        assert_eq!(format!("{step:?}"), "LoginPassword");
    }
}
