//! The AWS calls fieldnet makes, as a trait, with the real client and the `--dry-run` double.
//! Invariant: [`DryRun`] never writes to AWS; every write it is asked for is logged at info.

use std::future::Future;

use reqwest::Method;

use crate::client::Client;
use crate::cloudwatch::{self, MetricDatum};
use crate::ec2::{self, RouteEntry, RouteTarget};
use crate::error::AwsError;
use crate::route53::{self, HealthCheckStatus};
use crate::service::Service;

/// The calls fieldnet makes, behind a trait so decision logic is tested without AWS.
pub trait AwsApi: Send + Sync + 'static {
    /// The routes of these route tables; no tables, no call and no routes.
    fn describe_routes(
        &self,
        route_tables: &[String],
    ) -> impl Future<Output = Result<Vec<RouteEntry>, AwsError>> + Send;

    /// Points the route to `destination` in `route_table` at `target` (EC2 ReplaceRoute).
    fn replace_route(
        &self,
        route_table: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Sets `Inverted` of a health check (Route53 UpdateHealthCheck).
    fn set_health_check_inverted(
        &self,
        health_check: &str,
        inverted: bool,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// What Route53's checkers last saw (Route53 GetHealthCheckStatus).
    fn health_check_status(
        &self,
        health_check: &str,
    ) -> impl Future<Output = Result<HealthCheckStatus, AwsError>> + Send;

    /// Sends data points (CloudWatch PutMetricData), in calls of at most
    /// [`MAX_METRIC_DATA_PER_CALL`](crate::MAX_METRIC_DATA_PER_CALL); stops at the first
    /// failed call. NaN and infinite values are left out with a warning.
    fn put_metrics(
        &self,
        namespace: &str,
        data: &[MetricDatum],
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

fn parse_error(service: Service, action: &str, message: String) -> AwsError {
    AwsError::Parse {
        service: service.name(),
        action: action.to_owned(),
        message,
    }
}

impl AwsApi for Client {
    async fn describe_routes(&self, route_tables: &[String]) -> Result<Vec<RouteEntry>, AwsError> {
        // Without IDs EC2 would describe every table of the account.
        if route_tables.is_empty() {
            return Ok(Vec::new());
        }
        const ACTION: &str = "DescribeRouteTables";
        let params = ec2::describe_route_tables_params(route_tables);
        let body = self.query(Service::Ec2, ACTION, &params).await?;
        ec2::parse_route_tables(&body).map_err(|message| parse_error(Service::Ec2, ACTION, message))
    }

    async fn replace_route(
        &self,
        route_table: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> Result<(), AwsError> {
        const ACTION: &str = "ReplaceRoute";
        let params = ec2::replace_route_params(route_table, destination, target);
        let body = self.query(Service::Ec2, ACTION, &params).await?;
        ec2::parse_return(&body).map_err(|message| parse_error(Service::Ec2, ACTION, message))
    }

    async fn set_health_check_inverted(
        &self,
        health_check: &str,
        inverted: bool,
    ) -> Result<(), AwsError> {
        let path = route53::health_check_path(health_check);
        let body = route53::update_inverted_body(inverted);
        self.rest_xml_named(
            Service::Route53,
            "UpdateHealthCheck",
            Method::POST,
            &path,
            Some(body),
        )
        .await?;
        Ok(())
    }

    async fn health_check_status(&self, health_check: &str) -> Result<HealthCheckStatus, AwsError> {
        const ACTION: &str = "GetHealthCheckStatus";
        let path = route53::health_check_status_path(health_check);
        let body = self
            .rest_xml_named(Service::Route53, ACTION, Method::GET, &path, None)
            .await?;
        route53::parse_health_check_status(&body)
            .map_err(|message| parse_error(Service::Route53, ACTION, message))
    }

    async fn put_metrics(&self, namespace: &str, data: &[MetricDatum]) -> Result<(), AwsError> {
        for params in cloudwatch::put_metric_data_batches(namespace, data) {
            self.query(Service::CloudWatch, "PutMetricData", &params)
                .await?;
        }
        Ok(())
    }
}

/// `--dry-run`: logs every write (tracing::info!, "dry run: would call ReplaceRoute
/// route_table=… destination=… target=…") and returns Ok; reads (describe_routes,
/// health_check_status) go to the inner client if there is one, else return empty/unknown
/// (`HealthCheckStatus { observers: 0, healthy: 0 }`).
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub inner: Option<Client>,
}

impl AwsApi for DryRun {
    async fn describe_routes(&self, route_tables: &[String]) -> Result<Vec<RouteEntry>, AwsError> {
        match &self.inner {
            Some(client) => client.describe_routes(route_tables).await,
            None => Ok(Vec::new()),
        }
    }

    async fn replace_route(
        &self,
        route_table: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> Result<(), AwsError> {
        tracing::info!(
            "dry run: would call ReplaceRoute route_table={route_table} \
             destination={destination} target={}",
            describe_target(target)
        );
        Ok(())
    }

    async fn set_health_check_inverted(
        &self,
        health_check: &str,
        inverted: bool,
    ) -> Result<(), AwsError> {
        tracing::info!(
            "dry run: would call UpdateHealthCheck health_check={health_check} inverted={inverted}"
        );
        Ok(())
    }

    async fn health_check_status(&self, health_check: &str) -> Result<HealthCheckStatus, AwsError> {
        match &self.inner {
            Some(client) => client.health_check_status(health_check).await,
            None => Ok(HealthCheckStatus {
                observers: 0,
                healthy: 0,
            }),
        }
    }

    async fn put_metrics(&self, namespace: &str, data: &[MetricDatum]) -> Result<(), AwsError> {
        let names: Vec<&str> = data.iter().map(|datum| datum.name.as_str()).collect();
        tracing::info!(
            "dry run: would call PutMetricData namespace={namespace} data={} names={}",
            data.len(),
            names.join(",")
        );
        Ok(())
    }
}

fn describe_target(target: &RouteTarget) -> String {
    match target {
        RouteTarget::Instance(id) => format!("instance:{id}"),
        RouteTarget::NetworkInterface(id) => format!("network-interface:{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_takes_a_strict_majority_of_some_observers() {
        let cases = [
            (0, 0, false),
            (1, 1, true),
            (1, 0, false),
            (2, 1, false),
            (3, 2, true),
            (8, 4, false),
            (8, 5, true),
        ];
        for (observers, healthy, expected) in cases {
            let status = HealthCheckStatus { observers, healthy };
            assert_eq!(status.is_healthy(), expected, "{status:?}");
        }
    }

    /// Polls a future that must not wait on anything (DryRun without a client does no I/O).
    fn ready<F: Future>(future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(future)
    }

    #[test]
    fn dry_run_without_a_client_writes_nothing_and_reads_nothing() {
        let dry_run = DryRun { inner: None };
        let target = RouteTarget::Instance("i-b".to_owned());
        assert!(ready(dry_run.replace_route("rtb-a", "0.0.0.0/0", &target)).is_ok());
        assert!(ready(dry_run.set_health_check_inverted("hc", true)).is_ok());
        assert!(ready(dry_run.put_metrics("ns", &[])).is_ok());
        assert_eq!(
            ready(dry_run.describe_routes(&["rtb-a".to_owned()])).unwrap(),
            vec![]
        );
        assert_eq!(
            ready(dry_run.health_check_status("hc")).unwrap(),
            HealthCheckStatus {
                observers: 0,
                healthy: 0
            }
        );
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn client_futures_are_send() {
        let client = Client::with_static_credentials(
            crate::ClientConfig::new("us-east-1"),
            "AKID",
            "secret",
            None,
        );
        let tables = vec!["rtb-a".to_owned()];
        assert_send(&client.describe_routes(&tables));
        assert_send(&client.query(Service::Sts, "GetCallerIdentity", &[]));
    }
}
