//! STS AssumeRole on the wire: the request's parameters and the session in the answer.
//! Invariant: a session is returned only with all four of its parts (key, secret, token and an
//! expiry that reads as a time); the secret and token never appear in `Debug` output.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use crate::client::Client;
use crate::error::AwsError;
use crate::service::Service;
use crate::xml;

/// What to ask STS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    /// `RoleSessionName`: 2–64 of `[\w+=,.@-]`, shown in CloudTrail.
    pub session_name: String,
    /// `SourceIdentity`, kept for the whole session and by any role it assumes; IAM policies
    /// can deny by it.
    pub source_identity: Option<String>,
    pub duration: Duration,
}

/// Temporary credentials from STS.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working.
    pub expiration: SystemTime,
}

impl fmt::Debug for Session {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &format_time(self.expiration))
            .finish_non_exhaustive()
    }
}

const ACTION: &str = "AssumeRole";

impl Client {
    /// STS AssumeRole with this client's own credentials.
    pub async fn assume_role(&self, request: &AssumeRole) -> Result<Session, AwsError> {
        let body = self
            .query(Service::Sts, ACTION, &assume_role_params(request))
            .await?;
        parse_assume_role(&body).map_err(|message| AwsError::Parse {
            service: Service::Sts.name(),
            action: ACTION.to_owned(),
            message,
        })
    }
}

pub(crate) fn assume_role_params(request: &AssumeRole) -> Vec<(String, String)> {
    let mut params = vec![
        ("RoleArn".to_owned(), request.role_arn.clone()),
        ("RoleSessionName".to_owned(), request.session_name.clone()),
        (
            "DurationSeconds".to_owned(),
            request.duration.as_secs().to_string(),
        ),
    ];
    if let Some(identity) = &request.source_identity {
        params.push(("SourceIdentity".to_owned(), identity.clone()));
    }
    params
}

pub(crate) fn parse_assume_role(body: &str) -> Result<Session, String> {
    let document = roxmltree::Document::parse(body).map_err(|error| format!("not XML: {error}"))?;
    let credentials = xml::descendant(document.root_element(), "Credentials")
        .ok_or("no Credentials in the answer")?;
    let part = |name: &str| {
        xml::child_text(credentials, name).ok_or_else(|| format!("no {name} in the Credentials"))
    };
    let expiration = part("Expiration")?;
    Ok(Session {
        access_key_id: part("AccessKeyId")?,
        secret_access_key: part("SecretAccessKey")?,
        session_token: part("SessionToken")?,
        expiration: parse_time(&expiration)
            .ok_or_else(|| format!("Expiration {expiration:?} is not an ISO 8601 time"))?,
    })
}

/// `2026-12-05T21:00:00Z` (fractions of a second allowed) as a time.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    DateTime::from_str(text, Format::DateTime)
        .ok()
        .and_then(|time| SystemTime::try_from(time).ok())
}

/// A time as AWS writes it, to the second: `2026-12-05T21:00:00Z`.
pub fn format_time(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DateTime::from_secs(seconds as i64)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// Characters STS accepts in a RoleSessionName or SourceIdentity (`[\w+=,.@-]`); anything
/// else becomes `-`, and the result is cut to `max` characters.
pub fn sts_name(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>camera-1</SourceIdentity>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/cams/camera-1</Arn></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>very-secret</SecretAccessKey>
      <SessionToken>token-text</SessionToken>
      <Expiration>2026-12-05T21:00:00.123Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

    #[test]
    fn an_answer_reads_as_a_session_whose_secrets_stay_out_of_debug() {
        let session = parse_assume_role(ANSWER).unwrap();
        assert_eq!(session.access_key_id, "ASIAEXAMPLE");
        assert_eq!(session.session_token, "token-text");
        assert_eq!(format_time(session.expiration), "2026-12-05T21:00:00Z");
        let debug = format!("{session:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("token-text"));
        assert!(
            parse_assume_role(&ANSWER.replace("<SessionToken>token-text</SessionToken>", ""))
                .is_err()
        );
        assert!(parse_assume_role(&ANSWER.replace("2026-12-05T21:00:00.123Z", "soon")).is_err());
    }

    #[test]
    fn parameters_and_names() {
        let params = assume_role_params(&AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/cams".to_owned(),
            session_name: "camera-1".to_owned(),
            source_identity: Some("camera-1".to_owned()),
            duration: Duration::from_secs(3600),
        });
        assert_eq!(params[2], ("DurationSeconds".to_owned(), "3600".to_owned()));
        assert_eq!(params[3].0, "SourceIdentity");
        assert_eq!(sts_name("till 1/front:äb", 64), "till-1-front--b");
        assert_eq!(sts_name(&"x".repeat(80), 64).len(), 64);
    }
}
