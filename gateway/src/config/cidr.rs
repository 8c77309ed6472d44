//! `destinations[].cidrs`: networks as `ipnet::IpNet`, also written as bare
//! addresses.
//!
//! `ipnet` only reads `ADDR/LEN`; people write `10.1.2.3` for one host, so a
//! bare address is read as a full-length prefix (/32 or /128). Serializing
//! uses `IpNet`'s own form (`10.1.2.3/32`), which reads back the same.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Reads a list of networks. Each element goes through [`Cidr`], so a bad
/// entry is reported at its index (`destinations[0].cidrs[1]`).
pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<IpNet>, D::Error> {
    let cidrs = Vec::<Cidr>::deserialize(de)?;
    Ok(cidrs.into_iter().map(|Cidr(net)| net).collect())
}

/// One network, `ADDR/LEN` or a bare `ADDR`.
struct Cidr(IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(CidrVisitor)
    }
}

struct CidrVisitor;

impl Visitor<'_> for CidrVisitor {
    type Value = Cidr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP network like 10.0.0.0/8 or an address like 10.1.2.3")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cidr, E> {
        parse(s).map(Cidr).ok_or_else(|| {
            E::custom(format!(
                "{s:?} is not an IP network or address \
                 (write 10.0.0.0/8, 2001:db8::/32, or a single address like 10.1.2.3)"
            ))
        })
    }
}

/// `ADDR/LEN`, or `ADDR` meaning the full-length prefix.
pub(super) fn parse(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Schema stand-in for one `cidrs` element: a string, which `IpNet`'s own
/// schema would describe too narrowly (it requires the `/LEN`).
pub(super) struct CidrSchema;

impl JsonSchema for CidrSchema {
    fn schema_name() -> String {
        "Cidr".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        Schema::Object(SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "An IPv4 or IPv6 network with prefix length, or a bare address \
                     meaning a single host (/32 or /128)."
                        .to_owned(),
                ),
                examples: vec![
                    "10.0.0.0/8".into(),
                    "10.1.2.3".into(),
                    "2001:db8::/32".into(),
                    "2001:db8::1".into(),
                ],
                ..Default::default()
            })),
            instance_type: Some(InstanceType::String.into()),
            ..Default::default()
        })
    }
}
