//! The next-hop client and pool against real sockets: a scripted SMTP peer in this file
//! that can misbehave (close connections, idle them out with a `421`, restart, answer
//! out of sequence, send what nobody asked for), and `smimegate sink` with openssl-made
//! certificates for the TLS levels. Every test counts what reached the peer: a `250`
//! means delivered exactly once; a `4xx` where the state is unknown may mean delivered
//! once, never twice by us.

#[path = "next_hop/peer.rs"]
mod peer;
#[path = "next_hop/tls.rs"]
mod tls;

use std::time::Duration;

use peer::{Act, Peer, Script};
use smimegate::config::NextHopTls;
use smimegate::relay::hops::{Envelope, HopPool};
use smimegate::smtp::Reply;
use smimegate::smtp::client::{ClientConfig, Connection, XforwardAttrs};
use smimegate::smtp::command::{MailParams, RcptParams};

fn client() -> ClientConfig {
    ClientConfig::new(
        "gw.test".into(),
        Duration::from_secs(2),
        Duration::from_secs(2),
        NextHopTls::Off,
    )
    .expect("client config")
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        from: "alice@corp.example".into(),
        recipients: recipients
            .iter()
            .map(|r| (r.to_string(), RcptParams::default()))
            .collect(),
        ..Envelope::default()
    }
}

const MESSAGE: &[u8] = b"From: alice@corp.example\r\nSubject: t\r\n\r\n.leading dot\r\nbody\r\n";

/// One whole transaction through the pool, as the relay runs it.
async fn transaction(pool: &HopPool, hop: &str, rcpts: &[&str]) -> (Reply, Vec<Reply>) {
    transaction_with(pool, &client(), hop, rcpts).await
}

async fn transaction_with(
    pool: &HopPool,
    config: &ClientConfig,
    hop: &str,
    rcpts: &[&str],
) -> (Reply, Vec<Reply>) {
    let mut env = envelope(&[]);
    let mut conn: Option<Connection> = None;
    let mut rcpt_replies = Vec::new();
    for rcpt in rcpts {
        let result = match conn.take() {
            None => {
                pool.begin(config, hop, &env, rcpt, &RcptParams::default())
                    .await
            }
            Some(c) => {
                pool.add_recipient(config, hop, c, &env, rcpt, &RcptParams::default())
                    .await
            }
        };
        match result {
            Ok((c, reply)) => {
                if reply.code / 100 == 2 {
                    env.recipients
                        .push((rcpt.to_string(), RcptParams::default()));
                }
                rcpt_replies.push(reply);
                conn = Some(c);
            }
            Err(reply) => {
                rcpt_replies.push(reply);
            }
        }
    }
    if env.recipients.is_empty() {
        // No recipient accepted: no DATA (the server answers it with 554 itself).
        let last = rcpt_replies.last().cloned().expect("a recipient was tried");
        if let Some(c) = conn {
            pool.put_back(c).await;
        }
        return (last, rcpt_replies);
    }
    let (reply, left) = pool.send_message(config, hop, conn, &env, MESSAGE).await;
    if let Some(c) = left {
        pool.put_back(c).await;
    }
    (reply, rcpt_replies)
}

fn assert_code(reply: &Reply, code: u16) {
    assert_eq!(reply.code, code, "{reply}");
}

/// A reply we made up must name nothing internal (issue 9, item 8).
fn assert_safe(reply: &Reply, peer: &Peer) {
    let text = reply.to_string();
    for leak in [
        "127.0.0.1".to_string(),
        peer.addr.port().to_string(),
        "os error".into(),
        "refused".into(),
        "closed the connection".into(),
    ] {
        assert!(!text.contains(&leak), "{text:?} leaks {leak:?}");
    }
}

// ---- item 3: stale pooled connections, idle-out during DATA ----

#[tokio::test]
async fn a_pooled_connection_the_hop_idled_out_is_replaced_transparently() {
    let peer = Peer::start(Script {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let (first, _) = transaction(&pool, &hop, &["bob@corp.example"]).await;
    assert_code(&first, 250);
    assert_eq!(pool.idle_count(&hop), 1);
    // The hop says "421 … timeout exceeded" and closes the pooled connection.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (second, rcpts) = transaction(&pool, &hop, &["carol@corp.example"]).await;
    assert_code(&rcpts[0], 250);
    assert_code(&second, 250);
    assert_eq!(peer.messages().len(), 2, "each message delivered once");
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn pooled_connections_that_die_at_reuse_are_replaced_by_a_fresh_one_once() {
    // Every connection closes silently at its second MAIL: the probe cannot see it,
    // the pooled connection dies only when used.
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| {
            (line.starts_with("MAIL") && ctx.transaction == 2).then_some(Act::Close)
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    // Three transactions at once leave three pooled connections.
    let (a, b, c) = tokio::join!(
        transaction(&pool, &hop, &["a@corp.example"]),
        transaction(&pool, &hop, &["b@corp.example"]),
        transaction(&pool, &hop, &["c@corp.example"]),
    );
    for r in [&a.0, &b.0, &c.0] {
        assert_code(r, 250);
    }
    assert_eq!(pool.idle_count(&hop), 3);
    // The next transaction meets a dead pooled connection: the replacement must be a
    // fresh connection, not the next (equally dead) pooled one.
    let (reply, rcpts) = transaction(&pool, &hop, &["d@corp.example"]).await;
    assert_code(&rcpts[0], 250);
    assert_code(&reply, 250);
    assert_eq!(peer.messages().len(), 4);
    assert_eq!(peer.connections(), 4);
}

#[tokio::test]
async fn a_restarted_hop_costs_no_transaction() {
    let mut peer = Peer::start(Script::default()).await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let (a, b) = tokio::join!(
        transaction(&pool, &hop, &["a@corp.example"]),
        transaction(&pool, &hop, &["b@corp.example"]),
    );
    assert_code(&a.0, 250);
    assert_code(&b.0, 250);
    assert_eq!(pool.idle_count(&hop), 2);
    peer.stop().await;
    let restarted = Peer::start_on(peer.addr, Script::default()).await;
    for rcpt in ["c@corp.example", "d@corp.example", "e@corp.example"] {
        let (reply, _) = transaction(&pool, &hop, &[rcpt]).await;
        assert_code(&reply, 250);
    }
    assert_eq!(restarted.messages().len(), 3);
}

#[tokio::test]
async fn a_connection_the_hop_idles_out_during_a_slow_upload_is_replayed() {
    let peer = Peer::start(Script {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let config = client();
    let mut env = envelope(&[]);
    let (conn, reply) = pool
        .begin(
            &config,
            &hop,
            &env,
            "a@corp.example",
            &RcptParams::default(),
        )
        .await
        .expect("begin");
    assert_code(&reply, 250);
    env.recipients
        .push(("a@corp.example".into(), RcptParams::default()));
    let (conn, reply) = pool
        .add_recipient(
            &config,
            &hop,
            conn,
            &env,
            "b@corp.example",
            &RcptParams::default(),
        )
        .await
        .expect("rcpt");
    assert_code(&reply, 250);
    env.recipients
        .push(("b@corp.example".into(), RcptParams::default()));
    // Our sender uploads slowly; the hop times the open transaction out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (reply, left) = pool
        .send_message(&config, &hop, Some(conn), &env, MESSAGE)
        .await;
    assert_code(&reply, 250);
    assert!(left.is_some());
    let messages = peer.messages();
    assert_eq!(messages.len(), 1, "delivered exactly once");
    assert_eq!(messages[0].from, "MAIL FROM:<alice@corp.example>");
    assert_eq!(
        messages[0].rcpts,
        ["a@corp.example", "b@corp.example"],
        "every accepted recipient replayed"
    );
    assert_eq!(messages[0].body, MESSAGE);
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn a_connection_lost_at_a_later_rcpt_restarts_the_transaction_with_every_recipient() {
    // The first connection dies when the second recipient is sent.
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| {
            (ctx.connection == 1 && line.starts_with("RCPT") && ctx.rcpts == 2)
                .then_some(Act::Close)
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let (reply, rcpts) = transaction(&pool, &hop, &["a@corp.example", "b@corp.example"]).await;
    assert_code(&rcpts[0], 250);
    assert_code(&rcpts[1], 250);
    assert_code(&reply, 250);
    let messages = peer.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpts, ["a@corp.example", "b@corp.example"]);
}

#[tokio::test]
async fn a_replayed_envelope_the_hop_no_longer_accepts_in_full_is_a_4xx() {
    let peer = Peer::start(Script {
        idle_timeout: Some(Duration::from_millis(300)),
        hook: peer::hook(|ctx, line| {
            (ctx.connection > 1 && line.contains("<b@corp.example>"))
                .then(|| Act::Reply("550 5.1.1 <b@corp.example>: gone\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let config = client();
    let env = envelope(&["a@corp.example"]);
    let (conn, _) = pool
        .begin(
            &config,
            &hop,
            &envelope(&[]),
            "a@corp.example",
            &RcptParams::default(),
        )
        .await
        .expect("begin");
    let mut env2 = env.clone();
    let (conn, reply) = pool
        .add_recipient(
            &config,
            &hop,
            conn,
            &env,
            "b@corp.example",
            &RcptParams::default(),
        )
        .await
        .expect("rcpt");
    assert_code(&reply, 250);
    env2.recipients
        .push(("b@corp.example".into(), RcptParams::default()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (reply, left) = pool
        .send_message(&config, &hop, Some(conn), &env2, MESSAGE)
        .await;
    assert_code(&reply, 451);
    assert_safe(&reply, &peer);
    assert!(left.is_none());
    assert!(peer.messages().is_empty(), "a 250 would not be true for b");
}

#[tokio::test]
async fn a_connection_lost_after_the_final_dot_is_a_4xx_and_never_resent() {
    let peer = Peer::start(Script {
        hook: peer::hook(|_, line| (line == ".").then_some(Act::StoreAndClose)),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let (reply, _) = transaction(&pool, &hop, &["a@corp.example"]).await;
    assert_code(&reply, 451);
    assert_eq!(reply.enhanced, "4.4.2");
    assert_safe(&reply, &peer);
    assert_eq!(
        peer.messages().len(),
        1,
        "the hop has it once; we sent it once"
    );
    assert_eq!(peer.connections(), 1, "no replay after the dot");
}

#[tokio::test]
async fn a_hop_that_dies_before_the_354_gets_the_message_once_on_a_new_connection() {
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| {
            (ctx.connection == 1 && line == "DATA")
                .then(|| Act::ReplyAndClose("421 4.3.2 shutting down\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let (reply, _) = transaction(&pool, &hop, &["a@corp.example", "b@corp.example"]).await;
    assert_code(&reply, 250);
    let messages = peer.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpts, ["a@corp.example", "b@corp.example"]);
}

#[tokio::test]
async fn a_hop_refusing_mail_is_passed_on_and_the_connection_pooled() {
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| {
            (ctx.transaction == 1 && line.starts_with("MAIL"))
                .then(|| Act::Reply("550 5.7.1 sender blocked\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let err = pool
        .begin(
            &client(),
            &hop,
            &envelope(&[]),
            "a@corp.example",
            &RcptParams::default(),
        )
        .await
        .err()
        .expect("MAIL refused");
    assert_eq!(err.to_string(), "550 5.7.1 sender blocked");
    assert_eq!(pool.idle_count(&hop), 1, "RSET and kept");
}

#[tokio::test]
async fn copies_with_their_own_envelopes_go_on_one_connection_or_a_fresh_one() {
    // The first connection closes after its first message.
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| {
            (ctx.connection == 1 && line == ".")
                .then(|| Act::ReplyAndClose("250 2.0.0 Ok: queued\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let hop = peer.hop();
    let pool = HopPool::default();
    let config = client();
    let mut conn = None;
    for copy in ["to@corp.example", "bcc1@corp.example", "bcc2@corp.example"] {
        let (reply, left) = pool
            .send_transaction(&config, &hop, conn.take(), &envelope(&[copy]), MESSAGE)
            .await;
        assert_code(&reply, 250);
        conn = left;
    }
    let rcpts: Vec<Vec<String>> = peer.messages().into_iter().map(|m| m.rcpts).collect();
    assert_eq!(
        rcpts,
        [
            ["to@corp.example"],
            ["bcc1@corp.example"],
            ["bcc2@corp.example"]
        ]
    );
    assert_eq!(
        peer.connections(),
        2,
        "the second copy needed a fresh connection, the third reused it"
    );
}

// ---- item 4: out-of-sequence replies are a 4xx, never a 250 or a made-up 5xx ----

async fn open(peer: &Peer) -> Connection {
    Connection::open(&client(), &peer.hop())
        .await
        .expect("connect")
}

#[tokio::test]
async fn data_answered_with_250_instead_of_354_is_a_4xx() {
    let peer = Peer::start(Script {
        hook: peer::hook(|_, line| (line == "DATA").then(|| Act::Reply("250 2.0.0 Ok\r\n".into()))),
        ..Script::default()
    })
    .await;
    let mut conn = open(&peer).await;
    assert_code(
        &conn
            .mail("a@corp.example", &MailParams::default(), None)
            .await
            .expect("mail"),
        250,
    );
    assert_code(
        &conn
            .rcpt("b@corp.example", &RcptParams::default())
            .await
            .expect("rcpt"),
        250,
    );
    let reply = conn
        .data(MESSAGE)
        .await
        .expect_err("a 250 to DATA is no delivery");
    assert!(reply.is_transient(), "{reply}");
    assert_safe(&reply, &peer);
    assert!(peer.messages().is_empty());
    // Through the pool too: no replay, a 4xx.
    let pool = HopPool::default();
    let (reply, _) = transaction(&pool, &peer.hop(), &["c@corp.example"]).await;
    assert_code(&reply, 451);
    assert!(peer.messages().is_empty());
}

#[tokio::test]
async fn a_multi_line_reply_with_mismatched_codes_is_a_4xx() {
    let peer = Peer::start(Script {
        hook: peer::hook(|_, line| {
            line.starts_with("RCPT")
                .then(|| Act::Reply("250-2.1.5 fine\r\n550 5.1.1 not fine\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let mut conn = open(&peer).await;
    conn.mail("a@corp.example", &MailParams::default(), None)
        .await
        .expect("mail");
    let reply = conn
        .rcpt("b@corp.example", &RcptParams::default())
        .await
        .expect_err("mixed codes");
    assert_code(&reply, 451);
    assert_safe(&reply, &peer);
}

#[tokio::test]
async fn a_reply_to_a_command_never_sent_is_a_4xx() {
    // Without PIPELINING the extra reply after MAIL would be taken as the RCPT's.
    let peer = Peer::start(Script {
        pipelining: false,
        hook: peer::hook(|_, line| {
            line.starts_with("MAIL")
                .then(|| Act::Reply("250 2.1.0 ok\r\n250 2.1.5 ok\r\n".into()))
        }),
        ..Script::default()
    })
    .await;
    let mut conn = open(&peer).await;
    conn.mail("a@corp.example", &MailParams::default(), None)
        .await
        .expect("mail");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = conn
        .rcpt("b@corp.example", &RcptParams::default())
        .await
        .expect_err("the hop answered a command never sent");
    assert_code(&reply, 451);
    assert_safe(&reply, &peer);
}

#[tokio::test]
async fn a_354_to_rcpt_or_after_the_dot_is_a_4xx() {
    let peer = Peer::start(Script {
        hook: peer::hook(|ctx, line| match (ctx.connection, line) {
            (1, l) if l.starts_with("RCPT") => Some(Act::Reply("354 go on\r\n".into())),
            (2, ".") => Some(Act::Reply("354 more please\r\n".into())),
            _ => None,
        }),
        ..Script::default()
    })
    .await;
    let mut conn = open(&peer).await;
    conn.mail("a@corp.example", &MailParams::default(), None)
        .await
        .expect("mail");
    let reply = conn
        .rcpt("b@corp.example", &RcptParams::default())
        .await
        .expect_err("354 is no answer to RCPT");
    assert_code(&reply, 451);
    let mut conn = open(&peer).await;
    conn.mail("a@corp.example", &MailParams::default(), None)
        .await
        .expect("mail");
    conn.rcpt("b@corp.example", &RcptParams::default())
        .await
        .expect("rcpt");
    let reply = conn.data(MESSAGE).await.expect_err("354 after the dot");
    assert_code(&reply, 451);
    assert_safe(&reply, &peer);
}

#[tokio::test]
async fn a_hop_refusing_the_session_is_a_4xx_not_its_verdict_on_the_message() {
    let peer = Peer::start(Script {
        greeting: "554 5.7.1 no service for you\r\n".into(),
        ..Script::default()
    })
    .await;
    let reply = Connection::open(&client(), &peer.hop())
        .await
        .err()
        .expect("refused");
    assert_code(&reply, 451);
    assert_safe(&reply, &peer);
}

#[tokio::test]
async fn the_hops_own_verdicts_are_passed_on_as_they_are() {
    let peer = Peer::start(Script {
        hook: peer::hook(|_, line| match line {
            l if l.contains("<gone@") => Some(Act::Reply(
                "550-5.1.1 <gone@corp.example>: Recipient address rejected:\r\n550 5.1.1 User unknown in local recipient table\r\n".into(),
            )),
            "." => Some(Act::Reply("452 4.3.1 Insufficient system storage\r\n".into())),
            _ => None,
        }),
        ..Script::default()
    })
    .await;
    let pool = HopPool::default();
    let (reply, rcpts) =
        transaction(&pool, &peer.hop(), &["gone@corp.example", "b@corp.example"]).await;
    assert_eq!(
        rcpts[0],
        Reply::multiline(
            550,
            "5.1.1",
            vec![
                "<gone@corp.example>: Recipient address rejected:".into(),
                "User unknown in local recipient table".into()
            ]
        )
    );
    assert_eq!(reply.to_string(), "452 4.3.1 Insufficient system storage");
}

// ---- item 8: no internal names, addresses or OS errors in replies ----

#[tokio::test]
async fn an_unreachable_hop_is_a_4xx_that_names_nothing_internal_and_logs_it_all() {
    let log = peer::capture_log();
    let peer = Peer::start(Script::default()).await;
    let hop = peer.hop();
    let mut peer = peer;
    peer.stop().await;
    let reply = Connection::open(&client(), &hop)
        .await
        .err()
        .expect("refused");
    assert_code(&reply, 451);
    assert_eq!(reply.enhanced, "4.4.1");
    assert_safe(&reply, &peer);
    let pool = HopPool::default();
    let reply = pool
        .begin(
            &client(),
            &hop,
            &envelope(&[]),
            "a@corp.example",
            &RcptParams::default(),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(
        reply.to_string(),
        "451 4.4.1 Next hop unavailable, try again later"
    );
    let logged = log.text();
    assert!(
        logged.contains("WARN") && logged.contains(&hop) && logged.contains("os error 111"),
        "the log must name the hop and the OS error:\n{logged}"
    );
}

#[tokio::test]
async fn hop_reply_text_is_sanitised_before_it_is_passed_on() {
    let peer = Peer::start(Script {
        hook: peer::hook(|_, line| {
            line.starts_with("RCPT").then(|| {
                Act::Reply(format!(
                    "550 5.1.1 bad\x1b[31m\rinjected 250 ok {}\r\n",
                    "x".repeat(2000)
                ))
            })
        }),
        ..Script::default()
    })
    .await;
    let mut conn = open(&peer).await;
    conn.mail("a@corp.example", &MailParams::default(), None)
        .await
        .expect("mail");
    let reply = conn
        .rcpt("b@corp.example", &RcptParams::default())
        .await
        .expect("the hop's verdict");
    assert_code(&reply, 550);
    let wire = reply.to_wire();
    for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() <= 512, "reply line of {} bytes", line.len());
        assert!(
            !line[..line.len() - 1].iter().any(|b| b.is_ascii_control()),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

// ---- item 7: XFORWARD to a hop that offers it ----

#[tokio::test]
async fn xforward_tells_an_offering_hop_the_real_client_before_mail() {
    let peer = Peer::start(Script {
        ehlo_extra: vec!["XFORWARD NAME ADDR PROTO HELO".into()],
        ..Script::default()
    })
    .await;
    let pool = HopPool::default();
    let mut env = envelope(&[]);
    env.xforward = Some(XforwardAttrs {
        name: None,
        addr: Some("192.0.2.7".parse().expect("ip")),
        proto: Some("ESMTP".into()),
        helo: Some("client.example".into()),
    });
    let (conn, reply) = pool
        .begin(
            &client(),
            &peer.hop(),
            &env,
            "a@corp.example",
            &RcptParams::default(),
        )
        .await
        .expect("begin");
    assert_code(&reply, 250);
    drop(conn);
    let commands = peer.commands();
    let xforward = commands
        .iter()
        .position(|c| c.starts_with("XFORWARD"))
        .expect("XFORWARD sent");
    let mail = commands
        .iter()
        .position(|c| c.starts_with("MAIL"))
        .expect("MAIL sent");
    assert!(xforward < mail);
    assert_eq!(
        commands[xforward],
        "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PROTO=ESMTP HELO=client.example"
    );
    // A hop that does not offer it is not sent it.
    let plain = Peer::start(Script::default()).await;
    pool.begin(
        &client(),
        &plain.hop(),
        &env,
        "a@corp.example",
        &RcptParams::default(),
    )
    .await
    .expect("begin");
    assert!(!plain.commands().iter().any(|c| c.starts_with("XFORWARD")));
}
