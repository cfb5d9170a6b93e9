//! `[imds_endpoint]`: the metadata endpoint's port and hop limit, the session lengths (in the
//! order they must keep: nothing served below `refuse_below`, at least `min_validity` handed
//! out, sessions of `session_duration`, reserves at least that long) and one role per device
//! class, each class one of `[[dhcp_takeover.classes]]`.

use super::super::wire::WireImdsEndpoint;
use super::super::*;
use super::values::list;
use super::{Checker, METRICS_PORT_IMDS_ENDPOINT};

impl Checker {
    pub(super) fn imds_endpoint(
        &mut self,
        wire: &WireImdsEndpoint,
        classes: &[DeviceClass],
    ) -> Option<ImdsEndpointConfig> {
        let path = KeyPath::root().key("imds_endpoint");
        let common = self.common(
            "imds_endpoint",
            wire.enabled,
            wire.metrics_listen.as_deref(),
            METRICS_PORT_IMDS_ENDPOINT,
        );
        let port = self.bounded(
            wire.port,
            usize::from(DEFAULT_IMDS_PORT),
            1..=65535,
            &path.key("port"),
        );
        let hop_limit = self.bounded(
            wire.hop_limit,
            usize::from(DEFAULT_IMDS_HOP_LIMIT),
            1..=64,
            &path.key("hop_limit"),
        );
        let region = wire.aws_region.clone().unwrap_or_default();
        let region_ok = match &wire.aws_region {
            Some(region) => self.aws_region(region, &path.key("aws_region")),
            None if wire.roles.is_empty() => true,
            None => {
                self.problem(
                    path.key("aws_region"),
                    "the roles need the AWS region their sessions come from, such as aws_region = \"eu-west-1\"",
                );
                false
            }
        };
        let endpoint_ok =
            self.aws_endpoint(wire.aws_endpoint.as_deref(), &path.key("aws_endpoint"));
        let cache = self.absolute_path(
            wire.cache.as_deref(),
            DEFAULT_IMDS_CACHE,
            &path.key("cache"),
        );
        // AWS gives no session shorter than 15 minutes; a test server may be asked for less.
        let shortest = if wire.aws_endpoint.is_some() {
            10
        } else {
            AWS_MIN_SESSION.as_secs() as usize
        };
        let longest = DEFAULT_IMDS_RESERVE.as_secs() as usize;
        let session = self.seconds(
            wire.session_duration_s,
            DEFAULT_IMDS_SESSION,
            shortest..=longest,
            &path.key("session_duration_s"),
        );
        let min_validity = self.seconds(
            wire.min_validity_s,
            DEFAULT_IMDS_MIN_VALIDITY,
            2..=longest,
            &path.key("min_validity_s"),
        );
        let refuse_below = self.seconds(
            wire.refuse_below_s,
            DEFAULT_IMDS_REFUSE_BELOW,
            1..=longest,
            &path.key("refuse_below_s"),
        );
        if let (Some(session), Some(min_validity), Some(refuse_below)) =
            (session, min_validity, refuse_below)
        {
            if min_validity >= session {
                self.problem(
                    path.key("min_validity_s"),
                    format!(
                        "{} s is not shorter than a session ({} s): devices could never get that much",
                        min_validity.as_secs(),
                        session.as_secs()
                    ),
                );
            }
            if refuse_below >= min_validity {
                self.problem(
                    path.key("refuse_below_s"),
                    format!(
                        "{} s must be shorter than min_validity_s ({} s)",
                        refuse_below.as_secs(),
                        min_validity.as_secs()
                    ),
                );
            }
        }
        let tokens_per_client = self.bounded(
            wire.tokens_per_client,
            DEFAULT_IMDS_TOKENS_PER_CLIENT,
            1..=1024,
            &path.key("tokens_per_client"),
        );
        let requests_per_second = self.bounded(
            wire.requests_per_second,
            DEFAULT_IMDS_REQUESTS_PER_SECOND as usize,
            1..=1_000_000,
            &path.key("requests_per_second"),
        );

        let mut roles: Vec<ImdsRole> = Vec::new();
        let mut roles_ok = true;
        for (index, role) in wire.roles.iter().enumerate() {
            let key = path.key("roles").index(index);
            if !classes.iter().any(|class| class.name == role.class) {
                self.problem(
                    key.key("class"),
                    format!(
                        "'{}' is not a class of [[dhcp_takeover.classes]]; known: {}",
                        role.class,
                        list(classes.iter().map(|class| class.name.as_str()))
                    ),
                );
                roles_ok = false;
            } else if roles.iter().any(|other| other.class == role.class) {
                self.problem(
                    key.key("class"),
                    format!("class '{}' already has a role", role.class),
                );
                roles_ok = false;
            }
            if !is_role_arn(&role.role_arn) {
                self.problem(
                    key.key("role_arn"),
                    format!(
                        "'{}' is not a role ARN such as arn:aws:iam::123456789012:role/field-cameras",
                        role.role_arn
                    ),
                );
                roles_ok = false;
            }
            let reserve = self.seconds(
                role.reserve_duration_s,
                DEFAULT_IMDS_RESERVE,
                shortest..=longest,
                &key.key("reserve_duration_s"),
            );
            match (reserve, session) {
                (Some(reserve), Some(session)) if reserve < session => {
                    self.problem(
                        key.key("reserve_duration_s"),
                        format!(
                            "{} s is shorter than a device session ({} s): the reserve must outlast them",
                            reserve.as_secs(),
                            session.as_secs()
                        ),
                    );
                    roles_ok = false;
                }
                (Some(reserve), _) => roles.push(ImdsRole {
                    class: role.class.clone(),
                    role_arn: role.role_arn.clone(),
                    imdsv1: role.imdsv1.unwrap_or(false),
                    reserve_duration: reserve,
                }),
                (None, _) => roles_ok = false,
            }
        }
        if !(region_ok && endpoint_ok && roles_ok) {
            return None;
        }
        Some(ImdsEndpointConfig {
            common: common?,
            port: port? as u16,
            hop_limit: hop_limit? as u8,
            aws_region: region,
            aws_endpoint: wire.aws_endpoint.clone(),
            cache: cache?,
            session_duration: session?,
            min_validity: min_validity?,
            refuse_below: refuse_below?,
            tokens_per_client: tokens_per_client?,
            requests_per_second: requests_per_second? as u32,
            roles,
        })
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<name>`, the name of IAM's characters.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let name_ok = resource.strip_prefix("role/").is_some_and(|name| {
        !name.is_empty()
            && !name.ends_with('/')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
    });
    scheme == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && name_ok
}

#[cfg(test)]
mod tests {
    use super::is_role_arn;

    #[test]
    fn role_arns() {
        for good in [
            "arn:aws:iam::123456789012:role/field-cameras",
            "arn:aws:iam::123456789012:role/site/field_cameras",
            "arn:aws-us-gov:iam::123456789012:role/x",
        ] {
            assert!(is_role_arn(good), "{good}");
        }
        for bad in [
            "",
            "field-cameras",
            "arn:aws:iam::123456789012:user/field",
            "arn:aws:iam::12345:role/field",
            "arn:aws:iam:eu-west-1:123456789012:role/field",
            "arn:aws:sts::123456789012:role/field",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
    }
}
