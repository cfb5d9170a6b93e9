//! The signed HTTP client: credentials, SigV4 signing, attempts, timeouts and backoff.
//! Invariant: each attempt is built and signed anew (fresh timestamp, current credentials),
//! runs under `attempt_timeout`, and only retryable errors lead to another attempt, after a
//! full-jitter delay never longer than `max_backoff`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::Method;

use crate::error::{AwsError, parse_error_body};
use crate::service::Service;

/// Default bound on one attempt, connection included.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of attempts of one call, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default backoff before the first retry, doubled for each further one.
pub const DEFAULT_BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Default cap on one backoff delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Credentials from the provider chain are fetched again this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where and how a [`Client`] calls AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The AWS region of EC2, CloudWatch and STS calls (Route53 is global).
    pub region: String,
    /// One endpoint URL for every service (e.g. "http://127.0.0.1:5000" for moto); None = real
    /// AWS endpoints.
    pub endpoint: Option<String>,
    /// Bound on one attempt, from sending to the whole answer.
    pub attempt_timeout: Duration,
    /// Attempts of one call in all, the first included; 0 is taken as 1.
    pub max_attempts: u32,
    /// Backoff cap before the first retry, doubled for each further one.
    pub base_backoff: Duration,
    /// Cap on one backoff delay.
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// The default configuration for real AWS endpoints in `region`.
    pub fn new(region: impl Into<String>) -> Self {
        ClientConfig {
            region: region.into(),
            endpoint: None,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// A signing AWS client; cheap to clone, clones share connections and credentials.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    http: reqwest::Client,
    credentials: CredentialSource,
}

impl fmt::Debug for Client {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials stay out of logs; their source is enough to tell clients apart.
        let source = match &self.inner.credentials {
            CredentialSource::Static(_) => "static",
            CredentialSource::Chain { .. } => "default chain",
        };
        formatter
            .debug_struct("Client")
            .field("config", &self.inner.config)
            .field("credentials", &source)
            .finish()
    }
}

enum CredentialSource {
    Static(Credentials),
    /// The default chain does no caching of its own (the SDK caches in its orchestrator), so
    /// the last credentials are kept here until shortly before they expire.
    Chain {
        chain: DefaultCredentialsChain,
        cached: tokio::sync::Mutex<Option<Credentials>>,
    },
}

impl CredentialSource {
    async fn get(&self) -> Result<Credentials, AwsError> {
        match self {
            CredentialSource::Static(credentials) => Ok(credentials.clone()),
            CredentialSource::Chain { chain, cached } => {
                let mut cached = cached.lock().await;
                if let Some(credentials) = cached.as_ref()
                    && still_fresh(credentials, SystemTime::now())
                {
                    return Ok(credentials.clone());
                }
                let fresh = chain
                    .provide_credentials()
                    .await
                    .map_err(|error| AwsError::Credentials(error_chain(&error)))?;
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }
}

/// Whether `credentials` can still be used at `now` without a refresh.
fn still_fresh(credentials: &Credentials, now: SystemTime) -> bool {
    match credentials.expiry() {
        None => true,
        Some(expiry) => now + CREDENTIAL_REFRESH_MARGIN < expiry,
    }
}

/// One call, ready to be signed and sent as many times as attempts need.
struct Call<'a> {
    service: Service,
    /// Name in errors and logs: the query action, or the REST operation.
    action: &'a str,
    method: Method,
    /// Path (and query string) below the endpoint, already percent-encoded.
    path: &'a str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
const XML_CONTENT_TYPE: &str = "application/xml";

impl Client {
    /// Credentials from aws-config's default provider chain.
    ///
    /// Fetches credentials once now, so a host without any fails here rather than at the first
    /// call.
    pub async fn from_environment(config: ClientConfig) -> anyhow::Result<Client> {
        if let Some(endpoint) = &config.endpoint {
            reqwest::Url::parse(endpoint)
                .with_context(|| format!("AWS endpoint {endpoint:?} is not a URL"))?;
        }
        let chain = DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(config.region.clone()))
            .build()
            .await;
        let credentials = CredentialSource::Chain {
            chain,
            cached: tokio::sync::Mutex::new(None),
        };
        let http = http_client(&config, true).context(
            "cannot start the HTTPS client for AWS (are the system's CA certificates installed?)",
        )?;
        credentials.get().await.with_context(|| {
            "no AWS credentials from the environment, shared files, web identity, ECS or \
             instance metadata"
        })?;
        Ok(Client::assemble(config, http, credentials))
    }

    /// Fixed credentials (tests).
    pub fn with_static_credentials(
        config: ClientConfig,
        access_key: &str,
        secret_key: &str,
        session_token: Option<&str>,
    ) -> Client {
        let credentials = Credentials::new(
            access_key,
            secret_key,
            session_token.map(str::to_owned),
            None,
            "fieldnet-static",
        );
        let http = match http_client(&config, true) {
            Ok(http) => http,
            Err(error) => {
                // Only the system's CA certificates can be missing; HTTPS calls then fail one by
                // one with a certificate error, and plain-HTTP endpoints keep working.
                tracing::warn!(
                    error = %error_chain(&error),
                    "no TLS trust roots; HTTPS calls to AWS will fail"
                );
                // Without TLS roots nothing is left that can fail to start.
                http_client(&config, false).expect("reqwest client without trust roots")
            }
        };
        Client::assemble(config, http, CredentialSource::Static(credentials))
    }

    fn assemble(
        config: ClientConfig,
        http: reqwest::Client,
        credentials: CredentialSource,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                config,
                http,
                credentials,
            }),
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Generic signed AWS query-protocol call (EC2, CloudWatch, STS…): POST form-encoded
    /// Action/Version/params to the service endpoint; returns the response body on 2xx.
    pub async fn query(
        &self,
        service: Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let body = encode_query(service, action, params);
        self.execute(&Call {
            service,
            action,
            method: Method::POST,
            path: "/",
            content_type: Some(FORM_CONTENT_TYPE),
            body: body.into_bytes(),
        })
        .await
    }

    /// Generic signed REST-XML call (Route53): method, path, optional XML body.
    ///
    /// `path` starts with `/` and is already percent-encoded; errors name the call
    /// "METHOD path".
    pub async fn rest_xml(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<String, AwsError> {
        let action = format!("{method} {path}");
        self.rest_xml_named(service, &action, method, path, body)
            .await
    }

    /// [`Client::rest_xml`] with the operation name used in errors and logs.
    pub(crate) async fn rest_xml_named(
        &self,
        service: Service,
        action: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<String, AwsError> {
        let content_type = body.as_ref().map(|_| XML_CONTENT_TYPE);
        self.execute(&Call {
            service,
            action,
            method,
            path,
            content_type,
            body: body.map(String::into_bytes).unwrap_or_default(),
        })
        .await
    }

    /// Runs the attempts of one call.
    async fn execute(&self, call: &Call<'_>) -> Result<String, AwsError> {
        let config = &self.inner.config;
        let max_attempts = config.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            let result = tokio::time::timeout(config.attempt_timeout, self.attempt(call))
                .await
                .unwrap_or_else(|_elapsed| {
                    Err(AwsError::Timeout {
                        service: call.service.name(),
                        action: call.action.to_owned(),
                        after: config.attempt_timeout,
                    })
                });
            let error = match result {
                Ok(body) => return Ok(body),
                Err(error) => error,
            };
            attempt += 1;
            if !error.is_retryable() || attempt >= max_attempts {
                return Err(error);
            }
            let delay = backoff_delay(
                attempt - 1,
                config.base_backoff,
                config.max_backoff,
                fastrand::f64(),
            );
            tracing::warn!(
                service = call.service.name(),
                action = call.action,
                code = error.kind(),
                attempt,
                max_attempts,
                delay_ms = delay.as_millis() as u64,
                %error,
                "AWS call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Signs and sends one attempt.
    async fn attempt(&self, call: &Call<'_>) -> Result<String, AwsError> {
        let service = call.service;
        let transport = |message: String| AwsError::Transport {
            service: service.name(),
            action: call.action.to_owned(),
            message,
        };
        let credentials = self.inner.credentials.get().await?;
        let url = format!("{}{}", self.base_url(service), call.path);

        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(content_type) = call.content_type {
            headers.push(("content-type", content_type));
        }
        let identity = credentials.into();
        let signing_params = v4::SigningParams::builder()
            .identity(&identity)
            .region(service.signing_region(&self.inner.config.region))
            .name(service.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| AwsError::Credentials(error_chain(&error)))?
            .into();
        let signable = SignableRequest::new(
            call.method.as_str(),
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&call.body),
        )
        .map_err(|error| {
            transport(format!(
                "cannot sign a request to {url}: {}",
                error_chain(&error)
            ))
        })?;
        let (instructions, _signature) = sign(signable, &signing_params)
            .map_err(|error| AwsError::Credentials(error_chain(&error)))?
            .into_parts();

        let mut request = self.inner.http.request(call.method.clone(), &url);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        if !call.body.is_empty() {
            request = request.body(call.body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|error| transport(error_chain(&error)))?;
        let status = response.status();
        let header_request_id = ["x-amzn-requestid", "x-amz-request-id"]
            .iter()
            .find_map(|name| response.headers().get(*name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|error| transport(error_chain(&error)))?;
        if status.is_success() {
            return Ok(body);
        }
        let parsed = parse_error_body(status.as_u16(), &body);
        Err(AwsError::Api {
            service: service.name(),
            action: call.action.to_owned(),
            status: status.as_u16(),
            code: parsed.code,
            message: parsed.message,
            request_id: parsed.request_id.or(header_request_id),
        })
    }

    /// Scheme and authority for `service`, without a trailing slash.
    fn base_url(&self, service: Service) -> String {
        match &self.inner.config.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None => service.default_endpoint(&self.inner.config.region),
        }
    }
}

/// The HTTP client of a [`Client`]. With `system_roots`, HTTPS peers are verified against the
/// system's CA certificates, which must then exist; a plain-HTTP endpoint (moto, a lab) needs
/// none, and without `system_roots` no HTTPS peer is trusted.
fn http_client(
    config: &ClientConfig,
    system_roots: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    let plain_http = config
        .endpoint
        .as_deref()
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("fieldnet-aws/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.attempt_timeout)
        // A redirect would be sent unsigned for the new host; AWS does not redirect these.
        .redirect(reqwest::redirect::Policy::none());
    if config.endpoint.is_some() {
        // An explicit endpoint is a test or lab server on a known address: no proxy.
        builder = builder.no_proxy();
    }
    if plain_http || !system_roots {
        builder = builder.tls_certs_only([]);
    }
    builder.build()
}

/// The form body of a query-protocol call: Action, Version, then `params` in order.
pub(crate) fn encode_query(service: Service, action: &str, params: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action);
    form.append_pair("Version", service.api_version());
    for (name, value) in params {
        form.append_pair(name, value);
    }
    form.finish()
}

/// Full-jitter backoff before retry number `retry` (0 for the first): `fraction` (in [0, 1))
/// of `min(max, base * 2^retry)`.
pub(crate) fn backoff_delay(retry: u32, base: Duration, max: Duration, fraction: f64) -> Duration {
    let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max);
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    cap.mul_f64(fraction)
}

/// An error and its sources, joined with ": ", since reqwest's top-level message alone
/// ("error sending request") hides the cause.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for retry in [0, 1, 2, 3, 5, 6, 10, 31, 32, 33, 64, u32::MAX] {
            for fraction in [0.0, 0.25, 0.5, 0.999_999, 1.0, 7.0, -1.0, f64::NAN] {
                let delay = backoff_delay(retry, base, max, fraction);
                assert!(delay <= max, "retry {retry} fraction {fraction}: {delay:?}");
                let exponential_cap = base.saturating_mul(2u32.saturating_pow(retry));
                assert!(delay <= exponential_cap, "retry {retry}: {delay:?}");
            }
        }
        assert_eq!(backoff_delay(0, base, max, 0.5), Duration::from_millis(50));
        assert_eq!(backoff_delay(2, base, max, 0.5), Duration::from_millis(200));
        assert_eq!(
            backoff_delay(10, base, max, 0.5),
            Duration::from_millis(2500)
        );
        assert_eq!(backoff_delay(3, base, max, 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_with_real_randomness_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for retry in 0..40 {
            for _ in 0..50 {
                let delay = backoff_delay(retry, base, max, fastrand::f64());
                assert!(delay <= max, "{delay:?}");
            }
        }
    }

    #[test]
    fn query_body_is_form_encoded_after_action_and_version() {
        let params = vec![
            ("RouteTableId.1".to_owned(), "rtb-1".to_owned()),
            ("Filter.1.Value.1".to_owned(), "a b&c=d/é".to_owned()),
        ];
        assert_eq!(
            encode_query(Service::Ec2, "DescribeRouteTables", &params),
            "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1=rtb-1\
             &Filter.1.Value.1=a+b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn credentials_are_refreshed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiring =
            |after: Duration| Credentials::new("AKID", "secret", None, Some(now + after), "test");
        assert!(still_fresh(&expiring(Duration::from_secs(3600)), now));
        assert!(!still_fresh(&expiring(Duration::from_secs(60)), now));
        assert!(still_fresh(
            &Credentials::new("AKID", "secret", None, None, "test"),
            now
        ));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let client = Client::with_static_credentials(
            ClientConfig::new("eu-west-1"),
            "AKIDEXAMPLE",
            "very-secret-key",
            None,
        );
        let debug = format!("{client:?}");
        assert!(!debug.contains("very-secret-key"), "{debug}");
        assert!(debug.contains("eu-west-1"), "{debug}");
    }
}
