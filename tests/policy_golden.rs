//! The policy tables of DESIGN §3 as a golden file: tests/golden/policy.txt lists rule
//! sets and, for each, sender/recipient pairs with what is known about them and the
//! decision and SMTP reply expected.

use smimegate::pki::address::Address;
use smimegate::policy::{
    Action, Direction, InboundContent, InboundOutcome, Matcher, OutboundFacts, Party, Rule,
    decide_inbound, decide_outbound, select,
};

/// `<>` is the null sender (a bounce), as the relay names it.
fn party(token: &str) -> (Address, bool) {
    if token == "<>" {
        return (
            Address::parse("mailer-daemon@invalid").expect("address"),
            false,
        );
    }
    let managed = token.ends_with('*');
    let address = Address::parse(token.trim_end_matches('*')).expect("address in golden file");
    (address, managed)
}

fn parse_rule(line: &str, id: i64) -> Rule {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.len() == 4 || (words.len() == 5 && words[4] == "disabled"),
        "rule line: {line}"
    );
    let direction = Direction::parse(words[0]).expect("direction");
    Rule {
        id,
        priority: id,
        direction,
        sender: Matcher::parse(words[1]).expect("sender matcher"),
        recipient: Matcher::parse(words[2]).expect("recipient matcher"),
        action: Action::parse(words[3], direction).expect("action"),
        enabled: words.get(4) != Some(&"disabled"),
        comment: String::new(),
    }
}

/// The decision for one case line, written the way the golden file writes it.
fn decide(rules: &[Rule], case: &str) -> String {
    let words: Vec<&str> = case.split_whitespace().collect();
    let (sender, sender_managed) = party(words[1]);
    let (recipient, recipient_managed) = party(words[2]);
    let sender = Party {
        address: &sender,
        managed: sender_managed,
    };
    let recipient = Party {
        address: &recipient,
        managed: recipient_managed,
    };
    let by = |rule: Option<i64>| rule.map_or("default".to_string(), |id| id.to_string());
    match words[0] {
        "out" => {
            let facts = OutboundFacts {
                sender_can_sign: words[3..].contains(&"sender-key"),
                recipient_has_certificate: words[3..].contains(&"recipient-cert"),
                null_sender: words[1] == "<>",
            };
            let d = decide_outbound(rules, sender, recipient, facts);
            let outcome = match &d.outcome {
                Ok(t) => t.as_str().to_string(),
                Err(r) => {
                    assert!(
                        r.text.contains(recipient.address.as_str()),
                        "the reply names the recipient: {r}"
                    );
                    format!("{} {}", r.code, r.enhanced)
                }
            };
            format!("{outcome} by {}", by(d.selection.rule_id))
        }
        "in" => {
            let content = match words[3] {
                "unencrypted" => InboundContent::Unencrypted,
                "decryptable" => InboundContent::Decryptable,
                "undecryptable" => InboundContent::Undecryptable,
                "decryption-failed" => InboundContent::DecryptionFailed,
                other => panic!("unknown content {other}"),
            };
            let selection = select(rules, Direction::Inbound, sender, recipient);
            let outcome = match decide_inbound(&selection, content) {
                InboundOutcome::Deliver => "deliver".to_string(),
                InboundOutcome::DeliverDecrypted => "deliver-decrypted".to_string(),
                InboundOutcome::Reject(r) => format!("{} {}", r.code, r.enhanced),
            };
            format!("{outcome} by {}", by(selection.rule_id))
        }
        other => panic!("unknown case kind {other}"),
    }
}

#[test]
fn policy_tables_match_the_golden_file() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/policy.txt"
    ))
    .expect("golden file");
    let mut rules: Vec<Rule> = Vec::new();
    let mut in_rules = false;
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[rules]" {
            rules.clear();
            in_rules = true;
            continue;
        }
        if line.starts_with("outbound ") || line.starts_with("inbound ") {
            assert!(in_rules, "line {}: rule outside a [rules] block", n + 1);
            let id = rules.len() as i64 + 1;
            rules.push(parse_rule(line, id));
            continue;
        }
        let (case, expected) = line
            .split_once("=>")
            .unwrap_or_else(|| panic!("line {}: no '=>'", n + 1));
        let got = decide(&rules, case);
        cases += 1;
        if got != expected.trim() {
            failures.push(format!(
                "line {}: {case}=> expected '{}', got '{got}'",
                n + 1,
                expected.trim()
            ));
        }
    }
    assert!(cases >= 40, "the golden file lost its cases ({cases})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
