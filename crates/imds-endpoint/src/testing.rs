//! A small site for the unit tests: appliance `one` serves NETWORK1; cameras (00:80:f0) and
//! tills (00:11:22, IMDSv1 allowed) have roles, printers (00:22:33) none.

use fieldnet::config::Config;

pub const SITE: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[areas]]
name = "south"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"

[[networks]]
name = "NETWORK2"
area = "south"
subnet = "10.102.0.0/24"
gateway = "10.102.0.1"
interface = "lan1"

[[appliances]]
id = 1
name = "one"
area = "north"

[[appliances]]
id = 2
name = "two"
area = "south"

[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80:f0"]

[[dhcp_takeover.classes]]
name = "tills"
mac_prefixes = ["00:11:22"]

[[dhcp_takeover.classes]]
name = "printers"
mac_prefixes = ["00:22:33"]

[imds_endpoint]
aws_region = "eu-west-1"

[[imds_endpoint.roles]]
class = "cameras"
role_arn = "arn:aws:iam::123456789012:role/field-cameras"

[[imds_endpoint.roles]]
class = "tills"
role_arn = "arn:aws:iam::123456789012:role/field-tills"
imdsv1 = true
"#;

/// Appliance `one`'s view of [`SITE`].
pub fn config() -> Config {
    fieldnet::config::SiteConfig::from_str(SITE, "test.toml")
        .unwrap()
        .view("one")
        .unwrap()
        .clone()
}
