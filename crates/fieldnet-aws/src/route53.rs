//! Route53 health-check calls on the wire: paths, the UpdateHealthCheck body, and the reading
//! of GetHealthCheckStatus. Pure functions, no I/O. Invariant: a health-check ID is
//! percent-encoded into the path, so no ID can reach another resource.

use crate::xml;

/// What Route53's checkers last saw of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckStatus {
    /// Checkers that reported.
    pub observers: usize,
    /// Checkers whose last report starts with "Success".
    pub healthy: usize,
}

impl HealthCheckStatus {
    /// Healthy by a strict majority of at least one checker.
    pub fn is_healthy(&self) -> bool {
        self.observers > 0 && self.healthy * 2 > self.observers
    }
}

const API_PREFIX: &str = "/2013-04-01/healthcheck/";

/// `/2013-04-01/healthcheck/{id}`: UpdateHealthCheck (POST) and GetHealthCheck (GET).
pub(crate) fn health_check_path(health_check: &str) -> String {
    format!("{API_PREFIX}{}", encode_path_segment(health_check))
}

/// `/2013-04-01/healthcheck/{id}/status`: GetHealthCheckStatus.
pub(crate) fn health_check_status_path(health_check: &str) -> String {
    format!("{}/status", health_check_path(health_check))
}

/// The UpdateHealthCheck body that sets only `Inverted`.
pub(crate) fn update_inverted_body(inverted: bool) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><UpdateHealthCheckRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Inverted>{inverted}</Inverted></UpdateHealthCheckRequest>"#
    )
}

/// Counts the observations of a GetHealthCheckStatus answer, and those whose
/// `StatusReport/Status` starts with "Success".
pub(crate) fn parse_health_check_status(body: &str) -> Result<HealthCheckStatus, String> {
    let document = roxmltree::Document::parse(body).map_err(|error| error.to_string())?;
    let root = document.root_element();
    let observations = xml::child(root, "HealthCheckObservations")
        .ok_or_else(|| format!("no HealthCheckObservations in <{}>", root.tag_name().name()))?;
    let mut status = HealthCheckStatus {
        observers: 0,
        healthy: 0,
    };
    for observation in xml::children(observations, "HealthCheckObservation") {
        status.observers += 1;
        let report = xml::child(observation, "StatusReport")
            .and_then(|report| xml::child_text(report, "Status"));
        if report.is_some_and(|text| text.starts_with("Success")) {
            status.healthy += 1;
        }
    }
    Ok(status)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_id() {
        let id = "abcdef11-2222-3333-4444-555555fedcba";
        assert_eq!(
            health_check_path(id),
            format!("/2013-04-01/healthcheck/{id}")
        );
        assert_eq!(
            health_check_status_path(id),
            format!("/2013-04-01/healthcheck/{id}/status")
        );
        assert_eq!(
            health_check_path("../hostedzone"),
            "/2013-04-01/healthcheck/..%2Fhostedzone"
        );
    }

    #[test]
    fn update_body_carries_only_inverted() {
        assert_eq!(
            update_inverted_body(true),
            r#"<?xml version="1.0" encoding="UTF-8"?><UpdateHealthCheckRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Inverted>true</Inverted></UpdateHealthCheckRequest>"#
        );
        assert!(update_inverted_body(false).contains("<Inverted>false</Inverted>"));
    }

    #[test]
    fn counts_observers_reporting_success() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<GetHealthCheckStatusResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <HealthCheckObservations>
    <HealthCheckObservation>
      <Region>ap-southeast-2</Region>
      <IPAddress>54.183.255.140</IPAddress>
      <StatusReport>
        <Status>Success: HTTP Status Code: 200. Resolved IP: 192.0.2.10. OK</Status>
        <CheckedTime>2016-11-03T19:22:05.111Z</CheckedTime>
      </StatusReport>
    </HealthCheckObservation>
    <HealthCheckObservation>
      <Region>us-west-1</Region>
      <StatusReport>
        <Status>Failure: Connection timed out.</Status>
      </StatusReport>
    </HealthCheckObservation>
    <HealthCheckObservation>
      <Region>eu-west-1</Region>
      <StatusReport>
        <Status>Success: HTTP Status Code: 200. OK</Status>
      </StatusReport>
    </HealthCheckObservation>
    <HealthCheckObservation>
      <Region>sa-east-1</Region>
    </HealthCheckObservation>
  </HealthCheckObservations>
</GetHealthCheckStatusResponse>"#;
        let status = parse_health_check_status(body).unwrap();
        assert_eq!(
            status,
            HealthCheckStatus {
                observers: 4,
                healthy: 2
            }
        );
        assert!(!status.is_healthy());
    }

    #[test]
    fn no_observations_is_zero_and_a_wrong_answer_is_an_error() {
        let empty = r#"<GetHealthCheckStatusResponse><HealthCheckObservations/></GetHealthCheckStatusResponse>"#;
        assert_eq!(
            parse_health_check_status(empty).unwrap(),
            HealthCheckStatus {
                observers: 0,
                healthy: 0
            }
        );
        assert!(parse_health_check_status("<Other/>").is_err());
        assert!(parse_health_check_status("").is_err());
    }
}
