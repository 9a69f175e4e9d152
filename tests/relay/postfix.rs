//! Postfix end to end: a throwaway Postfix instance (Debian's package, our own
//! configuration directory and queue, loopback ports) relays through smimegate, as
//! an organisation's internal MTA would. A refusal by an enforcing rule becomes a
//! real RFC 3464 bounce from Postfix, which reaches the sender's mailbox.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::{Client, Gateway, free_port, mailbox, openssl_verify};
use super::{ALICE, message};

struct Postfix {
    config: PathBuf,
    port: u16,
}

impl Postfix {
    fn start(dir: &Path, relayhost_port: u16) -> Postfix {
        Postfix::start_with(dir, relayhost_port, "")
    }

    /// A Postfix with `extra` lines appended to its main.cf.
    fn start_with(dir: &Path, relayhost_port: u16, extra: &str) -> Postfix {
        let config = dir.join("postfix");
        let queue = dir.join("postfix-queue");
        let data = dir.join("postfix-data");
        use std::os::unix::fs::PermissionsExt;
        for d in [&config, &queue, &data] {
            std::fs::create_dir_all(d).expect("postfix dirs");
        }
        // Postfix's daemons run as the postfix user: they must reach the queue, and
        // own their data directory.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postfix {}", data.display());
        let port = free_port();
        std::fs::write(
            config.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 command_directory = /usr/sbin\n\
                 daemon_directory = /usr/lib/postfix/sbin\n\
                 meta_directory = /etc/postfix\n\
                 shlib_directory = /usr/lib/postfix\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = mta.corp.example\n\
                 mydomain = corp.example\n\
                 myorigin = $mydomain\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 relayhost = [127.0.0.1]:{relayhost_port}\n\
                 smtp_tls_security_level = may\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 maillog_file = {log}\n\
                 maillog_file_prefixes = {dir}\n\
                 delay_warning_time = 0\n\
                 smtp_connection_cache_on_demand = no\n{extra}",
                queue = queue.display(),
                data = data.display(),
                log = dir.join("postfix.log").display(),
                dir = dir.display(),
            ),
        )
        .expect("main.cf");
        let services = [
            format!("127.0.0.1:{port} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "tlsmgr unix - - n 1000? 1 tlsmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "local unix - n n - - local".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        std::fs::write(config.join("master.cf"), services.join("\n") + "\n").expect("master.cf");
        let postfix = Postfix { config, port };
        let out = postfix.run(&["start"]);
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postfix did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        postfix
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("postfix")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run postfix (./scripts/test installs it)")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}

/// Waits until `sink` holds `count` messages.
fn wait_for(
    gw: &Gateway,
    sink: &super::harness::Sink,
    count: usize,
    what: &str,
) -> Vec<super::harness::Delivered> {
    let start = Instant::now();
    loop {
        let messages = sink.messages();
        if messages.len() >= count {
            return messages;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {} message(s) after 60 s; postfix log:\n{}\ngateway log:\n{}",
            messages.len(),
            std::fs::read_to_string(gw.data().join("postfix.log")).unwrap_or_default(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postfix_relays_through_the_gateway_and_bounces_what_a_rule_refuses() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let postfix = Postfix::start(gw.data(), gw.submission);
    let mut client = Client::connect(postfix.port);

    // Signed on its way out, through Postfix.
    let t = client.send(
        ALICE,
        &["carol@other.example"],
        &message(
            ALICE,
            "carol@other.example",
            "via-postfix",
            "Signed by the gateway.",
        ),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250), "postfix accepted");
    let delivered = wait_for(&gw, &gw.smarthost, 1, "the signed message");
    assert!(delivered[0].text().contains("Subject: via-postfix"));
    let content = openssl_verify(gw.data(), &delivered[0], &gw.ca_pem(ALICE));
    assert!(String::from_utf8_lossy(&content).contains("Signed by the gateway."));

    // Refused by encrypt-enforced: Postfix bounces to Alice; the bounce comes back in
    // through the gateway to her mailbox (the internal server) and carries our reason.
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(
            ALICE,
            "bob@partner.example",
            "must-encrypt",
            "No certificate for Bob.",
        ),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250), "postfix queues it");
    let delivered = wait_for(&gw, &gw.internal, 1, "the bounce");
    let bounce = &delivered[0];
    let text = bounce.text();
    assert!(
        bounce.envelope_to.iter().any(|e| e.contains(ALICE)),
        "{:?}",
        bounce.envelope_to
    );
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("Status: 5.7.1"), "{text}");
    assert!(text.contains("no valid certificate is known"), "{text}");
    assert!(
        text.contains("X-Smimegate: not-encrypted"),
        "the bounce came in through the gateway: {text}"
    );
    let log = gw.cli(&["log", "--status", "rejected"]);
    assert!(log.contains("bob@partner.example"), "{log}");
}

#[test]
fn a_recipient_split_off_with_452_goes_out_promptly_with_the_documented_settings() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let bob = super::harness::Partner::new(gw.data(), "bob@partner.example");
    gw.introduce(&bob, ALICE);
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-optional",
    );
    // docs/deployment.md: what makes Postfix send a split-off recipient at once.
    let postfix = Postfix::start_with(gw.data(), gw.submission, SPLIT_SETTINGS);
    let mut client = Client::connect(postfix.port);
    let started = Instant::now();
    // bob (a certificate: signed and encrypted) and carol (none: signed only) need two
    // transactions; the gateway answers carol's RCPT with 452 4.5.3.
    let t = client.send(
        ALICE,
        &["bob@partner.example", "carol@other.example"],
        &message(ALICE, "bob@partner.example", "split", "For both."),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250), "postfix accepted");
    let delivered = wait_for(&gw, &gw.smarthost, 2, "both recipients");
    let took = started.elapsed();
    let to: Vec<String> = delivered
        .iter()
        .flat_map(|d| d.envelope_to.clone())
        .collect();
    assert!(
        to.iter().any(|t| t.contains("bob")) && to.iter().any(|t| t.contains("carol")),
        "{to:?}"
    );
    assert!(
        took < Duration::from_secs(45),
        "the split-off recipient took {took:?}"
    );
}

/// The main.cf lines docs/deployment.md recommends for the internal Postfix.
const SPLIT_SETTINGS: &str =
    "minimal_backoff_time = 10s\nmaximal_backoff_time = 300s\nqueue_run_delay = 10s\n";
