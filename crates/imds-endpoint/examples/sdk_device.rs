//! A device program in Rust, as the lab tests run it: credentials from aws-config's default
//! chain (with no keys and no `AWS_*` variables that is the instance metadata service, through
//! aws-sdk-rust's own IMDS client), then one SQS SendMessage and one SNS Publish signed with
//! them.
//!
//! Usage: `sdk_device ENDPOINT REGION QUEUE_URL TOPIC_ARN`.

use fieldnet_aws::{Client, ClientConfig, Service};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, region, queue, topic] = args.as_slice() else {
        anyhow::bail!("usage: sdk_device ENDPOINT REGION QUEUE_URL TOPIC_ARN");
    };
    let config = ClientConfig {
        endpoint: Some(endpoint.clone()),
        ..ClientConfig::new(region.clone())
    };
    let client = Client::from_environment(config).await?;
    let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    let sent = client
        .query(
            Service::Sqs,
            "SendMessage",
            &[
                pair("QueueUrl", queue),
                pair("MessageBody", "hello from a Rust device"),
            ],
        )
        .await?;
    anyhow::ensure!(sent.contains("MessageId"), "SQS answered {sent}");
    println!("sqs sent");
    let published = client
        .query(
            Service::Sns,
            "Publish",
            &[pair("TopicArn", topic), pair("Message", "hello")],
        )
        .await?;
    anyhow::ensure!(published.contains("MessageId"), "SNS answered {published}");
    println!("sns published");
    Ok(())
}
