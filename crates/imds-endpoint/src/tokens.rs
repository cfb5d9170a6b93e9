//! IMDSv2 session tokens: opaque random strings, each bound to the client address it was
//! issued to and valid for the TTL it was asked with. Pure: the clock and the random bytes are
//! arguments.
//!
//! Invariant: a client holds at most `per_client` live tokens (a new one pushes out its
//! oldest), so memory is bounded by clients × `per_client`; a token is valid only from the
//! address it was issued to and before its expiry.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

/// Shortest and longest token TTL, in seconds (EC2's).
pub const MIN_TTL: u32 = 1;
pub const MAX_TTL: u32 = 21_600;

/// What checking a presented token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Expired,
    /// Never issued to this client, or pushed out by newer ones.
    Unknown,
}

#[derive(Debug)]
pub struct Tokens {
    per_client: usize,
    clients: HashMap<Ipv4Addr, VecDeque<(String, u64)>>,
}

impl Tokens {
    pub fn new(per_client: usize) -> Tokens {
        Tokens {
            per_client: per_client.max(1),
            clients: HashMap::new(),
        }
    }

    /// A new token for `client`, valid `ttl_s` seconds from `now` (milliseconds).
    pub fn issue(&mut self, now: u64, client: Ipv4Addr, ttl_s: u32, random: [u8; 32]) -> String {
        let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let held = self.clients.entry(client).or_default();
        held.retain(|(_, expires)| *expires > now);
        while held.len() >= self.per_client {
            held.pop_front();
        }
        held.push_back((token.clone(), now + u64::from(ttl_s) * 1000));
        token
    }

    pub fn check(&self, now: u64, client: Ipv4Addr, token: &[u8]) -> TokenCheck {
        let found = self.clients.get(&client).and_then(|held| {
            held.iter()
                .find(|(issued, _)| issued.as_bytes() == token)
                .map(|(_, expires)| *expires)
        });
        match found {
            Some(expires) if expires > now => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }

    /// Drops expired tokens and clients left with none.
    pub fn sweep(&mut self, now: u64) {
        self.clients.retain(|_, held| {
            held.retain(|(_, expires)| *expires > now);
            !held.is_empty()
        });
    }

    /// Live tokens held, all clients together.
    pub fn count(&self) -> usize {
        self.clients.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 50);
    const B: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 51);

    #[test]
    fn a_token_is_good_for_its_client_until_it_expires() {
        let mut tokens = Tokens::new(4);
        let token = tokens.issue(1_000, A, 2, [7; 32]);
        assert_eq!(token.len(), 64);
        assert_eq!(tokens.check(2_999, A, token.as_bytes()), TokenCheck::Valid);
        assert_eq!(
            tokens.check(3_000, A, token.as_bytes()),
            TokenCheck::Expired
        );
        assert_eq!(
            tokens.check(1_000, B, token.as_bytes()),
            TokenCheck::Unknown
        );
        assert_eq!(tokens.check(1_000, A, b"guess"), TokenCheck::Unknown);
        tokens.sweep(3_000);
        assert_eq!(tokens.count(), 0);
    }

    #[test]
    fn a_client_holds_a_bounded_number_of_tokens() {
        let mut tokens = Tokens::new(3);
        let first = tokens.issue(0, A, 60, [1; 32]);
        for byte in 2..=10 {
            tokens.issue(0, A, 60, [byte; 32]);
        }
        assert_eq!(tokens.count(), 3);
        assert_eq!(tokens.check(0, A, first.as_bytes()), TokenCheck::Unknown);
    }
}
