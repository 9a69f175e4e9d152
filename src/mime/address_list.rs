//! Address lists of header fields (From, To, Cc; RFC 5322 §3.4 with the obsolete
//! forms of §4.4): the addr-specs a mail client would show, read by the grammar, not
//! by searching for '@'. The signature verdict binds a signer to the one address of
//! From, so a From that a client reads differently from us, or cannot read, must not
//! give an address at all. Pure; linear in the input.

/// Why a header value is not an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressListError {
    #[error("unbalanced quotes, comment or brackets")]
    Unbalanced,
    #[error("not an address list: {0}")]
    Syntax(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// atext and dots: atoms, dot-atoms and obsolete phrases.
    Word(String),
    /// The content of a quoted string, escapes removed.
    Quoted(String),
    /// `[...]`, brackets included.
    Literal(String),
    Special(char),
}

/// Comments may nest (RFC 5322 §3.2.2); deeper than this is hostile.
const MAX_COMMENT_DEPTH: usize = 32;

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn tokenize(value: &str) -> Result<Vec<Token>, AddressListError> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next().ok_or(AddressListError::Unbalanced)? {
                        '\\' => {
                            chars.next().ok_or(AddressListError::Unbalanced)?;
                        }
                        '(' => {
                            depth += 1;
                            if depth > MAX_COMMENT_DEPTH {
                                return Err(AddressListError::Syntax("comments nested too deep"));
                            }
                        }
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            '"' => {
                let mut text = String::new();
                loop {
                    match chars.next().ok_or(AddressListError::Unbalanced)? {
                        // A line break is folding, never content, escaped or not
                        // (RFC 5322 §3.2.1 quoted-pair takes VCHAR and WSP only).
                        '\\' => match chars.next().ok_or(AddressListError::Unbalanced)? {
                            '\r' | '\n' => {}
                            escaped => text.push(escaped),
                        },
                        '"' => break,
                        '\r' | '\n' => {}
                        other => text.push(other),
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            '[' => {
                let mut text = String::from("[");
                loop {
                    match chars.next().ok_or(AddressListError::Unbalanced)? {
                        // Kept escaped: the literal is the address as written.
                        '\\' => {
                            text.push('\\');
                            text.push(chars.next().ok_or(AddressListError::Unbalanced)?);
                        }
                        ']' => break,
                        '[' => return Err(AddressListError::Syntax("'[' inside a domain literal")),
                        other => text.push(other),
                    }
                }
                text.push(']');
                tokens.push(Token::Literal(text));
            }
            ')' | ']' => return Err(AddressListError::Unbalanced),
            '<' | '>' | ':' | ';' | '@' | ',' | '\\' => tokens.push(Token::Special(c)),
            c if is_atext(c) || c == '.' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if !(is_atext(next) || next == '.') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            _ => return Err(AddressListError::Syntax("character not allowed here")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn at_special(&self, c: char) -> bool {
        self.peek() == Some(&Token::Special(c))
    }

    /// Words and quoted strings up to the next special: a display name or a local part.
    fn phrase(&mut self) -> Vec<Token> {
        let mut out = Vec::new();
        while let Some(t @ (Token::Word(_) | Token::Quoted(_))) = self.peek() {
            out.push(t.clone());
            self.at += 1;
        }
        out
    }

    /// addr-spec after its local part: `@` domain.
    fn domain(&mut self) -> Result<String, AddressListError> {
        if self.next() != Some(Token::Special('@')) {
            return Err(AddressListError::Syntax("expected '@'"));
        }
        match self.next() {
            Some(Token::Word(w)) if valid_dot_atom(&w) => Ok(w.to_ascii_lowercase()),
            Some(Token::Literal(l)) => Ok(l),
            _ => Err(AddressListError::Syntax("no domain after '@'")),
        }
    }

    /// `<[route:]addr-spec>` (obs-route accepted and dropped, RFC 5322 §4.4).
    fn angle_addr(&mut self) -> Result<String, AddressListError> {
        self.next(); // '<'
        if self.at_special('@') {
            self.route()?;
        }
        let local = local_part(&self.phrase())?;
        let domain = self.domain()?;
        if self.next() != Some(Token::Special('>')) {
            return Err(AddressListError::Syntax("expected '>'"));
        }
        Ok(format!("{local}@{domain}"))
    }

    /// obs-route: `@domain *("," ["@domain"]) ":"` and nothing else, so no address can
    /// hide in it.
    fn route(&mut self) -> Result<(), AddressListError> {
        let bad = AddressListError::Syntax("malformed route");
        loop {
            if self.next() != Some(Token::Special('@')) {
                return Err(bad);
            }
            match self.next() {
                Some(Token::Word(w)) if valid_dot_atom(&w) => {}
                Some(Token::Literal(_)) => {}
                _ => return Err(bad),
            }
            match self.next() {
                Some(Token::Special(':')) => return Ok(()),
                Some(Token::Special(',')) => {
                    while self.at_special(',') {
                        self.next();
                    }
                    if self.at_special(':') {
                        self.next();
                        return Ok(());
                    }
                }
                _ => return Err(bad),
            }
        }
    }

    /// One mailbox: name-addr or addr-spec.
    fn mailbox(&mut self) -> Result<String, AddressListError> {
        let words = self.phrase();
        if self.at_special('<') {
            return self.angle_addr();
        }
        let local = local_part(&words)?;
        self.domain().map(|d| format!("{local}@{d}"))
    }

    /// One address: a mailbox, or a group of mailboxes.
    fn address(&mut self, out: &mut Vec<String>) -> Result<(), AddressListError> {
        let start = self.at;
        let words = self.phrase();
        if !self.at_special(':') {
            self.at = start;
            out.push(self.mailbox()?);
            return Ok(());
        }
        if words.is_empty() {
            return Err(AddressListError::Syntax("group without a name"));
        }
        self.next(); // ':'
        loop {
            match self.peek() {
                Some(Token::Special(';')) => {
                    self.next();
                    return Ok(());
                }
                Some(Token::Special(',')) => {
                    self.next();
                }
                None => return Err(AddressListError::Syntax("group without ';'")),
                Some(_) => out.push(self.mailbox()?),
            }
        }
    }
}

fn valid_dot_atom(word: &str) -> bool {
    !word.is_empty() && word.split('.').all(|part| !part.is_empty())
}

/// A local part from its tokens: one dot-atom, or one quoted string (kept unquoted
/// when its content is a dot-atom, quoted otherwise).
fn local_part(tokens: &[Token]) -> Result<String, AddressListError> {
    match tokens {
        [Token::Word(w)] if valid_dot_atom(w) => Ok(w.clone()),
        [Token::Quoted(q)] if valid_dot_atom(q) && q.chars().all(|c| is_atext(c) || c == '.') => {
            Ok(q.clone())
        }
        [Token::Quoted(q)] => Ok(format!(
            "\"{}\"",
            q.replace('\\', "\\\\").replace('"', "\\\"")
        )),
        [] => Err(AddressListError::Syntax("no address")),
        _ => Err(AddressListError::Syntax("a local part of several words")),
    }
}

/// Every addr-spec of an address-list value, in order; an error when any part of it
/// is not an address (empty list elements are allowed, RFC 5322 §4.4).
pub fn parse_address_list(value: &str) -> Result<Vec<String>, AddressListError> {
    let mut parser = Parser {
        tokens: tokenize(value)?,
        at: 0,
    };
    let mut out = Vec::new();
    while parser.peek().is_some() {
        if parser.at_special(',') {
            parser.next();
            continue;
        }
        parser.address(&mut out)?;
        match parser.next() {
            None | Some(Token::Special(',')) => {}
            Some(_) => return Err(AddressListError::Syntax("expected ',' between addresses")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(value: &str) -> Vec<String> {
        parse_address_list(value).unwrap_or_else(|e| panic!("{value:?}: {e}"))
    }

    #[test]
    fn the_forms_clients_write_are_read() {
        assert_eq!(list("bob@partner.example"), ["bob@partner.example"]);
        assert_eq!(
            list("Bob Smith <bob@Partner.Example>"),
            ["bob@partner.example"]
        );
        assert_eq!(
            list("\"Smith, Bob\" <bob@partner.example>, carol@x.example"),
            ["bob@partner.example", "carol@x.example"]
        );
        assert_eq!(
            list("bob@partner.example (Bob (the) Smith)"),
            ["bob@partner.example"]
        );
        assert_eq!(
            list("team: a@x.example, B <b@x.example>;, d@x.example"),
            ["a@x.example", "b@x.example", "d@x.example"]
        );
        assert_eq!(list("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            list("<@relay.example:bob@partner.example>"),
            ["bob@partner.example"]
        );
        assert_eq!(
            list("<@a.example,,@b.example:bob@partner.example>"),
            ["bob@partner.example"]
        );
        assert_eq!(list("\"bob\"@partner.example"), ["bob@partner.example"]);
        assert_eq!(list("\"b c\"@partner.example"), ["\"b c\"@partner.example"]);
        assert_eq!(
            list("Dr. Bob <bob@partner.example>"),
            ["bob@partner.example"]
        );
    }

    #[test]
    fn display_names_that_look_like_addresses_do_not_count() {
        assert_eq!(
            list("\"bob@partner.example\" <mallory@evil.example>"),
            ["mallory@evil.example"]
        );
        // An address in front of an angle address: clients disagree on which one
        // is meant, so it is no address list at all.
        assert!(parse_address_list("bob@partner.example <mallory@evil.example>").is_err());
    }

    #[test]
    fn what_is_not_an_address_list_is_an_error() {
        for bad in [
            "bob",
            "bob@",
            "@partner.example",
            "<bob@partner.example",
            "\"bob@partner.example",
            "(bob@partner.example",
            "bob@partner.example>",
            "a b@partner.example",
            "bob@partner..example",
            "bob@partner.example carol@x.example",
            "group: a@x.example",
            ": a@x.example;",
            "bob@@partner.example",
            "<@bank.example,ceo@bank.example:bob@partner.example>",
            "<@bank.example bob@partner.example>",
        ] {
            assert!(parse_address_list(bad).is_err(), "accepted {bad:?}");
        }
    }
}
