//! The client's earlier, `Reply`-typed interface, kept while `cli/load.rs`
//! (`smimegate smtp-load`) still calls it: every failure is already the safe `4xx` of
//! `From<&HopError> for Reply` (logged at WARN), and the sequence checks of the typed
//! interface apply (a `2xx` to DATA is a `451`, never a `250`). New code uses
//! [`Connection::connect`], [`Connection::envelope`], [`Connection::send_data`] and the
//! pool in [`crate::relay::hops`], which can tell a connection lost before the message
//! was handed over (replay) from one lost after it (state unknown).

use super::{ClientConfig, Connection};
use crate::smtp::Reply;
use crate::smtp::command::{MailParams, RcptParams};

impl Connection {
    /// [`Connection::connect`] with the failure as a safe `4xx`.
    pub async fn open(config: &ClientConfig, hop: &str) -> Result<Connection, Reply> {
        Connection::connect(config, hop).await.map_err(Reply::from)
    }

    /// [`Connection::send_mail`] with the failure as a safe `4xx`.
    pub async fn mail(
        &mut self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
    ) -> Result<Reply, Reply> {
        self.send_mail(from, params, size)
            .await
            .map_err(Reply::from)
    }

    /// MAIL and one RCPT through [`Connection::envelope`]: both replies (`None` for
    /// the RCPT when MAIL was refused), a failure as a safe `4xx`.
    pub async fn mail_and_rcpt(
        &mut self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
        to: &str,
        rcpt_params: &RcptParams,
    ) -> Result<(Reply, Option<Reply>), Reply> {
        let replies = self
            .envelope(None, from, params, size, &[(to, rcpt_params)])
            .await
            .map_err(Reply::from)?;
        Ok((replies.mail, replies.rcpts.into_iter().next()))
    }

    /// [`Connection::send_rcpt`] with the failure as a safe `4xx`.
    pub async fn rcpt(&mut self, to: &str, params: &RcptParams) -> Result<Reply, Reply> {
        self.send_rcpt(to, params).await.map_err(Reply::from)
    }

    /// [`Connection::send_data`] with every failure as a safe `4xx` (no replay here).
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        self.send_data(message).await.map_err(|e| Reply::from(&e))
    }

    /// [`Connection::reset`]: true when the hop agreed.
    pub async fn rset(&mut self) -> bool {
        self.reset().await.is_ok()
    }
}
