//! Who did something, for the audit log: a name (who) and an origin (from where).
//!
//! | caller | name | origin |
//! |---|---|---|
//! | a CLI command | `cli:USER` (`SUDO_USER`, else `USER`) | `cli` |
//! | the console or the API | `console:ACCOUNT` (`saml:NAMEID` after single sign-on) | `console ADDRESS` (the client's IP) |
//! | a job inside the gateway | `job:NAME` (e.g. `job:lifecycle`) | `job` |

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Actor {
    pub name: String,
    pub origin: String,
}

impl Actor {
    /// The local user running a CLI command.
    pub fn cli() -> Self {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            origin: "cli".into(),
        }
    }

    /// A job the gateway runs by itself, e.g. `Actor::job("lifecycle")` for the
    /// certificate lifecycle (renewal, the end of revoke-pending).
    pub fn job(name: &str) -> Self {
        Actor {
            name: format!("job:{name}"),
            origin: "job".into(),
        }
    }

    /// A console or API user (`account`: the local or SSO account name) connecting
    /// from `client`.
    pub fn console(account: &str, client: IpAddr) -> Self {
        Actor {
            name: format!("console:{account}"),
            origin: format!("console {client}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_says_who_and_from_where() {
        let job = Actor::job("lifecycle");
        assert_eq!(job.name, "job:lifecycle");
        assert_eq!(job.origin, "job");
        let console = Actor::console("alice", "192.0.2.7".parse().expect("ip"));
        assert_eq!(console.name, "console:alice");
        assert_eq!(console.origin, "console 192.0.2.7");
        let cli = Actor::cli();
        assert!(cli.name.starts_with("cli:"), "{}", cli.name);
        assert_eq!(cli.origin, "cli");
    }
}
