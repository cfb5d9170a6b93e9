//! The error of every call, how error bodies are read, and which errors are worth retrying.
//! Invariant: [`AwsError::is_retryable`] holds only for throttling, 429 and 5xx answers,
//! transport failures and timeouts, so a retry never repeats a request AWS refused on its
//! merits (a missing route table, a bad signature, a validation error).

use std::time::Duration;

use crate::xml;

/// A failed AWS call.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// AWS answered with an error status.
    #[error("{service} {action}: {code}: {message} (HTTP {status})")]
    Api {
        service: &'static str,
        action: String,
        status: u16,
        /// The AWS error code (`Throttling`, `InvalidRouteTableID.NotFound`...), or
        /// `HTTP<status>` when the body carried none.
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The request could not be sent or the answer not received.
    #[error("{service} {action}: transport: {message}")]
    Transport {
        service: &'static str,
        action: String,
        message: String,
    },
    /// One attempt got no complete answer within the attempt timeout.
    #[error("{service} {action}: no answer within {after:?}")]
    Timeout {
        service: &'static str,
        action: String,
        after: Duration,
    },
    /// No credentials could be had, or the request could not be signed with them.
    #[error("AWS credentials: {0}")]
    Credentials(String),
    /// AWS answered with success but the body was not what the call expects.
    #[error("{service} {action}: unexpected response: {message}")]
    Parse {
        service: &'static str,
        action: String,
        message: String,
    },
}

/// Error codes AWS uses to ask for a slower pace; the SDK's list, plus the EC2 and Route53
/// spellings. `LimitExceededException` is left out: Route53 and others use it for hard quotas.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes of failures on AWS's side that a later attempt may not meet.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// HTTP statuses worth another attempt whatever the body says.
const RETRYABLE_STATUSES: &[u16] = &[429, 500, 502, 503, 504];

impl AwsError {
    /// Whether another attempt of the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AwsError::Api { status, code, .. } => {
                THROTTLING_CODES.contains(&code.as_str())
                    || TRANSIENT_CODES.contains(&code.as_str())
                    || RETRYABLE_STATUSES.contains(status)
            }
            AwsError::Transport { .. } | AwsError::Timeout { .. } => true,
            AwsError::Credentials(_) | AwsError::Parse { .. } => false,
        }
    }

    /// The AWS error code of an [`AwsError::Api`], or `None` for the other kinds.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A short word for logs: the AWS error code, or the kind of failure.
    pub(crate) fn kind(&self) -> &str {
        match self {
            AwsError::Api { code, .. } => code,
            AwsError::Transport { .. } => "transport",
            AwsError::Timeout { .. } => "timeout",
            AwsError::Credentials(_) => "credentials",
            AwsError::Parse { .. } => "parse",
        }
    }
}

/// What an error body says, in any of the three AWS XML error shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
}

/// Longest part of a non-XML error body kept as the message.
const MAX_RAW_MESSAGE: usize = 200;

/// Reads an error answer: the first `Error` element with a `Code` child, and the first
/// `RequestId`/`RequestID` anywhere. A body without them gives code `HTTP<status>` and the
/// start of the body as the message.
pub(crate) fn parse_error_body(status: u16, body: &str) -> ErrorBody {
    if let Ok(document) = roxmltree::Document::parse(body) {
        let root = document.root_element();
        let error = root.descendants().find(|node| {
            node.is_element()
                && node.tag_name().name() == "Error"
                && xml::child(*node, "Code").is_some()
        });
        if let Some(error) = error {
            let request_id = xml::descendant(root, "RequestId")
                .or_else(|| xml::descendant(root, "RequestID"))
                .and_then(xml::text);
            return ErrorBody {
                code: xml::child_text(error, "Code").unwrap_or_else(|| format!("HTTP{status}")),
                message: xml::child_text(error, "Message").unwrap_or_default(),
                request_id,
            };
        }
    }
    let trimmed = body.trim();
    let message = match trimmed.char_indices().nth(MAX_RAW_MESSAGE) {
        Some((cut, _)) => format!("{}...", &trimmed[..cut]),
        None => trimmed.to_owned(),
    };
    ErrorBody {
        code: format!("HTTP{status}"),
        message,
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_error_shapes() {
        let cases = [
            (
                "EC2",
                r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidRouteTableID.NotFound</Code><Message>The routeTable ID 'rtb-1' does not exist</Message></Error></Errors><RequestID>ec2-req-1</RequestID></Response>"#,
                "InvalidRouteTableID.NotFound",
                "The routeTable ID 'rtb-1' does not exist",
                Some("ec2-req-1"),
            ),
            (
                "query",
                r#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>cw-req-2</RequestId></ErrorResponse>"#,
                "Throttling",
                "Rate exceeded",
                Some("cw-req-2"),
            ),
            (
                "Route53",
                r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <Error>
    <Type>Sender</Type>
    <Code>NoSuchHealthCheck</Code>
    <Message>No health check exists with the specified ID.</Message>
  </Error>
  <RequestId>r53-req-3</RequestId>
</ErrorResponse>"#,
                "NoSuchHealthCheck",
                "No health check exists with the specified ID.",
                Some("r53-req-3"),
            ),
            (
                "moto IAM, Errors wrapper and no request id",
                r#"<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
                None,
            ),
        ];
        for (shape, body, code, message, request_id) in cases {
            let parsed = parse_error_body(400, body);
            assert_eq!(parsed.code, code, "{shape}");
            assert_eq!(parsed.message, message, "{shape}");
            assert_eq!(parsed.request_id.as_deref(), request_id, "{shape}");
        }
    }

    #[test]
    fn a_body_without_an_error_code_gives_the_status() {
        let cases = [
            (503, "Service Unavailable", "HTTP503", "Service Unavailable"),
            (502, "", "HTTP502", ""),
            (
                400,
                "<ErrorResponse><Error><Message>no code</Message></Error></ErrorResponse>",
                "HTTP400",
                "<ErrorResponse><Error><Message>no code</Message></Error></ErrorResponse>",
            ),
        ];
        for (status, body, code, message) in cases {
            let parsed = parse_error_body(status, body);
            assert_eq!(parsed.code, code, "{body:?}");
            assert_eq!(parsed.message, message, "{body:?}");
            assert_eq!(parsed.request_id, None);
        }
        let long = "x".repeat(1000);
        assert_eq!(
            parse_error_body(500, &long).message.len(),
            MAX_RAW_MESSAGE + 3
        );
    }

    fn api(status: u16, code: &str) -> AwsError {
        AwsError::Api {
            service: "EC2",
            action: "ReplaceRoute".to_owned(),
            status,
            code: code.to_owned(),
            message: String::new(),
            request_id: None,
        }
    }

    #[test]
    fn retries_only_what_may_pass_later() {
        let cases = [
            (api(400, "Throttling"), true),
            (api(400, "ThrottlingException"), true),
            (api(503, "RequestLimitExceeded"), true),
            (api(400, "TooManyRequestsException"), true),
            (api(400, "PriorRequestNotComplete"), true),
            (api(503, "SlowDown"), true),
            (api(400, "RequestThrottled"), true),
            (api(429, "HTTP429"), true),
            (api(500, "InternalError"), true),
            (api(502, "HTTP502"), true),
            (api(503, "HTTP503"), true),
            (api(504, "HTTP504"), true),
            (api(400, "InvalidRouteTableID.NotFound"), false),
            (api(401, "AuthFailure"), false),
            (api(403, "SignatureDoesNotMatch"), false),
            (api(404, "NoSuchHealthCheck"), false),
            (api(400, "ValidationError"), false),
            (api(400, "InvalidParameterValue"), false),
            (api(400, "LimitExceededException"), false),
            (api(501, "HTTP501"), false),
            (
                AwsError::Transport {
                    service: "EC2",
                    action: "ReplaceRoute".to_owned(),
                    message: "connection refused".to_owned(),
                },
                true,
            ),
            (
                AwsError::Timeout {
                    service: "EC2",
                    action: "ReplaceRoute".to_owned(),
                    after: Duration::from_secs(5),
                },
                true,
            ),
            (AwsError::Credentials("none found".to_owned()), false),
            (
                AwsError::Parse {
                    service: "EC2",
                    action: "ReplaceRoute".to_owned(),
                    message: "not XML".to_owned(),
                },
                false,
            ),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }

    #[test]
    fn api_errors_display_service_action_code_and_status() {
        let error = AwsError::Api {
            service: "EC2",
            action: "ReplaceRoute".to_owned(),
            status: 400,
            code: "InvalidRouteTableID.NotFound".to_owned(),
            message: "The routeTable ID 'rtb-1' does not exist".to_owned(),
            request_id: Some("r-1".to_owned()),
        };
        assert_eq!(
            error.to_string(),
            "EC2 ReplaceRoute: InvalidRouteTableID.NotFound: The routeTable ID 'rtb-1' does not exist (HTTP 400)"
        );
    }
}
