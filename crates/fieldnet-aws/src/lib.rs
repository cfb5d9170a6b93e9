//! fieldnet-aws: the handful of AWS calls the fieldnet hub makes, without the AWS SDK.
//!
//! Requests go out over reqwest and are signed with SigV4 by `aws-sigv4`, the SDK's own signer;
//! credentials come from `aws-config`'s default provider chain (environment, shared files, web
//! identity, ECS, EC2 instance metadata) or are fixed for tests. [`Client::query`] speaks the
//! query protocol (EC2, CloudWatch, STS) and [`Client::rest_xml`] the REST-XML one (Route53);
//! [`AwsApi`] names the calls fieldnet makes, so decision logic can be tested against a double
//! and `--dry-run` can swap in [`DryRun`]. `testing` (feature `testing`) starts a real moto server and a
//! fault-injecting proxy for tests of this crate and of its users.
//!
//! Invariants:
//! - Every attempt is signed afresh (new timestamp, current credentials) and bounded by
//!   [`ClientConfig::attempt_timeout`].
//! - Only errors for which [`AwsError::is_retryable`] holds (throttling, 429 and 5xx, transport
//!   failures, timeouts) are retried, with full-jitter exponential backoff capped by
//!   [`ClientConfig::max_backoff`], at most [`ClientConfig::max_attempts`] attempts in all; the
//!   last error is returned as it came.
//! - Errors are parsed by local element names, so EC2's `<Response><Errors>`, the query
//!   services' `<ErrorResponse>` and Route53's namespaced `<ErrorResponse>` all give an
//!   [`AwsError::Api`] with the AWS error code; a body that is not XML still gives one, with
//!   code `HTTP<status>`.
//! - With [`ClientConfig::endpoint`] set, every service is reached at that one URL and nothing
//!   else is contacted for the calls themselves (the credential chain of
//!   [`Client::from_environment`] may still look at instance metadata).

mod api;
mod client;
mod cloudwatch;
mod ec2;
mod error;
mod route53;
mod service;
mod sts;
#[cfg(feature = "testing")]
pub mod testing;
mod xml;

pub use api::{AwsApi, DryRun};
pub use client::{
    Client, ClientConfig, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BASE_BACKOFF, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF,
};
pub use cloudwatch::{MAX_METRIC_DATA_PER_CALL, MetricDatum};
pub use ec2::{RouteEntry, RouteTarget};
pub use error::AwsError;
pub use route53::HealthCheckStatus;
pub use service::Service;
pub use sts::{AssumeRole, Session, format_time, parse_time, sts_name};
