//! Fixtures for tests against moto: a VPC with routes to an instance, Route53 health check
//! requests, and reading answers. They panic on failure (tests only).

use crate::{Client, Service};

/// An AMI in moto's built-in image list.
pub const IMAGE_ID: &str = "ami-12c6146b";

/// Query parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// The text of the first element named `name` anywhere in `body`.
pub fn first_text(body: &str, name: &str) -> String {
    let document = roxmltree::Document::parse(body).expect("XML answer");
    document
        .descendants()
        .find(|node| node.is_element() && node.tag_name().name() == name)
        .and_then(|node| node.text())
        .unwrap_or_else(|| panic!("no <{name}> in {body}"))
        .trim()
        .to_owned()
}

/// The texts of every element named `name` in `body`.
pub fn all_texts(body: &str, name: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(body).expect("XML answer");
    document
        .descendants()
        .filter(|node| node.is_element() && node.tag_name().name() == name)
        .filter_map(|node| node.text())
        .map(|text| text.trim().to_owned())
        .collect()
}

/// A CreateHealthCheck body for an HTTP check of a documentation address.
pub fn health_check_request(caller_reference: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateHealthCheckRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <CallerReference>{caller_reference}</CallerReference>
  <HealthCheckConfig>
    <IPAddress>192.0.2.10</IPAddress>
    <Port>80</Port>
    <Type>HTTP</Type>
    <ResourcePath>/</ResourcePath>
  </HealthCheckConfig>
</CreateHealthCheckRequest>"#
    )
}

/// What [`route_fixture`] made.
#[derive(Debug, Clone)]
pub struct RouteFixture {
    pub route_table: String,
    pub instance_a: String,
    pub instance_b: String,
    pub interface_b: String,
}

/// A VPC with a route table and two instances, and a route for every one of `destinations` to
/// the first instance.
pub async fn route_fixture(client: &Client, destinations: &[&str]) -> RouteFixture {
    let vpc = client
        .query(
            Service::Ec2,
            "CreateVpc",
            &params(&[("CidrBlock", "10.0.0.0/16")]),
        )
        .await
        .expect("CreateVpc");
    let vpc = first_text(&vpc, "vpcId");
    let subnet = client
        .query(
            Service::Ec2,
            "CreateSubnet",
            &params(&[("VpcId", &vpc), ("CidrBlock", "10.0.1.0/24")]),
        )
        .await
        .expect("CreateSubnet");
    let subnet = first_text(&subnet, "subnetId");
    let table = client
        .query(
            Service::Ec2,
            "CreateRouteTable",
            &params(&[("VpcId", &vpc)]),
        )
        .await
        .expect("CreateRouteTable");
    let route_table = first_text(&table, "routeTableId");
    let instances = client
        .query(
            Service::Ec2,
            "RunInstances",
            &params(&[
                ("ImageId", IMAGE_ID),
                ("InstanceType", "t3.micro"),
                ("MinCount", "2"),
                ("MaxCount", "2"),
                ("SubnetId", &subnet),
            ]),
        )
        .await
        .expect("RunInstances");
    // instancesSet/item/{instanceId, networkInterfaceSet/item/networkInterfaceId}
    let document = roxmltree::Document::parse(&instances).unwrap();
    let element =
        |node: roxmltree::Node, name: &str| node.is_element() && node.tag_name().name() == name;
    let launched: Vec<(String, String)> = document
        .descendants()
        .filter(|node| element(*node, "instancesSet"))
        .flat_map(|set| set.children().filter(|item| element(*item, "item")))
        .map(|item| {
            let text_of = |name: &str| {
                item.descendants()
                    .find(|node| element(*node, name))
                    .and_then(|node| node.text())
                    .unwrap_or_else(|| panic!("no {name} in {instances}"))
                    .to_owned()
            };
            (text_of("instanceId"), text_of("networkInterfaceId"))
        })
        .collect();
    assert_eq!(launched.len(), 2, "two instances in {instances}");
    let instance_ids = [launched[0].0.clone(), launched[1].0.clone()];
    let interface_b = launched[1].1.clone();
    for destination in destinations {
        client
            .query(
                Service::Ec2,
                "CreateRoute",
                &params(&[
                    ("RouteTableId", &route_table),
                    ("DestinationCidrBlock", destination),
                    ("InstanceId", &instance_ids[0]),
                ]),
            )
            .await
            .expect("CreateRoute");
    }
    RouteFixture {
        route_table,
        instance_a: instance_ids[0].clone(),
        instance_b: instance_ids[1].clone(),
        interface_b,
    }
}
