//! Several nodes on one PostgreSQL database and one token (DESIGN §6): a change made
//! on one node is in force on the other within a second, pushed by LISTEN/NOTIFY (the
//! nodes' own re-read of the version is 30 s apart, so nothing else could bring it
//! sooner), also after the listener lost its connection; and a node killed with SIGKILL
//! under load loses nothing: every message it answered 250 reached the next hop, and
//! every other one got no reply or a 4xx and is delivered on retry through the other
//! node.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::common::wait_config_in_force;
use super::harness::{Client, Gateway, Node, dot_stuff, mailbox};
use super::{ALICE, message};

const CAROL: &str = "carol@other.example";

/// The subjects of what reached `sink`, one per delivered message.
fn delivered_subjects(sink: &super::harness::Sink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|m| {
            m.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

fn is_signed(text: &str) -> bool {
    text.contains("application/pkcs7-signature") || text.contains("application/x-pkcs7-signature")
}

#[test]
fn a_change_on_one_node_is_in_force_on_the_other_within_a_second() {
    let a = Gateway::start_on_postgres(|d| mailbox(d, ALICE));
    let b = Node::join(&a, "node2");

    // Node B signs alice's mail by the default outbound rule.
    let t = Client::internal(b.submission).send(
        ALICE,
        &[CAROL],
        &message(ALICE, CAROL, "before", "as the default says"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let last = a.smarthost.messages().pop().expect("delivered by node B");
    assert!(is_signed(&last.text()), "{}", last.text());

    // On node A (its CLI): relay everything unchanged. Node B acts on it within 1 s.
    let rule = a.add_rule("outbound", "anyone", "anyone", "none");
    let changed = Instant::now();
    assert!(
        wait_config_in_force(b.http, Duration::from_secs(1)),
        "node B did not learn the change within 1 s; its log:\n{}",
        b.log()
    );
    eprintln!(
        "node B acted on the change made on node A after {:?}",
        changed.elapsed()
    );
    let t = Client::internal(b.submission).send(
        ALICE,
        &[CAROL],
        &message(ALICE, CAROL, "after", "as the new rule says"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let last = a.smarthost.messages().pop().expect("delivered by node B");
    assert!(
        !is_signed(&last.text()),
        "node B still signs: {}",
        last.text()
    );

    // Node B's listening connection is cut (a database failover, a proxy's idle
    // timeout): what is notified meanwhile is lost, so B reads the version again once
    // it listens anew, and the next change made on A is in force on B all the same.
    let pg = a.postgres.as_ref().expect("on PostgreSQL");
    let cut = pg.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    );
    assert!(
        cut.trim().parse::<u32>().is_ok_and(|n| n >= 2),
        "both nodes listen: {cut}"
    );
    a.cli(&["rule", "remove", &rule]);
    assert!(
        wait_config_in_force(b.http, Duration::from_secs(5)),
        "node B missed the change made while it reconnected; its log:\n{}",
        b.log()
    );
    let t = Client::internal(b.submission).send(
        ALICE,
        &[CAROL],
        &message(ALICE, CAROL, "again", "signed again"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let last = a.smarthost.messages().pop().expect("delivered by node B");
    assert!(is_signed(&last.text()), "{}", last.text());
    assert!(
        b.log()
            .contains("configuration listener lost its connection"),
        "{}",
        b.log()
    );
}

/// What one SMTP transaction ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// `250` after the message: the gateway took responsibility.
    Accepted,
    /// A reply other than the expected one: (code, text).
    Refused(u16, String),
    /// The connection failed or closed before the final reply.
    NoReply(String),
}

fn read_reply(reader: &mut impl BufRead) -> Result<(u16, String), String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("connection closed".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not a reply: {line:?}"))?;
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        text.push('\n');
    }
}

/// One message in a transaction of its own, from the internal network; never panics.
fn try_send(port: u16, from: &str, to: &str, message: &[u8]) -> Outcome {
    let stream = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => stream,
        Err(e) => return Outcome::NoReply(e.to_string()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return Outcome::NoReply(e.to_string()),
    };
    let mut reader = BufReader::new(stream);
    let mut step = |line: Option<String>, expect: u16| -> Result<(), Outcome> {
        if let Some(line) = line
            && let Err(e) = writer.write_all(line.as_bytes())
        {
            return Err(Outcome::NoReply(e.to_string()));
        }
        match read_reply(&mut reader) {
            Ok((code, _)) if code == expect => Ok(()),
            Ok((code, text)) => Err(Outcome::Refused(code, text)),
            Err(e) => Err(Outcome::NoReply(e)),
        }
    };
    let body = String::from_utf8_lossy(&dot_stuff(message)).into_owned();
    let steps = [
        (None, 220),
        (Some("EHLO load.test\r\n".to_string()), 250),
        (Some(format!("MAIL FROM:<{from}>\r\n")), 250),
        (Some(format!("RCPT TO:<{to}>\r\n")), 250),
        (Some("DATA\r\n".to_string()), 354),
        (Some(body), 250),
    ];
    for (line, expect) in steps {
        if let Err(outcome) = step(line, expect) {
            return outcome;
        }
    }
    let _ = writer.write_all(b"QUIT\r\n");
    Outcome::Accepted
}

#[test]
fn a_node_killed_under_load_loses_nothing_and_the_other_node_delivers_the_rest() {
    let mut a = Gateway::start_on_postgres(|d| mailbox(d, ALICE));
    let b = Node::join(&a, "node2");
    let port = a.submission;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    // Four senders, each one message after another through node A (signed there),
    // about 20 KB each, until node A is gone.
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for i in 0.. {
                    let subject = format!("load-{sender}-{i}");
                    let body = format!("message {subject}\r\n").repeat(1200);
                    let outcome =
                        try_send(port, ALICE, CAROL, &message(ALICE, CAROL, &subject, &body));
                    let gone = outcome != Outcome::Accepted;
                    if !gone {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    outcomes.push((subject, outcome));
                    // A sender stops at its first failure (the node is gone: the rest
                    // of its queue would go to the other MX host anyway).
                    if gone || stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::SeqCst) < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL in the middle of the load: transactions in flight die with the node.
    a.kill();
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<(String, Outcome)> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect();

    let delivered = delivered_subjects(&a.smarthost);
    let mut retried = 0;
    let mut accepted_by_a = 0;
    for (subject, outcome) in &outcomes {
        match outcome {
            Outcome::Accepted => {
                accepted_by_a += 1;
                assert!(
                    delivered.contains(subject),
                    "{subject} was answered 250 by node A but never reached the next hop"
                );
            }
            Outcome::Refused(code, text) => {
                assert!(
                    (400..500).contains(code),
                    "{subject}: a lost node must not refuse mail for good: {code} {text}"
                );
            }
            Outcome::NoReply(_) => {}
        }
        if *outcome != Outcome::Accepted {
            // The sender's MTA retries through the other node (the MX's next host).
            retried += 1;
            let body = format!("message {subject}\r\n").repeat(1200);
            let again = try_send(
                b.submission,
                ALICE,
                CAROL,
                &message(ALICE, CAROL, subject, &body),
            );
            assert_eq!(
                again,
                Outcome::Accepted,
                "{subject} on retry through node B"
            );
        }
    }
    let delivered = delivered_subjects(&a.smarthost);
    for (subject, _) in &outcomes {
        assert!(delivered.contains(subject), "{subject} was lost");
    }
    assert!(
        accepted_by_a >= 40,
        "{accepted_by_a} accepted before the kill"
    );
    assert!(retried > 0, "the SIGKILL cut no sender off: {outcomes:?}");
    for message in a.smarthost.messages() {
        assert!(is_signed(&message.text()), "everything went out signed");
    }
    eprintln!(
        "{} messages: {accepted_by_a} answered 250 by node A before its SIGKILL, {retried} delivered on retry through node B; {} deliveries in all",
        outcomes.len(),
        delivered.len()
    );
}
