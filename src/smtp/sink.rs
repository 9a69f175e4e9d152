//! A small SMTP sink that writes every message it accepts to a Maildir (`new/`), with
//! the envelope in `Return-Path` and `X-Envelope-To` fields: a next hop for trying the
//! gateway out, for tests, and for operators who want to see what would be delivered.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::command::{MailParams, RcptParams};
use super::reply::Reply;
use super::server::{Handler, SessionInfo};

pub struct Maildir {
    root: PathBuf,
    counter: AtomicU64,
    /// Accept and drop (benchmarks).
    pub discard: bool,
    /// Recipients refused at RCPT with 550 5.1.1, as a mail server refuses a mailbox it
    /// does not know (lower case).
    pub unknown_recipients: Vec<String>,
}

pub struct SinkTransaction {
    from: String,
    params: MailParams,
    recipients: Vec<(String, RcptParams)>,
}

impl Maildir {
    pub fn create(root: PathBuf) -> std::io::Result<Self> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Maildir {
            root,
            counter: AtomicU64::new(0),
            discard: false,
            unknown_recipients: Vec::new(),
        })
    }

    fn store(&self, tx: &SinkTransaction, message: &[u8], tls: bool) -> std::io::Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Unique, and in arrival order when sorted by name.
        let name = format!(
            "{:020}.{}_{n:08}.smimegate-sink",
            now.as_nanos(),
            std::process::id()
        );
        let mut content = format!("Return-Path: <{}>\r\n", tx.from).into_bytes();
        for (rcpt, params) in &tx.recipients {
            content.extend_from_slice(format!("X-Envelope-To: <{rcpt}>").as_bytes());
            if let Some(notify) = &params.notify {
                content.extend_from_slice(format!("; notify={notify}").as_bytes());
            }
            if let Some(orcpt) = &params.orcpt {
                content.extend_from_slice(format!("; orcpt={orcpt}").as_bytes());
            }
            content.extend_from_slice(b"\r\n");
        }
        let mut mail_params = Vec::new();
        if let Some(ret) = &tx.params.ret {
            mail_params.push(format!("ret={ret}"));
        }
        if let Some(envid) = &tx.params.envid {
            mail_params.push(format!("envid={envid}"));
        }
        if tx.params.smtputf8 {
            mail_params.push("smtputf8".into());
        }
        if let Some(body) = &tx.params.body {
            mail_params.push(format!("body={body}"));
        }
        if !mail_params.is_empty() {
            content.extend_from_slice(
                format!("X-Envelope-Params: {}\r\n", mail_params.join("; ")).as_bytes(),
            );
        }
        if tls {
            content.extend_from_slice(b"X-Sink-TLS: yes\r\n");
        }
        content.extend_from_slice(message);
        let tmp = self.root.join("tmp").join(&name);
        std::fs::write(&tmp, &content)?;
        let new = self.root.join("new").join(&name);
        std::fs::rename(&tmp, &new)?;
        Ok(new)
    }
}

impl Handler for Maildir {
    type Transaction = SinkTransaction;

    async fn mail(
        &self,
        _s: &SessionInfo,
        from: &str,
        params: &MailParams,
    ) -> Result<SinkTransaction, Reply> {
        Ok(SinkTransaction {
            from: from.to_string(),
            params: params.clone(),
            recipients: Vec::new(),
        })
    }

    async fn rcpt(
        &self,
        _s: &SessionInfo,
        tx: &mut SinkTransaction,
        to: &str,
        params: &RcptParams,
    ) -> Reply {
        if self.unknown_recipients.contains(&to.to_ascii_lowercase()) {
            return Reply::new(550, "5.1.1", format!("<{to}>: no such mailbox here"));
        }
        tx.recipients.push((to.to_string(), params.clone()));
        Reply::new(250, "2.1.5", "Recipient OK")
    }

    async fn data(&self, session: &SessionInfo, tx: SinkTransaction, message: Vec<u8>) -> Reply {
        if self.discard {
            return Reply::new(250, "2.0.0", "Discarded");
        }
        match self.store(&tx, &message, session.tls) {
            Ok(path) => {
                tracing::info!(file = %path.display(), "message stored");
                Reply::new(250, "2.0.0", "Stored")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store message");
                Reply::new(451, "4.3.0", "Cannot store the message")
            }
        }
    }

    async fn abandon(&self, _s: &SessionInfo, _tx: SinkTransaction, _reply: Option<&Reply>) {}
}
