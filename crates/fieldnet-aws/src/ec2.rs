//! EC2 route-table calls on the wire: request parameters of DescribeRouteTables and
//! ReplaceRoute, and the reading of their answers. Pure functions, no I/O.

use crate::xml;

/// One route of an EC2 route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub route_table_id: String,
    /// Destination CIDR (IPv4 or IPv6).
    pub destination: String,
    pub instance_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub gateway_id: Option<String>,
    /// "active" or "blackhole".
    pub state: Option<String>,
}

/// Where ReplaceRoute points a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Instance(String),
    NetworkInterface(String),
}

/// Parameters of DescribeRouteTables for exactly these tables (`RouteTableId.N`, from 1).
pub(crate) fn describe_route_tables_params(route_tables: &[String]) -> Vec<(String, String)> {
    route_tables
        .iter()
        .enumerate()
        .map(|(index, table)| (format!("RouteTableId.{}", index + 1), table.clone()))
        .collect()
}

/// Parameters of ReplaceRoute; an IPv6 destination goes in `DestinationIpv6CidrBlock`.
pub(crate) fn replace_route_params(
    route_table: &str,
    destination: &str,
    target: &RouteTarget,
) -> Vec<(String, String)> {
    let destination_name = if destination.contains(':') {
        "DestinationIpv6CidrBlock"
    } else {
        "DestinationCidrBlock"
    };
    let (target_name, target_id) = match target {
        RouteTarget::Instance(id) => ("InstanceId", id),
        RouteTarget::NetworkInterface(id) => ("NetworkInterfaceId", id),
    };
    vec![
        ("RouteTableId".to_owned(), route_table.to_owned()),
        (destination_name.to_owned(), destination.to_owned()),
        (target_name.to_owned(), target_id.clone()),
    ]
}

/// The routes of a DescribeRouteTables answer
/// (`routeTableSet/item/{routeTableId, routeSet/item/...}`), in document order. Routes to a
/// prefix list have no CIDR destination and are left out.
pub(crate) fn parse_route_tables(body: &str) -> Result<Vec<RouteEntry>, String> {
    let document = roxmltree::Document::parse(body).map_err(|error| error.to_string())?;
    let root = document.root_element();
    let table_set = xml::child(root, "routeTableSet")
        .ok_or_else(|| format!("no routeTableSet in <{}>", root.tag_name().name()))?;
    let mut routes = Vec::new();
    for table in xml::children(table_set, "item") {
        let route_table_id =
            xml::child_text(table, "routeTableId").ok_or("a route table without routeTableId")?;
        let Some(route_set) = xml::child(table, "routeSet") else {
            continue;
        };
        for route in xml::children(route_set, "item") {
            let destination = xml::child_text(route, "destinationCidrBlock")
                .or_else(|| xml::child_text(route, "destinationIpv6CidrBlock"));
            let Some(destination) = destination else {
                continue;
            };
            routes.push(RouteEntry {
                route_table_id: route_table_id.clone(),
                destination,
                instance_id: xml::child_text(route, "instanceId"),
                network_interface_id: xml::child_text(route, "networkInterfaceId"),
                gateway_id: xml::child_text(route, "gatewayId"),
                state: xml::child_text(route, "state"),
            });
        }
    }
    Ok(routes)
}

/// Checks the `<return>` of an EC2 answer that has one: `true` or absent is success.
pub(crate) fn parse_return(body: &str) -> Result<(), String> {
    let document = roxmltree::Document::parse(body).map_err(|error| error.to_string())?;
    match xml::child_text(document.root_element(), "return").as_deref() {
        None | Some("true") => Ok(()),
        Some(other) => Err(format!("return was {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBE_ROUTE_TABLES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>6f570b0b-9c18-4b07-bdec-73740dcf861a</requestId>
  <routeTableSet>
    <item>
      <routeTableId>rtb-1f382e7d</routeTableId>
      <vpcId>vpc-88ed3ced</vpcId>
      <routeSet>
        <item>
          <destinationCidrBlock>10.0.0.0/16</destinationCidrBlock>
          <gatewayId>local</gatewayId>
          <state>active</state>
          <origin>CreateRouteTable</origin>
        </item>
        <item>
          <destinationCidrBlock>192.168.50.0/24</destinationCidrBlock>
          <instanceId>i-0aaa</instanceId>
          <instanceOwnerId>123456789012</instanceOwnerId>
          <networkInterfaceId>eni-0aaa</networkInterfaceId>
          <state>active</state>
        </item>
        <item>
          <destinationPrefixListId>pl-63a5400a</destinationPrefixListId>
          <gatewayId>vpce-1</gatewayId>
          <state>active</state>
        </item>
        <item>
          <destinationIpv6CidrBlock>2001:db8::/56</destinationIpv6CidrBlock>
          <gatewayId>igw-1</gatewayId>
          <state>blackhole</state>
        </item>
      </routeSet>
      <associationSet>
        <item>
          <routeTableAssociationId>rtbassoc-1</routeTableAssociationId>
          <routeTableId>rtb-1f382e7d</routeTableId>
          <main>true</main>
        </item>
      </associationSet>
      <tagSet/>
    </item>
    <item>
      <routeTableId>rtb-2</routeTableId>
      <routeSet>
        <item>
          <destinationCidrBlock>0.0.0.0/0</destinationCidrBlock>
          <networkInterfaceId>eni-0bbb</networkInterfaceId>
          <instanceId></instanceId>
        </item>
      </routeSet>
    </item>
  </routeTableSet>
</DescribeRouteTablesResponse>"#;

    #[test]
    fn reads_routes_of_every_table() {
        let routes = parse_route_tables(DESCRIBE_ROUTE_TABLES).unwrap();
        let entry = |table: &str,
                     destination: &str,
                     instance: Option<&str>,
                     interface: Option<&str>,
                     gateway: Option<&str>,
                     state: Option<&str>| RouteEntry {
            route_table_id: table.to_owned(),
            destination: destination.to_owned(),
            instance_id: instance.map(str::to_owned),
            network_interface_id: interface.map(str::to_owned),
            gateway_id: gateway.map(str::to_owned),
            state: state.map(str::to_owned),
        };
        assert_eq!(
            routes,
            vec![
                entry(
                    "rtb-1f382e7d",
                    "10.0.0.0/16",
                    None,
                    None,
                    Some("local"),
                    Some("active")
                ),
                entry(
                    "rtb-1f382e7d",
                    "192.168.50.0/24",
                    Some("i-0aaa"),
                    Some("eni-0aaa"),
                    None,
                    Some("active")
                ),
                entry(
                    "rtb-1f382e7d",
                    "2001:db8::/56",
                    None,
                    None,
                    Some("igw-1"),
                    Some("blackhole")
                ),
                entry("rtb-2", "0.0.0.0/0", None, Some("eni-0bbb"), None, None),
            ]
        );
    }

    #[test]
    fn an_empty_answer_has_no_routes_and_a_wrong_one_is_an_error() {
        let empty = r#"<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><routeTableSet/></DescribeRouteTablesResponse>"#;
        assert_eq!(parse_route_tables(empty).unwrap(), vec![]);
        assert!(parse_route_tables("<Other/>").is_err());
        assert!(parse_route_tables("not xml").is_err());
    }

    #[test]
    fn numbers_route_tables_from_one() {
        let tables = vec!["rtb-a".to_owned(), "rtb-b".to_owned()];
        assert_eq!(
            describe_route_tables_params(&tables),
            vec![
                ("RouteTableId.1".to_owned(), "rtb-a".to_owned()),
                ("RouteTableId.2".to_owned(), "rtb-b".to_owned()),
            ]
        );
    }

    #[test]
    fn replace_route_names_destination_and_target() {
        let pairs = |params: Vec<(String, String)>| -> Vec<String> {
            params
                .into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect()
        };
        assert_eq!(
            pairs(replace_route_params(
                "rtb-a",
                "192.168.50.0/24",
                &RouteTarget::Instance("i-b".to_owned())
            )),
            [
                "RouteTableId=rtb-a",
                "DestinationCidrBlock=192.168.50.0/24",
                "InstanceId=i-b"
            ]
        );
        assert_eq!(
            pairs(replace_route_params(
                "rtb-a",
                "2001:db8::/64",
                &RouteTarget::NetworkInterface("eni-b".to_owned())
            )),
            [
                "RouteTableId=rtb-a",
                "DestinationIpv6CidrBlock=2001:db8::/64",
                "NetworkInterfaceId=eni-b"
            ]
        );
    }

    #[test]
    fn return_false_is_an_error() {
        let answer = |value: &str| {
            format!(
                r#"<ReplaceRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>{value}</return></ReplaceRouteResponse>"#
            )
        };
        assert!(parse_return(&answer("true")).is_ok());
        assert!(parse_return(&answer("false")).is_err());
        assert!(parse_return("<ReplaceRouteResponse/>").is_ok());
    }
}
