//! The AWS services this crate calls: for each its API version, SigV4 signing name, signing
//! region and public endpoint. Invariant: Route53 is global, so it is always signed for
//! `us-east-1` and reached at `https://route53.amazonaws.com`, whatever the client's region.

/// An AWS service reachable through [`Client`](crate::Client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// EC2 (query protocol): route tables.
    Ec2,
    /// Route53 (REST-XML): health checks.
    Route53,
    /// CloudWatch (query protocol): metrics.
    CloudWatch,
    /// STS (query protocol): caller identity, role assumption.
    Sts,
    /// SQS (query protocol): what the site's devices send (tests of imds-endpoint).
    Sqs,
    /// SNS (query protocol): what the site's devices publish (tests of imds-endpoint).
    Sns,
}

/// The region every Route53 request is signed for, since Route53 is a global service.
const ROUTE53_SIGNING_REGION: &str = "us-east-1";

impl Service {
    /// Human name used in errors and logs ("EC2", "Route53"...).
    pub fn name(self) -> &'static str {
        match self {
            Service::Ec2 => "EC2",
            Service::Route53 => "Route53",
            Service::CloudWatch => "CloudWatch",
            Service::Sts => "STS",
            Service::Sqs => "SQS",
            Service::Sns => "SNS",
        }
    }

    /// The `Version` of the API this crate speaks (query parameter, or Route53 path prefix).
    pub fn api_version(self) -> &'static str {
        match self {
            Service::Ec2 => "2016-11-15",
            Service::Route53 => "2013-04-01",
            Service::CloudWatch => "2010-08-01",
            Service::Sts => "2011-06-15",
            Service::Sqs => "2012-11-05",
            Service::Sns => "2010-03-31",
        }
    }

    /// The service name in the SigV4 credential scope.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Route53 => "route53",
            Service::CloudWatch => "monitoring",
            Service::Sts => "sts",
            Service::Sqs => "sqs",
            Service::Sns => "sns",
        }
    }

    /// The region in the SigV4 credential scope for a client configured for `region`.
    pub fn signing_region(self, region: &str) -> &str {
        match self {
            Service::Route53 => ROUTE53_SIGNING_REGION,
            Service::Ec2 | Service::CloudWatch | Service::Sts | Service::Sqs | Service::Sns => {
                region
            }
        }
    }

    /// The public endpoint (scheme and host, no trailing slash) in the `aws` partition.
    pub fn default_endpoint(self, region: &str) -> String {
        match self {
            Service::Route53 => "https://route53.amazonaws.com".to_owned(),
            Service::Ec2 => format!("https://ec2.{region}.amazonaws.com"),
            Service::CloudWatch => format!("https://monitoring.{region}.amazonaws.com"),
            Service::Sts => format!("https://sts.{region}.amazonaws.com"),
            Service::Sqs => format!("https://sqs.{region}.amazonaws.com"),
            Service::Sns => format!("https://sns.{region}.amazonaws.com"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route53_is_global_and_the_others_regional() {
        let cases = [
            (
                Service::Ec2,
                "eu-west-1",
                "https://ec2.eu-west-1.amazonaws.com",
            ),
            (
                Service::CloudWatch,
                "eu-west-1",
                "https://monitoring.eu-west-1.amazonaws.com",
            ),
            (
                Service::Sts,
                "eu-west-1",
                "https://sts.eu-west-1.amazonaws.com",
            ),
            (
                Service::Route53,
                "eu-west-1",
                "https://route53.amazonaws.com",
            ),
        ];
        for (service, region, endpoint) in cases {
            assert_eq!(service.default_endpoint(region), endpoint, "{service:?}");
        }
        assert_eq!(Service::Route53.signing_region("eu-west-1"), "us-east-1");
        assert_eq!(Service::Ec2.signing_region("eu-west-1"), "eu-west-1");
    }
}
