//! What a capture asks for ([`CaptureSpec`]) and what the agent allows ([`EngineConfig`]).
//! A request can make a capture stricter than the agent's defaults, never looser than its
//! ceilings.

use std::time::Duration;

use crate::capture::budget::RateLimit;
use crate::limits::{CaptureLimits, LimitRequest};
use crate::redaction::{AdditionOrigin, RedactionAdditions};

/// A request to arm one point.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// The inspection session this capture belongs to; revoking the session ends it.
    pub session_id: String,
    pub point: String,
    /// A CEL expression over the point's fields and `ctx`; the hit is captured when it is true.
    pub condition: Option<String>,
    /// Snapshots to deliver before the capture ends by itself.
    pub max_snapshots: u64,
    /// How long the capture stays armed.
    pub duration: Duration,
    pub rate: RateLimit,
    pub limits: LimitRequest,
    /// Extra keywords and patterns to redact, on top of the agent's.
    pub redaction: RedactionAdditions,
    /// Span fields to carry in `ctx` besides [`crate::context::DEFAULT_SPAN_FIELDS`] and those
    /// the condition reads (`"*"` for every field); see [`crate::context`].
    pub span_fields: Vec<String>,
}

impl CaptureSpec {
    /// Ten snapshots over at most a minute, at the default rate and limits.
    pub fn new(session_id: impl Into<String>, point: impl Into<String>) -> CaptureSpec {
        CaptureSpec {
            session_id: session_id.into(),
            point: point.into(),
            condition: None,
            max_snapshots: 10,
            duration: Duration::from_secs(60),
            rate: RateLimit::DEFAULT,
            limits: LimitRequest::default(),
            redaction: RedactionAdditions::none(AdditionOrigin::Request),
            span_fields: Vec::new(),
        }
    }

    pub fn condition(mut self, condition: impl Into<String>) -> CaptureSpec {
        self.condition = Some(condition.into());
        self
    }

    pub fn max_snapshots(mut self, max: u64) -> CaptureSpec {
        self.max_snapshots = max;
        self
    }

    pub fn duration(mut self, duration: Duration) -> CaptureSpec {
        self.duration = duration;
        self
    }

    pub fn rate(mut self, rate: RateLimit) -> CaptureSpec {
        self.rate = rate;
        self
    }

    pub fn limits(mut self, limits: LimitRequest) -> CaptureSpec {
        self.limits = limits;
        self
    }

    /// Also carries these span fields in `ctx` (`"*"` for all of them) while armed.
    pub fn span_fields<I, S>(mut self, names: I) -> CaptureSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.span_fields.extend(names.into_iter().map(Into::into));
        self
    }

    pub fn redact_keywords<I, S>(mut self, keywords: I) -> CaptureSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redaction
            .keywords
            .extend(keywords.into_iter().map(Into::into));
        self
    }

    pub fn redact_patterns<I, S>(mut self, patterns: I) -> CaptureSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redaction
            .patterns
            .extend(patterns.into_iter().map(Into::into));
        self
    }
}

/// What this agent allows, and how it protects its host.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub service: String,
    pub instance: String,
    /// The loosest limits any capture may have.
    pub limit_ceiling: CaptureLimits,
    /// The fastest rate any capture may have.
    pub rate_ceiling: RateLimit,
    pub max_snapshots_ceiling: u64,
    pub max_duration: Duration,
    /// Captures armed at once across the agent.
    pub max_captures: usize,
    /// Fraction of one core that capture work may use over a sliding second.
    pub cpu_budget: f64,
    /// Snapshots waiting for the receiver, per capture; past it they are dropped and counted.
    pub queue_capacity: usize,
    /// Keywords and patterns this agent always redacts, on top of the built-in ones.
    pub redaction: RedactionAdditions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            service: default_service_name(),
            instance: default_instance_id(),
            limit_ceiling: CaptureLimits::DEFAULT_CEILING,
            rate_ceiling: RateLimit::DEFAULT_CEILING,
            max_snapshots_ceiling: 10_000,
            max_duration: Duration::from_secs(30 * 60),
            max_captures: 64,
            cpu_budget: 0.01,
            queue_capacity: 64,
            redaction: RedactionAdditions::none(AdditionOrigin::Config),
        }
    }
}

/// The executable's file name.
fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `hostname-pid`: unique per process on a fleet, readable in a listing.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}
