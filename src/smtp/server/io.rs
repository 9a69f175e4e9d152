//! A session's byte stream: buffered reading with limits and timeouts, replies queued
//! and written only when the client waits for them (PIPELINING, RFC 2920), and every
//! write bounded by the command timeout, so a client that never reads its replies is
//! dropped rather than holding a session forever. Exposure: the raw client stream.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::data::DataReader;

pub(crate) enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

#[derive(Debug)]
pub(crate) enum IoError {
    /// The client sent nothing within the command timeout (or the session deadline).
    ReadTimeout,
    /// The client did not take our replies within the command timeout.
    WriteTimeout,
    Io(std::io::Error),
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::ReadTimeout => write!(f, "read timeout"),
            IoError::WriteTimeout => write!(f, "write timeout: the client does not read"),
            IoError::Io(e) => write!(f, "{e}"),
        }
    }
}

pub(crate) struct Io<S> {
    reader: BufReader<S>,
    out: Vec<u8>,
    command_timeout: Duration,
    deadline: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    pub(crate) fn new(stream: S, command_timeout: Duration, deadline: Instant) -> Self {
        Io {
            reader: BufReader::with_capacity(64 * 1024, stream),
            out: Vec::new(),
            command_timeout,
            deadline,
        }
    }

    pub(crate) fn queue(&mut self, bytes: &mut Vec<u8>) {
        self.out.append(bytes);
    }

    fn timeout(&self) -> Duration {
        self.command_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Writes what is queued, within the command timeout.
    pub(crate) async fn flush(&mut self) -> Result<(), IoError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let timeout = self.timeout();
        let stream = self.reader.get_mut();
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(result) => result.map_err(IoError::Io),
            Err(_) => Err(IoError::WriteTimeout),
        }
    }

    /// Flushes, then closes the stream, both bounded.
    pub(crate) async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let timeout = self.timeout();
            let _ = tokio::time::timeout(timeout, self.reader.get_mut().shutdown()).await;
        }
    }

    pub(crate) fn has_buffered_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    pub(crate) fn into_inner(self) -> S {
        self.reader.into_inner()
    }

    /// Replies are sent before the session would wait for input.
    async fn fill(&mut self) -> Result<usize, IoError> {
        if self.reader.buffer().is_empty() {
            self.flush().await?;
        }
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, self.reader.fill_buf()).await {
            Ok(Ok(buf)) => Ok(buf.len()),
            Ok(Err(e)) => Err(IoError::Io(e)),
            Err(_) => Err(IoError::ReadTimeout),
        }
    }

    /// One line up to LF without its CRLF or LF, at most `max` bytes kept; a longer
    /// line is consumed whole and reported as too long.
    pub(crate) async fn read_line(&mut self, max: usize) -> Result<Line, IoError> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            if self.fill().await? == 0 {
                return Ok(Line::Eof);
            }
            let buf = self.reader.buffer();
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if line.len() + take > max {
                    too_long = true;
                    zeroize::Zeroize::zeroize(&mut line);
                } else {
                    line.extend_from_slice(&buf[..take]);
                }
            }
            self.reader.consume(take);
            if done {
                if too_long {
                    return Ok(Line::TooLong);
                }
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(Line::Text(line));
            }
        }
    }

    /// Feeds the message to `reader` until its end (`true`) or the end of the stream
    /// (`false`). Bytes after the end stay buffered for the next command.
    pub(crate) async fn read_data(&mut self, reader: &mut DataReader) -> Result<bool, IoError> {
        loop {
            if self.fill().await? == 0 {
                return Ok(false);
            }
            let (used, ended) = reader.feed(self.reader.buffer());
            self.reader.consume(used);
            if ended {
                return Ok(true);
            }
        }
    }
}
