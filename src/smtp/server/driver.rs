//! One session from connection to close: [`Io`] reads what the [`Session`] asks for
//! next, hands it over, and writes the replies it queued; STARTTLS swaps the stream
//! and the same session goes on over TLS. Every wait also watches the shutdown phase.
//! Exposure: talks to the outside world.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::Instrument;

use super::control::{Phase, reached};
use super::io::{Io, IoError};
use super::session::{Next, Session};
use super::{Handler, Server, SessionInfo, session_id};
use crate::smtp::tls;

impl<H: Handler> Server<H> {
    /// Runs one session over any stream (a socket; a `tokio::io::duplex` in tests).
    pub async fn session<S>(&self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = session_id();
        let span = tracing::info_span!("smtp", session = %id, peer = %peer, listener = self.config.listener.as_str());
        self.run(stream, peer, id).instrument(span).await
    }

    async fn run<S>(&self, stream: S, peer: SocketAddr, id: String)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _counted = self.control.enter();
        let limits = self.control.limits();
        let info = SessionInfo {
            id,
            peer,
            listener: self.config.listener,
            helo: String::new(),
            tls: false,
            authenticated: None,
        };
        let deadline = Instant::now() + limits.session_deadline;
        let mut phase = self.control.subscribe();
        let mut session = Session::new(
            info,
            &self.config,
            &limits,
            &self.control,
            self.handler.as_ref(),
        );
        tracing::info!("session opened");
        session.greet();
        let io = Io::new(stream, limits.command_timeout, deadline);
        if let Some(raw) = drive(io, &mut session, &mut phase).await
            && let Some(config) = &self.config.tls
        {
            match tls::accept(config.clone(), raw, limits.command_timeout).await {
                Ok(stream) => {
                    tracing::info!("TLS established");
                    session.tls_established();
                    let io = Io::new(stream, limits.command_timeout, deadline);
                    let _ = Box::pin(drive(io, &mut session, &mut phase)).await;
                }
                Err(e) => tracing::info!(error = %e, "TLS handshake failed"),
            }
        }
        session.abandon(None).await;
        tracing::info!("session closed");
    }
}

/// Runs a handler step unless the grace time of a shutdown ends first; then the
/// step is dropped and the client told `421 4.3.2`.
macro_rules! until_closing {
    ($phase:expr, $session:ident . $step:ident ( $($arg:expr),* )) => {{
        let finished = tokio::select! {
            next = $session.$step($($arg),*) => Some(next),
            () = reached($phase, Phase::Closing) => None,
        };
        match finished {
            Some(next) => next,
            None => Box::pin($session.shutting_down()).await,
        }
    }};
}

/// Drives `session` over `io` until it closes (`None`) or asks for TLS (the stream).
pub(crate) async fn drive<S, H>(
    mut io: Io<S>,
    session: &mut Session<'_, H>,
    phase: &mut watch::Receiver<Phase>,
) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let max_line = session.limits.max_line_bytes;
    let mut next = Next::Command;
    loop {
        io.queue(session.output());
        next = match next {
            Next::Command => {
                // RFC 5321 §3.8: a session outside a transaction is told at once.
                if *phase.borrow() >= Phase::Draining && !session.in_transaction() {
                    Box::pin(session.shutting_down()).await
                } else {
                    let stop = if session.in_transaction() {
                        Phase::Closing
                    } else {
                        Phase::Draining
                    };
                    let read = tokio::select! {
                        read = io.read_line(max_line) => Some(read),
                        () = reached(phase, stop) => None,
                    };
                    match read {
                        Some(Ok(line)) => until_closing!(phase, session.command(line)),
                        Some(Err(e)) => failed(session, e).await,
                        None => Box::pin(session.shutting_down()).await,
                    }
                }
            }
            Next::Data(envelope, mut reader) => {
                let read = tokio::select! {
                    read = io.read_data(&mut reader) => Some(read),
                    () = reached(phase, Phase::Closing) => None,
                };
                match read {
                    Some(Ok(true)) => {
                        let outcome = reader.finish();
                        let next = until_closing!(phase, session.message(envelope, outcome));
                        // The reply is sent before the message's budget is given back.
                        io.queue(session.output());
                        let sent = io.flush().await;
                        session.sent();
                        match sent {
                            Ok(()) => next,
                            Err(e) => failed(session, e).await,
                        }
                    }
                    Some(Ok(false)) | Some(Err(IoError::Io(_))) => {
                        session.message_lost(envelope).await;
                        Next::Close
                    }
                    Some(Err(e)) => {
                        session.message_lost(envelope).await;
                        failed(session, e).await
                    }
                    None => {
                        session.message_lost(envelope).await;
                        Box::pin(session.shutting_down()).await
                    }
                }
            }
            Next::Auth(step) => {
                let read = tokio::select! {
                    read = io.read_line(max_line) => Some(read),
                    () = reached(phase, Phase::Draining) => None,
                };
                match read {
                    Some(Ok(line)) => until_closing!(phase, session.auth_response(step, line)),
                    Some(Err(e)) => failed(session, e).await,
                    None => Box::pin(session.shutting_down()).await,
                }
            }
            Next::StartTls => {
                if let Err(e) = io.flush().await {
                    tracing::info!(error = %e, "connection lost at STARTTLS");
                    return None;
                }
                if io.has_buffered_input() {
                    // RFC 3207 §5: anything pipelined after STARTTLS is an attack.
                    tracing::warn!("plaintext pipelined after STARTTLS: discarded");
                }
                return Some(io.into_inner());
            }
            Next::Close => {
                io.close().await;
                return None;
            }
        };
    }
}

/// The stream failed or timed out while waiting for the client.
async fn failed<H: Handler>(session: &mut Session<'_, H>, error: IoError) -> Next<H::Transaction> {
    match error {
        IoError::ReadTimeout => session.timed_out().await,
        IoError::WriteTimeout => {
            tracing::info!("the client does not read its replies: dropped");
            session.abandon(None).await;
            Next::Close
        }
        IoError::Io(e) => {
            tracing::info!(error = %e, "connection lost");
            session.abandon(None).await;
            Next::Close
        }
    }
}
