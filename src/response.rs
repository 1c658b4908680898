//! Automatic IP blocking, guarded. Firewalls pull the block set (`response.block_set`, the
//! `blocked_ips` reference set by default) as a plain list from `GET /api/v1/blocklist.txt`
//! (an external dynamic list), with a read-only token of its own.
//!
//! Two things decide to block an offense's address: a rule's `vigil.offense.add_to_set` into
//! the block set, and the magnitude policy (`response.min_magnitude`: an offense indexed by an
//! address whose magnitude reaches it). Every decision passes the same guards, in this order,
//! and every outcome is kept in the store's response audit (`GET /api/v1/response/decisions`)
//! and counted (`vigil_response_decisions_total{decision}`):
//!
//! 1. `not_an_address`: the index value is not an IP address (a user, an API key).
//! 2. `internal`: the address is in an internal zone of `[[context.networks]]` (blocking our
//!    own hosts would cut off what the analyst needs to investigate).
//! 3. `allow_listed`: the address is in `response.allow_list` (partners, scanners we pay for).
//! 4. `rate_limited`: `response.max_new_blocks_per_minute` new blocks were already made in the
//!    last minute (a rule gone wrong cannot block the internet).
//! 5. `dry_run`: `response.dry_run` is on: the decision is recorded, nothing is blocked.
//! 6. `blocked`: added to the block set with `response.block_ttl_secs` (or the rule's TTL);
//!    the entry expires by itself.
//!
//! An address already in the block set is not decided again (no audit flood from an offense
//! that keeps growing). When a block's TTL passes, the engine records an `unblocked` decision
//! and sends `ip.unblocked` to the webhooks (`Pipeline::end_expired_blocks`).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vigil_correlate::net::{Cidr, PrefixSet};

/// `[response]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    /// The reference set firewalls pull (must be an IP set).
    pub block_set: String,
    /// Block the address an offense is indexed by once its magnitude reaches this (0: off;
    /// only rules' `add_to_set` actions block).
    pub min_magnitude: u8,
    /// How long a block made by the magnitude policy lasts, in seconds.
    pub block_ttl_secs: u64,
    /// Record decisions without blocking.
    pub dry_run: bool,
    /// Most new blocks in any minute; further decisions are refused (`rate_limited`).
    pub max_new_blocks_per_minute: u32,
    /// Addresses and networks never blocked.
    pub allow_list: Vec<String>,
    /// A token that can read `/api/v1/blocklist.txt` and nothing else (for firewalls).
    pub blocklist_token: Option<String>,
    /// Signed webhooks (`[[response.webhooks]]`): offense and blocking events pushed to SOAR
    /// tools and firewall managers (see `webhook.rs`).
    pub webhooks: Vec<crate::webhook::WebhookConfig>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            block_set: "blocked_ips".into(),
            min_magnitude: 0,
            block_ttl_secs: 86_400,
            dry_run: false,
            max_new_blocks_per_minute: 20,
            allow_list: Vec::new(),
            blocklist_token: None,
            webhooks: Vec::new(),
        }
    }
}

/// What the guards decided for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Added to the block set.
    Blocked,
    /// Would have been blocked; `dry_run` is on.
    DryRun,
    /// Not an IP address.
    NotAnAddress,
    /// In an internal zone.
    Internal,
    /// In the allow list.
    AllowListed,
    /// Too many new blocks in the last minute.
    RateLimited,
}

impl Decision {
    /// The label used in metrics and the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Blocked => "blocked",
            Decision::DryRun => "dry_run",
            Decision::NotAnAddress => "not_an_address",
            Decision::Internal => "internal",
            Decision::AllowListed => "allow_listed",
            Decision::RateLimited => "rate_limited",
        }
    }
}

/// The guards, with the recent-blocks window of the rate cap.
#[derive(Debug)]
pub struct BlockGuard {
    /// The block set's name.
    pub block_set: String,
    /// Magnitude policy threshold (0: off).
    pub min_magnitude: u8,
    /// TTL of policy blocks.
    pub ttl: chrono::Duration,
    dry_run: bool,
    cap: usize,
    allow: PrefixSet,
    recent: VecDeque<Instant>,
}

impl BlockGuard {
    /// Guards from config; an unreadable allow-list entry is an error naming it.
    pub fn new(config: &ResponseConfig) -> Result<BlockGuard, String> {
        for w in &config.webhooks {
            crate::webhook::validate(w)?;
        }
        let mut nets = Vec::with_capacity(config.allow_list.len());
        for a in &config.allow_list {
            nets.push(Cidr::parse(a).map_err(|e| format!("response.allow_list {a:?}: {e}"))?);
        }
        Ok(BlockGuard {
            block_set: config.block_set.clone(),
            min_magnitude: config.min_magnitude,
            ttl: chrono::Duration::seconds(
                i64::try_from(config.block_ttl_secs).unwrap_or(i64::MAX / 1000),
            ),
            dry_run: config.dry_run,
            cap: config.max_new_blocks_per_minute as usize,
            allow: PrefixSet::new(nets),
            recent: VecDeque::new(),
        })
    }

    /// Decides for `value` (an offense's index value); `internal` tells whether an address is
    /// in an internal zone. A `Blocked` decision counts against the rate cap.
    pub fn decide(
        &mut self,
        value: &str,
        internal: impl Fn(IpAddr) -> bool,
        now: Instant,
    ) -> Decision {
        let Ok(ip) = value.parse::<IpAddr>() else {
            return Decision::NotAnAddress;
        };
        if internal(ip) {
            return Decision::Internal;
        }
        if self.allow.contains(ip) {
            return Decision::AllowListed;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.cap {
            return Decision::RateLimited;
        }
        if self.dry_run {
            return Decision::DryRun;
        }
        self.recent.push_back(now);
        Decision::Blocked
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn guard(cfg: ResponseConfig) -> BlockGuard {
        BlockGuard::new(&cfg).unwrap()
    }

    #[test]
    fn internal_allow_listed_and_non_addresses_are_never_blocked() {
        let mut g = guard(ResponseConfig {
            allow_list: vec!["198.51.100.0/24".into()],
            ..Default::default()
        });
        let internal = |ip: IpAddr| ip.to_string().starts_with("10.");
        let now = Instant::now();
        assert_eq!(g.decide("10.1.2.3", internal, now), Decision::Internal);
        assert_eq!(
            g.decide("198.51.100.7", internal, now),
            Decision::AllowListed
        );
        assert_eq!(g.decide("alice", internal, now), Decision::NotAnAddress);
        assert_eq!(g.decide("203.0.113.9", internal, now), Decision::Blocked);
        assert!(BlockGuard::new(&ResponseConfig {
            allow_list: vec!["not a network".into()],
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn the_rate_cap_holds_per_minute_and_dry_run_blocks_nothing() {
        let mut g = guard(ResponseConfig {
            max_new_blocks_per_minute: 2,
            ..Default::default()
        });
        let none = |_: IpAddr| false;
        let t0 = Instant::now();
        assert_eq!(g.decide("203.0.113.1", none, t0), Decision::Blocked);
        assert_eq!(g.decide("203.0.113.2", none, t0), Decision::Blocked);
        assert_eq!(g.decide("203.0.113.3", none, t0), Decision::RateLimited);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(g.decide("203.0.113.3", none, later), Decision::Blocked);
        let mut dry = guard(ResponseConfig {
            dry_run: true,
            ..Default::default()
        });
        assert_eq!(dry.decide("203.0.113.1", none, t0), Decision::DryRun);
        assert_eq!(
            dry.decide("203.0.113.1", none, t0),
            Decision::DryRun,
            "not counted"
        );
    }
}
